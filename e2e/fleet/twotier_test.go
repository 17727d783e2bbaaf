// Package fleet proves the fleet's push path end to end with real
// programs on loopback: simulated workers (tools/fleet: the real
// instruments and pipeline over made-up snapshots, as no fleet of GPUs
// runs here) pushing to the collector built by `make collector`, alone or
// as a load-balancing tier in front of two gateways, into VictoriaMetrics
// built by `make victoriametrics`.
package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	sim "github.com/ffmpeg-rtmp/worker-exporters/tools/fleet"
	"github.com/ffmpeg-rtmp/worker-exporters/tools/pushpath"
)

const (
	collectorBin = "../../bin/otelcol-worker"
	vmBin        = "../../bin/victoria-metrics"
	vmFlags      = "../../examples/victoriametrics/flags"
	gatewayYAML  = "../../otel-collector/config.yaml"
	balancerYAML = "../../otel-collector/loadbalancer.yaml"
)

const workers = 20

// Push every second: an outage of a few seconds spans several pushes.
const interval = time.Second

// ours selects every series the simulated workers push.
var ours = `{service_name="` + sim.ServiceName + `"}`

func startVM(t *testing.T) *pushpath.VictoriaMetrics {
	t.Helper()
	peer.RequireFile(t, vmBin, "make victoriametrics")
	vm, err := pushpath.StartVictoriaMetrics(vmBin, vmFlags, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, "victoria-metrics", vm.Process)
	return vm
}

func startCollector(t *testing.T, name, config string, env ...string) *pushpath.Collector {
	t.Helper()
	peer.RequireFile(t, collectorBin, "make collector")
	c, err := pushpath.StartCollector(collectorBin, config, env...)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, name, c.Process)
	return c
}

func stopOnCleanup(t *testing.T, name string, p *pushpath.Process) {
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, tail(p.Output(), 3000))
		}
	})
}

