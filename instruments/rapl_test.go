package instruments

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/sdk/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
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

// TestRAPLUndecodableZoneName: package 1 named with invalid UTF-8 (a fixture:
// no RAPL here). The bridge cannot carry such a label value; its zones are
// refused at discovery, so every other zone is still scraped, the scrape
// succeeds, and promtool accepts it.
func TestRAPLUndecodableZoneName(t *testing.T) {
	host := append([]raplfixture.Zone(nil), raplfixture.TwoSockets...)
	host[2].Name = "package-\xff\xfe" // intel-rapl:1, and its dram's package
	root := raplfixture.Build(t, t.TempDir(), host)
	src := rapl.New(rapl.Config{FS: os.DirFS(root), Root: root, Interval: time.Second})

	got := scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterRAPL(mp.Meter("test"), src) })
	for _, series := range []string{
		`rapl_energy_joules_total{package="0",zone="package"} 10`,
		`rapl_energy_joules_total{package="0",zone="dram"} 2`,
		`rapl_max_energy_range_joules{package="0",zone="package"} 262143.32885`,
		`rapl_implausible_readings_total{package="0",zone="dram"} 0`,
		"rapl_zones_discovered 2",
	} {
		if !strings.Contains(got, series+"\n") {
			t.Errorf("scrape lacks %s:\n%s", series, got)
		}
	}
	if !utf8.ValidString(got) || strings.Contains(got, `package="1"`) {
		t.Errorf("scrape carries the undecodable package:\n%q", got)
	}
	peer.CheckMetrics(t, got)
}
