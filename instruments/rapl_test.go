package instruments

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/sdk/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/raplfixture"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
)

// scrapeWith serves what register puts on a fresh bridge, as /metrics would.
func scrapeWith(t *testing.T, register func(*metric.MeterProvider) error) string {
	t.Helper()
	registry := prometheus.NewRegistry()
	bridge, err := otelprom.New(otelprom.WithRegisterer(registry), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo(),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes))
	if err != nil {
		t.Fatal(err)
	}
	provider := metric.NewMeterProvider(metric.WithReader(bridge))
	t.Cleanup(func() { provider.Shutdown(context.Background()) })
	if err := register(provider); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

// TestRAPLGolden: the whole /metrics text for the laptop fixture (package
// with core, uncore, dram; psys; an mmio duplicate) after two samples 1 s
// apart. No RAPL here: the tree is a fixture.
func TestRAPLGolden(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.Laptop)
	now := time.Unix(1_800_000_000, 0)
	src := rapl.New(rapl.Config{FS: os.DirFS(root), Root: root, Interval: time.Second, Clock: func() time.Time { return now }})
	now = now.Add(time.Second)
	raplfixture.SetEnergy(t, root, "intel-rapl:0", 50_000_000+28_000_000)
	raplfixture.SetEnergy(t, root, "intel-rapl:0:0", 30_000_000+20_000_000)
	raplfixture.SetEnergy(t, root, "intel-rapl:0:2", 4_000_000+1_500_000)
	raplfixture.SetEnergy(t, root, "intel-rapl:1", 80_000_000+35_250_000)
	src.Sample()

	got := scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterRAPL(mp.Meter("test"), src) })
	golden(t, "testdata/rapl.golden", got)
	peer.CheckMetrics(t, got)
	checkReordered(t, raplTable, src.Snapshot, func(t *testing.T, got string) { golden(t, "testdata/rapl.golden", got) })
}
