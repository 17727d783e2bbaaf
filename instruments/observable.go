package instruments

import (
	"time"

	"go.opentelemetry.io/otel/metric"
)

// observable creates the asynchronous instrument a catalogue entry describes.
func observable(m metric.Meter, d Metric) (metric.Float64Observable, error) {
	if d.Kind == Counter {
		return m.Float64ObservableCounter(d.Name, metric.WithDescription(d.Help), metric.WithUnit(d.Unit))
	}
	return m.Float64ObservableGauge(d.Name, metric.WithDescription(d.Help), metric.WithUnit(d.Unit))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}
