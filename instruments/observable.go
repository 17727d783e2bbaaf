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

// observables creates the instruments for ds, in order.
func observables(m metric.Meter, ds []Metric) (instrumentSet, error) {
	out := make(instrumentSet, len(ds))
	for i, d := range ds {
		var err error
		if out[i], err = observable(m, d); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// instrumentSet is the instruments one callback observes.
type instrumentSet []metric.Float64Observable

// register makes f the callback for every instrument in the set.
func (set instrumentSet) register(m metric.Meter, f metric.Callback) error {
	all := make([]metric.Observable, len(set))
	for i, o := range set {
		all[i] = o
	}
	_, err := m.RegisterCallback(f, all...)
	return err
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
