package instruments

import (
	"runtime"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/buildinfo"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

var sourceAttr = []string{"source"}

// Every exporter's self-metrics.
var (
	SelfBuildInfo   = Metric{Name: "worker_exporter_build_info", Kind: Gauge, Attributes: []string{"version", "revision", "goversion"}, Help: "Version of the running exporter; always 1."}
	SelfDuration    = Metric{Name: "worker_exporter_collection_duration_seconds", Unit: "s", Kind: Gauge, Attributes: sourceAttr, Help: "How long the source's latest background collection took."}
	SelfErrors      = Metric{Name: "worker_exporter_collection_errors_total", Kind: Counter, Attributes: sourceAttr, Help: "Background collections of the source that failed, wholly or in part."}
	SelfLastSuccess = Metric{Name: "worker_exporter_last_success_timestamp_seconds", Unit: "s", Kind: Gauge, Attributes: sourceAttr, Help: "Unix time of the source's latest collection without error."}
)

// selfSnapshot is what the self-metrics read: the source's collection
// figures, when it has them (the ffmpeg source does not).
type selfSnapshot struct{ stats []sampling.Stats }

// selfReadings read the build info once and each set of collection figures.
var selfReadings = []Reading[selfSnapshot, sampling.Stats]{
	{Metric: SelfBuildInfo, Once: func(_ *selfSnapshot, e *Emit) { e.With(1, build...) }},
	{Metric: SelfDuration, Each: func(s *sampling.Stats, e *Emit) { e.Value(s.Duration.Seconds()) }},
	{Metric: SelfErrors, Each: func(s *sampling.Stats, e *Emit) { e.Value(float64(s.Errors)) }},
	{Metric: SelfLastSuccess, Each: func(s *sampling.Stats, e *Emit) {
		if !s.LastSuccess.IsZero() {
			e.Value(unixSeconds(s.LastSuccess))
		}
	}},
}

// build is the build info's attributes; the binary does not change while it runs.
var build = func() []attribute.KeyValue {
	version, revision := buildinfo.Version()
	return []attribute.KeyValue{attribute.String("version", version), attribute.String("revision", revision), attribute.String("goversion", runtime.Version())}
}()

// selfTable is the self-metrics, the figures labelled with source.
func selfTable(source string) table[selfSnapshot, sampling.Stats] {
	return table[selfSnapshot, sampling.Stats]{
		readings: selfReadings,
		items:    func(s *selfSnapshot) []sampling.Stats { return s.stats },
		attrs: func(_ *sampling.Stats, kvs []attribute.KeyValue) []attribute.KeyValue {
			return append(kvs, attribute.String("source", source))
		},
	}
}

// Self is the self-metrics catalogue, served on every port.
var Self = selfTable("").metrics()

// RegisterSelf registers the build info and, when stats is not nil, the
// collection figures of source (a Group's Source).
func RegisterSelf(m metric.Meter, source string, stats func() sampling.Stats) error {
	return selfTable(source).register(m, func() *selfSnapshot {
		if stats == nil {
			return &selfSnapshot{}
		}
		return &selfSnapshot{stats: []sampling.Stats{stats()}}
	})
}
