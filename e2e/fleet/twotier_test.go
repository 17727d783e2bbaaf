// Package fleet proves the fleet's push path end to end with real
// programs on loopback: simulated workers (internal/fleet: the real
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

	sim "github.com/ffmpeg-rtmp/worker-exporters/internal/fleet"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/pushpath"
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

// freshPerWorker counts, per host_name, the series with a sample in the
// last window.
func freshPerWorker(t *testing.T, vm *pushpath.VictoriaMetrics, window time.Duration) map[string]int {
	t.Helper()
	ss, err := vm.Query(t.Context(), fmt.Sprintf(`count by (host_name) (last_over_time(%s[%ds]))`, ours, int(window.Seconds())))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, s := range ss {
		out[s.Labels["host_name"]] = int(s.Value)
	}
	return out
}

// allFresh reports whether every worker has exactly want fresh series.
func allFresh(got map[string]int, want int) bool {
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
// VictoriaMetrics. Gateway B is stopped for several pushes and started
// again. With a static resolver nothing is rerouted: B's workers go stale
// while it is down, their share held in the tier's queue for B, and
// delivered once B is back. Exactly once means: every worker has all its
// series and no others, no sample is stored twice (VictoriaMetrics runs
// without -dedup.minScrapeInterval, so it keeps duplicates), and no push
// of the outage is missing.
func TestTwoTierDeliversEverySeriesOnceAcrossAGatewayRestart(t *testing.T) {
	vm := startVM(t)
	gatewayA := startCollector(t, "gateway A", gatewayYAML, "VICTORIAMETRICS_URL="+vm.URL)
	gatewayB := startCollector(t, "gateway B", gatewayYAML, "VICTORIAMETRICS_URL="+vm.URL)
	balancer := startCollector(t, "load balancer", balancerYAML, fmt.Sprintf("GATEWAYS=[%s, %s]", gatewayA.GRPC, gatewayB.GRPC))
	begin := time.Now()
	f := startFleet(t, balancer.Endpoint())
	perWorker := seriesPerWorker(t, f)

	var fresh map[string]int
	waitFor(t, 60*time.Second, "every worker's series in VictoriaMetrics", func() bool {
		fresh = freshPerWorker(t, vm, 3*interval)
		return allFresh(fresh, perWorker)
	}, func() string {
		return fmt.Sprintf("fresh series per worker %v, want %d each; points accepted: tier %v, gateway A %v, B %v",
			fresh, perWorker, telemetry(t, balancer)["otelcol_receiver_accepted_metric_points"],
			telemetry(t, gatewayA)["otelcol_receiver_accepted_metric_points"], telemetry(t, gatewayB)["otelcol_receiver_accepted_metric_points"])
	})
	acceptedA := telemetry(t, gatewayA)["otelcol_receiver_accepted_metric_points"]
	telB := telemetry(t, gatewayB)
	if acceptedA == 0 || telB["otelcol_receiver_accepted_metric_points"] == 0 {
		t.Fatalf("the tier did not spread the workers: gateway A accepted %v points, B %v", acceptedA, telB["otelcol_receiver_accepted_metric_points"])
	}
	checkNothingDropped(t, "gateway B before its restart", telB)

	// B stops gracefully (it drains its queue to VictoriaMetrics) and stays
	// down while the fleet pushes several times: B's workers go stale,
	// A's stay fresh.
	if err := gatewayB.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	acceptedAtStop := telemetry(t, balancer)["otelcol_receiver_accepted_metric_points"]
	var stale int
	waitFor(t, 60*time.Second, "five pushes of the whole fleet into the tier while B is down, B's workers stale and A's fresh", func() bool {
		fresh = freshPerWorker(t, vm, 3*interval)
		stale = workers - len(fresh)
		return telemetry(t, balancer)["otelcol_receiver_accepted_metric_points"] >= acceptedAtStop+float64(5*workers*perWorker) &&
			stale > 0 && stale < workers
	}, func() string { return fmt.Sprintf("%d of %d workers stale; fresh: %v", stale, workers, fresh) })
	t.Logf("gateway B down %v: %d workers stale, %d fresh", time.Since(stopped).Round(time.Millisecond), stale, len(fresh))

	if err := gatewayB.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	// Every push of the outage arrives: no series has a gap of more than
	// two intervals (the pushes are a second apart; the queue's retries
	// deliver the held ones).
	var raw []pushpath.Raw
	var problem string
	waitFor(t, 90*time.Second, "the outage's pushes delivered", func() bool {
		if !allFresh(freshPerWorker(t, vm, 3*interval), perWorker) {
			problem = "not every worker fresh"
			return false
		}
		var err error
		if raw, err = vm.Export(t.Context(), ours, begin, time.Now()); err != nil {
			t.Fatal(err)
		}
		problem = gap(raw, restarted, 2*interval)
		return problem == ""
	}, func() string { return problem })

	// Every worker's series, and no others.
	perHost := map[string]int{}
	for _, r := range raw {
		perHost[r.Metric["host_name"]]++
	}
	if !allFresh(perHost, perWorker) {
		t.Errorf("series stored per worker: %v; want %d for each of %d workers", perHost, perWorker, workers)
	}
	// No sample stored twice.
	if dups := duplicates(raw); len(dups) > 0 {
		t.Errorf("%d series have samples stored twice, e.g. %v", len(dups), dups[:min(3, len(dups))])
	}
	checkNothingDropped(t, "load balancer", telemetry(t, balancer))
	checkNothingDropped(t, "gateway A", telemetry(t, gatewayA))
	checkNothingDropped(t, "gateway B after its restart", telemetry(t, gatewayB))
	if n, last := f.Problems(); n != 0 {
		t.Errorf("the workers logged %d problems (export failures), the last: %s", n, last)
	}
}

// gap names a series whose samples up to before are more than max apart,
// or "" when none is.
func gap(raw []pushpath.Raw, before time.Time, max time.Duration) string {
	for _, r := range raw {
		ts := append([]int64(nil), r.Timestamps...)
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		for i := 1; i < len(ts) && ts[i] <= before.UnixMilli(); i++ {
			if d := time.Duration(ts[i]-ts[i-1]) * time.Millisecond; d > max {
				return fmt.Sprintf("%s: no sample for %v before %s", key(r.Metric), d, time.UnixMilli(ts[i]).Format(time.TimeOnly))
			}
		}
	}
	return ""
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
