package instruments

import (
	"context"
	"runtime"
	"runtime/debug"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/health"
)

var sourceAttr = []string{"source"}

// Every exporter's self-metrics.
var (
	SelfBuildInfo   = Metric{Name: "worker_exporter_build_info", Kind: Gauge, Attributes: []string{"version", "revision", "goversion"}, Help: "Version of the running exporter; always 1."}
	SelfDuration    = Metric{Name: "worker_exporter_collection_duration_seconds", Unit: "s", Kind: Gauge, Attributes: sourceAttr, Help: "How long the source's latest background collection took."}
	SelfErrors      = Metric{Name: "worker_exporter_collection_errors_total", Kind: Counter, Attributes: sourceAttr, Help: "Background collections of the source that failed, wholly or in part."}
	SelfLastSuccess = Metric{Name: "worker_exporter_last_success_timestamp_seconds", Unit: "s", Kind: Gauge, Attributes: sourceAttr, Help: "Unix time of the source's latest collection without error."}

	// Self is the self-metrics catalogue, served on every port.
	Self = []Metric{SelfBuildInfo, SelfDuration, SelfErrors, SelfLastSuccess}
)

// RegisterSelf registers the build info and, when stats is not nil, the
// collection figures of source.
func RegisterSelf(m metric.Meter, source string, stats func() health.Stats) error {
	obs, err := observables(m, Self)
	if err != nil {
		return err
	}
	version, revision := buildVersion()
	build := metric.WithAttributes(attribute.String("version", version), attribute.String("revision", revision), attribute.String("goversion", runtime.Version()))
	src := metric.WithAttributeSet(attribute.NewSet(attribute.String("source", source)))
	return obs.register(m, func(_ context.Context, o metric.Observer) error {
		o.ObserveFloat64(obs[0], 1, build)
		if stats == nil {
			return nil
		}
		s := stats()
		o.ObserveFloat64(obs[1], s.Duration.Seconds(), src)
		o.ObserveFloat64(obs[2], float64(s.Errors), src)
		if !s.LastSuccess.IsZero() {
			o.ObserveFloat64(obs[3], unixSeconds(s.LastSuccess), src)
		}
		return nil
	})
}

// buildVersion is the module version and VCS revision the binary was built from.
func buildVersion() (version, revision string) {
	version, revision = "unknown", "unknown"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	version = info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			revision = s.Value
		}
	}
	return
}