func startFleet(t *testing.T, endpoint string) *sim.Fleet {
	t.Helper()
	f := sim.New(sim.Push{Endpoint: endpoint, Interval: interval}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	t.Cleanup(func() { f.Close(context.Background()) })
	if err := f.Grow(t.Context(), workers); err != nil {
		t.Fatal(err)
	}
	return f
}

// seriesPerWorker is how many series each simulated worker pushes.
func seriesPerWorker(t *testing.T, f *sim.Fleet) int {
	t.Helper()
	n, err := f.Workers()[0].Series()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// seriesPerHost counts, per host_name, the series VictoriaMetrics holds.
func seriesPerHost(t *testing.T, vm *pushpath.VictoriaMetrics) map[string]int {
	t.Helper()
	ss, err := vm.Query(t.Context(), `count by (host_name) (last_over_time(`+ours+`[10m]))`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, s := range ss {
		out[s.Labels["host_name"]] = int(s.Value)
	}
	return out
}

// allSeries reports whether every worker has exactly want series.
func allSeries(got map[string]int, want int) bool {
	if len(got) != workers {
		return false
	}
	for _, n := range got {
		if n != want {
			return false
		}
	}
	return true
}

func telemetry(t *testing.T, c *pushpath.Collector) map[string]float64 {
	t.Helper()
	m, err := c.Telemetry(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkNothingDropped fails the test for any data point the collector
// refused or could not send.
func checkNothingDropped(t *testing.T, name string, tel map[string]float64) {
	t.Helper()
	for _, d := range pushpath.Dropped {
		if tel[d] != 0 {
			t.Errorf("%s: %s = %v", name, d, tel[d])
		}
	}
}

// waitFor polls cond until it holds, failing the test with what describe
// says after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s not within %v: %s", what, d, describe())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestTwoTierDeliversEverySeriesOnceAcrossAGatewayRestart: workers push to
// the load-balancing tier (otel-collector/loadbalancer.yaml), which routes
// each worker's resource to one of two gateways (config.yaml) in front of
// VictoriaMetrics. Gateway B is stopped while the fleet pushes several
// times, and started again. With a static resolver nothing is rerouted:
// B's share waits in the tier's queue for B and is delivered once B is
// back. Exactly once means: every data point the tier accepted is stored,
// once — VictoriaMetrics runs without -dedup.minScrapeInterval, so it
// keeps a sample sent twice — and every worker has all its series and no
// others.
func TestTwoTierDeliversEverySeriesOnceAcrossAGatewayRestart(t *testing.T) {
	vm := startVM(t)
	// Each gateway its own persistent queue: one collector holds a queue's directory.
	gatewayA := startCollector(t, "gateway A", gatewayYAML, "VICTORIAMETRICS_URL="+vm.URL, "COLLECTOR_QUEUE_DIR="+t.TempDir())
	gatewayB := startCollector(t, "gateway B", gatewayYAML, "VICTORIAMETRICS_URL="+vm.URL, "COLLECTOR_QUEUE_DIR="+t.TempDir())
	balancer := startCollector(t, "load balancer", balancerYAML, fmt.Sprintf("GATEWAYS=[%s, %s]", gatewayA.GRPC, gatewayB.GRPC))
	begin := time.Now()
	f := startFleet(t, balancer.Endpoint())
	perWorker := seriesPerWorker(t, f)
	accepted := func() float64 { return telemetry(t, balancer)["otelcol_receiver_accepted_metric_points"] }

	var stored map[string]int
	waitFor(t, 60*time.Second, "every worker's series in VictoriaMetrics", func() bool {
		stored = seriesPerHost(t, vm)
		return allSeries(stored, perWorker)
	}, func() string { return fmt.Sprintf("series per worker %v, want %d each", stored, perWorker) })
	telA, telB := telemetry(t, gatewayA), telemetry(t, gatewayB)
	if telA["otelcol_receiver_accepted_metric_points"] == 0 || telB["otelcol_receiver_accepted_metric_points"] == 0 {
		t.Fatalf("the tier did not spread the workers: gateway A accepted %v points, B %v",
			telA["otelcol_receiver_accepted_metric_points"], telB["otelcol_receiver_accepted_metric_points"])
	}
	checkNothingDropped(t, "gateway B before its restart", telB)

	// B stops gracefully (it drains what it holds to VictoriaMetrics) and
	// stays down while the whole fleet pushes five times.
	if err := gatewayB.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped, atStop := time.Now(), accepted()
	onePush := float64(workers * perWorker)
	waitFor(t, 90*time.Second, "five pushes of the fleet into the tier while B is down", func() bool {
		return accepted() >= atStop+5*onePush
	}, func() string { return fmt.Sprintf("%.1f pushes", (accepted()-atStop)/onePush) })
	t.Logf("gateway B down for %v", time.Since(stopped).Round(time.Millisecond))
	if err := gatewayB.Restart(); err != nil {
		t.Fatal(err)
	}
	atRestart := accepted()
	waitFor(t, 60*time.Second, "two pushes of the fleet after B is back", func() bool {
		return accepted() >= atRestart+2*onePush
	}, func() string { return fmt.Sprintf("%.1f pushes", (accepted()-atRestart)/onePush) })
	problems, lastProblem := f.Problems()
	f.Close(context.Background()) // no more pushes: what the tier accepted is final

	// Everything the tier accepted is stored, once: wait until its queue
	// for B has drained.
	want := accepted()
	var raw []pushpath.Raw
	var samples int
	waitFor(t, 90*time.Second, "every accepted point stored", func() bool {
		var err error
		if raw, err = vm.Export(t.Context(), ours, begin.Add(-time.Minute), time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		samples = 0
		for _, r := range raw {
			samples += len(r.Timestamps)
		}
		return float64(samples) >= want
	}, func() string { return fmt.Sprintf("%d samples stored of %.0f points accepted", samples, want) })
	if float64(samples) != want {
		t.Errorf("%d samples stored, %.0f points accepted by the tier", samples, want)
	}
	if dups := duplicates(raw); len(dups) > 0 {
		t.Errorf("%d series have samples stored twice, e.g. %v", len(dups), dups[:min(3, len(dups))])
	}
	perHost := map[string]int{}
	for _, r := range raw {
		perHost[r.Metric["host_name"]]++
	}
	if !allSeries(perHost, perWorker) {
		t.Errorf("series stored per worker: %v; want %d for each of %d workers", perHost, perWorker, workers)
	}
	checkNothingDropped(t, "load balancer", telemetry(t, balancer))
	checkNothingDropped(t, "gateway A", telemetry(t, gatewayA))
	checkNothingDropped(t, "gateway B after its restart", telemetry(t, gatewayB))
	if problems != 0 {
		t.Errorf("the workers logged %d problems (export failures), the last: %s", problems, lastProblem)
	}
}

// duplicates names the series with two samples at one timestamp. Every
// port of a worker pushes worker_exporter_build_info with the same
// labels, so its samples may share a millisecond without being
// duplicates: it is left out.
func duplicates(raw []pushpath.Raw) []string {
	var out []string
	for _, r := range raw {
		if r.Metric["__name__"] == "worker_exporter_build_info" {
			continue
		}
		seen := map[int64]bool{}
		for _, ts := range r.Timestamps {
			if seen[ts] {
				out = append(out, fmt.Sprintf("%s at %d", key(r.Metric), ts))
				break
			}
			seen[ts] = true
		}
	}
	return out
}

func key(labels map[string]string) string {
	var kv []string
	for k, v := range labels {
		if k != "__name__" {
			kv = append(kv, k+"="+v)
		}
	}
	sort.Strings(kv)
	return labels["__name__"] + "{" + strings.Join(kv, ",") + "}"
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
