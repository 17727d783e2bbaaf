package instruments

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/buildinfo"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// checkReordered registers tb's readings reversed and then shuffled, and
// checks each exposition: every value goes with the reading that reads it,
// so the list's order must not change a byte.
func checkReordered[S, T any](t *testing.T, tb table[S, T], snapshot func() *S, check func(t *testing.T, got string)) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(len(tb.readings)), 1))
	orders := []struct {
		name    string
		reorder func([]Reading[S, T])
	}{
		{"reversed", slices.Reverse[[]Reading[S, T]]},
		{"shuffled", func(rs []Reading[S, T]) { rng.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] }) }},
	}
	for _, o := range orders {
		t.Run(o.name, func(t *testing.T) {
			r := tb
			r.readings = slices.Clone(tb.readings)
			o.reorder(r.readings)
			if slices.Equal(r.metricNames(), tb.metricNames()) {
				t.Fatal("the order did not change")
			}
			check(t, scrapeWith(t, func(mp *metric.MeterProvider) error { return r.register(mp.Meter("test"), snapshot) }))
		})
	}
}

func (tb table[S, T]) metricNames() []string {
	var names []string
	for _, m := range tb.metrics() {
		names = append(names, m.Name)
	}
	return names
}

// TestReadingNeedsOneFunction: a reading that reads nothing, or both the
// snapshot and its items, is refused rather than registered half-working.
func TestReadingNeedsOneFunction(t *testing.T) {
	for _, r := range []Reading[selfSnapshot, sampling.Stats]{
		{Metric: SelfDuration},
		{Metric: SelfDuration, Once: func(*selfSnapshot, *Emit) {}, Each: func(*sampling.Stats, *Emit) {}},
	} {
		tb := selfTable("cpu")
		tb.readings = []Reading[selfSnapshot, sampling.Stats]{r}
		scrapeWith(t, func(mp *metric.MeterProvider) error {
			if err := tb.register(mp.Meter("test"), func() *selfSnapshot { return &selfSnapshot{} }); err == nil {
				t.Error("registered a reading with Once and Each both set or both unset")
			}
			return nil
		})
	}
}

// TestSelf: the collection figures carry the source's name; without
// figures (the ffmpeg source) only the build info is served. The build
// info's values depend on the toolchain, so the golden file holds a
// placeholder for them.
func TestSelf(t *testing.T) {
	version, revision := buildinfo.Version()
	buildLine := fmt.Sprintf("worker_exporter_build_info{goversion=%q,revision=%q,version=%q} 1\n", runtime.Version(), revision, version)
	check := func(path string) func(t *testing.T, got string) {
		return func(t *testing.T, got string) {
			t.Helper()
			if !strings.Contains(got, buildLine) {
				t.Errorf("no %q in\n%s", buildLine, got)
			}
			golden(t, path, strings.Replace(got, buildLine, "worker_exporter_build_info{...} 1\n", 1))
		}
	}
	stats := func() sampling.Stats {
		return sampling.Stats{Duration: 1500 * time.Millisecond, Errors: 3, LastSuccess: time.Unix(1_800_000_000, 0)}
	}

	got := scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterSelf(mp.Meter("test"), "cpu", stats) })
	check("testdata/self.golden")(t, got)
	peer.CheckMetrics(t, got)
	checkReordered(t, selfTable("cpu"), func() *selfSnapshot { return &selfSnapshot{stats: []sampling.Stats{stats()}} }, check("testdata/self.golden"))

	// Before the first success there is no last-success time to serve.
	got = scrapeWith(t, func(mp *metric.MeterProvider) error {
		return RegisterSelf(mp.Meter("test"), "gpu", func() sampling.Stats { return sampling.Stats{Errors: 1} })
	})
	if strings.Contains(got, SelfLastSuccess.Name+"{") || !strings.Contains(got, `worker_exporter_collection_errors_total{source="gpu"} 1`) {
		t.Errorf("failing source:\n%s", got)
	}

	got = scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterSelf(mp.Meter("test"), "ffmpeg", nil) })
	if want := "# HELP worker_exporter_build_info Version of the running exporter; always 1.\n# TYPE worker_exporter_build_info gauge\n" + buildLine; got != want {
		t.Errorf("without stats:\n%s\nwant\n%s", got, want)
	}
}
