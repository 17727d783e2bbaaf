package rapl_test

import (
	"context"
	"fmt"
	"testing"
	"testing/fstest"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
)

// TestSeriesLimitServesEveryZone: with 2,000 zones in sysfs (an in-memory
// tree: see manyZones) and the cpu port's cardinality limit, MaxZones+1,
// every zone served has its own series and none is folded into the SDK's
// overflow series; nor with the SDK's default limit.
func TestSeriesLimitServesEveryZone(t *testing.T) {
	fsys := fstest.MapFS{}
	for i := range 2000 {
		dir := fmt.Sprintf("class/powercap/intel-rapl:%d/", i)
		fsys[dir+"name"] = &fstest.MapFile{Data: fmt.Appendf(nil, "package-%d\n", i)}
		fsys[dir+"max_energy_range_uj"] = &fstest.MapFile{Data: []byte("262143328850\n")}
		fsys[dir+"energy_uj"] = &fstest.MapFile{Data: fmt.Appendf(nil, "%d\n", i)}
	}
	src := rapl.New(rapl.Config{FS: fsys, Root: "/sys"})
	for _, limit := range []int{rapl.MaxZones + 1, 0} {
		var opts []metric.Option
		if limit > 0 {
			opts = append(opts, metric.WithCardinalityLimit(limit))
		}
		reader := metric.NewManualReader()
		provider := metric.NewMeterProvider(append(opts, metric.WithReader(reader))...)
		if err := instruments.RegisterRAPL(provider.Meter("test"), src); err != nil {
			t.Fatal(err)
		}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		provider.Shutdown(context.Background())
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				var points []metricdata.DataPoint[float64]
				switch d := m.Data.(type) {
				case metricdata.Gauge[float64]:
					points = d.DataPoints
				case metricdata.Sum[float64]:
					points = d.DataPoints
				}
				for _, p := range points {
					if p.Attributes.HasValue("otel.metric.overflow") {
						t.Errorf("limit %d: %s has an overflow series", limit, m.Name)
					}
				}
				if m.Name == instruments.RAPLEnergy.Name && len(points) != rapl.MaxZones {
					t.Errorf("limit %d: %d energy series, want one for each of the %d zones served", limit, len(points), rapl.MaxZones)
				}
			}
		}
	}
}
