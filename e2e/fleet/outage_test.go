package fleet

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	sim "github.com/ffmpeg-rtmp/worker-exporters/tools/fleet"
	"github.com/ffmpeg-rtmp/worker-exporters/tools/pushpath"
)

// A longer run by hand, e.g. 100 workers pushing every 15 s through 5-minute outages:
//
//	go test ./e2e/fleet -run NothingAccepted -v -timeout 60m -args -outage 5m -outage.workers 100 -outage.interval 15s
var (
	outage         = flag.Duration("outage", 30*time.Second, "TestNothingAcceptedIsLost: how long VictoriaMetrics is down, each of the two times")
	outageWorkers  = flag.Int("outage.workers", workers, "TestNothingAcceptedIsLost: simulated workers")
	outageInterval = flag.Duration("outage.interval", interval, "TestNothingAcceptedIsLost: how often each worker pushes")
	outageGateway  = flag.String("outage.config", gatewayYAML, "TestNothingAcceptedIsLost: the gateway's config (another, to see what it loses)")
)

// TestNothingAcceptedIsLost: the gateway (config.yaml) holds its backlog
// in a persistent queue on disk. Simulated workers push through it while
// VictoriaMetrics is stopped, and started again on the same data; then
// stopped again, and the gateway SIGKILLed half way through, with a
// backlog, and restarted. Every point the gateway accepted (answered OK:
// counted in front of it, as its own counter dies with it) is stored once
// VictoriaMetrics is back. The test logs the disk the backlog took.
func TestNothingAcceptedIsLost(t *testing.T) {
	peer.RequireFile(t, vmBin, "make victoriametrics")
	n, every := *outageWorkers, *outageInterval
	dataDir, queueDir := t.TempDir(), t.TempDir()
	vm := startVMAt(t, dataDir)
	store := startRelay(t, vm.URL)
	gateway := startCollector(t, "gateway", *outageGateway, "VICTORIAMETRICS_URL="+store.URL(), "COLLECTOR_QUEUE_DIR="+queueDir)
	counter := startAcceptedCounter(t, gateway.GRPC)
	begin := time.Now()
	f := sim.New(sim.Push{Endpoint: counter.endpoint, Interval: every}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	t.Cleanup(func() { f.Close(context.Background()) })
	if err := f.Grow(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	perWorker := seriesPerWorker(t, f)
	var got map[string]int
	waitFor(t, 2*time.Minute, "every worker's series in VictoriaMetrics", func() bool {
		got = seriesPerHost(t, vm)
		return len(got) == n && allEqual(got, perWorker)
	}, func() string { return fmt.Sprintf("series per worker %v, want %d each of %d", got, perWorker, n) })
	onePush := n * perWorker

	// 1. VictoriaMetrics stopped while the fleet pushes.
	idle := diskUsed(t, queueDir)
	watch := watchQueue(gateway, queueDir)
	if err := vm.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	sleepUntil(t, stopped.Add(*outage))
	peakBytes, peakPoints := watch()
	vm = restartVM(t, dataDir, store)
	down := time.Since(stopped)
	accepted := counter.Accepted(t)
	drained := waitStored(t, vm, begin, accepted, "after VictoriaMetrics' outage")
	perPoint := float64(peakBytes-idle) / float64(peakPoints)
	t.Logf("outage 1: VictoriaMetrics down %v with %d workers pushing %d points every %v: queue peaked at %d points on %.1f MiB of disk (%.0f bytes a point; %.1f MiB per worker-minute at this interval, %.2f MiB at 15 s); all %d accepted points stored %v after VictoriaMetrics was back",
		down.Round(time.Second), n, perWorker, every, peakPoints, mib(peakBytes-idle), perPoint,
		mib(perPoint*float64(perWorker)*float64(time.Minute/every)), mib(perPoint*float64(perWorker)*4), total(accepted), drained.Round(time.Second))
	if peakPoints < int64(onePush) {
		t.Errorf("the queue never held a push of the fleet (%d points) while VictoriaMetrics was down: peak %d", onePush, peakPoints)
	}

	// 2. Stopped again, and the gateway killed half way through with its
	// backlog, then started on the same queue.
	if err := vm.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = time.Now()
	sleepUntil(t, stopped.Add(*outage/2))
	queued := telemetry(t, gateway)["otelcol_exporter_queue_size"]
	if err := syscall.Kill(gateway.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedWith := diskUsed(t, queueDir)
	if err := gateway.Restart(); err != nil {
		t.Fatal(err)
	}
	reloaded := telemetry(t, gateway)["otelcol_exporter_queue_size"]
	t.Logf("outage 2: gateway SIGKILLed with about %.0f points queued on %.1f MiB; restarted with %.0f points in its queue", queued, mib(killedWith-idle), reloaded)
	if reloaded < queued {
		t.Errorf("the restarted gateway's queue holds %.0f points, fewer than the %.0f queued before SIGKILL", reloaded, queued)
	}
	sleepUntil(t, stopped.Add(*outage))
	vm = restartVM(t, dataDir, store)
	down = time.Since(stopped)
	// Two more pushes of the whole fleet, then no more: what the gateway
	// accepted is final.
	atBack := total(counter.Accepted(t))
	waitFor(t, 2*time.Minute, "two pushes of the fleet after VictoriaMetrics is back", func() bool {
		return total(counter.Accepted(t)) >= atBack+2*onePush
	}, func() string { return fmt.Sprintf("%d points accepted since", total(counter.Accepted(t))-atBack) })
	f.Close(context.Background())
	accepted = counter.Accepted(t)
	drained = waitStored(t, vm, begin, accepted, "after the gateway's SIGKILL and VictoriaMetrics' second outage")
	t.Logf("outage 2: VictoriaMetrics down %v; all %d accepted points stored %v after it was back", down.Round(time.Second), total(accepted), drained.Round(time.Second))

	byPush, dups := stored(t, vm, begin)
	extra := 0
	for p, s := range byPush {
		extra += max(0, s-accepted[p])
	}
	t.Logf("stored beyond what the gateway accepted: %d samples (%d a second sample of one series at one time): exports the gateway persisted but could not answer before SIGKILL, sent again by their workers", extra, dups)
	checkNothingDropped(t, "gateway after its restart", telemetry(t, gateway))
}

func startVMAt(t *testing.T, dataDir string) *pushpath.VictoriaMetrics {
	t.Helper()
	vm, err := pushpath.StartVictoriaMetrics(vmBin, vmFlags, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, "victoria-metrics", vm.Process)
	return vm
}

// restartVM starts VictoriaMetrics again on dataDir (it listens elsewhere
// now) and points the relay at it.
func restartVM(t *testing.T, dataDir string, store *relay) *pushpath.VictoriaMetrics {
	t.Helper()
	vm := startVMAt(t, dataDir)
	store.point(vm.URL)
	return vm
}

// waitStored waits until VictoriaMetrics holds every point of accepted,
// and returns how long that took. It fails the test with the points and
// pushes missing if they are not all there within five minutes (the
// gateway's retries back off to 30 s).
func waitStored(t *testing.T, vm *pushpath.VictoriaMetrics, since time.Time, accepted map[push]int, when string) time.Duration {
	t.Helper()
	start, want := time.Now(), total(accepted)
	for {
		// Count first (cheap), then check push by push (an export of it all).
		if ss, err := vm.Query(t.Context(), `sum(count_over_time(`+ours+`[1d]))`); err == nil && len(ss) == 1 && int(ss[0].Value) >= want {
			byPush, _ := stored(t, vm, since)
			points, pushes := missing(accepted, byPush)
			if points == 0 {
				return time.Since(start)
			}
			if time.Since(start) > 5*time.Minute {
				t.Fatalf("%s: %d of %d accepted points (in %d pushes) not stored after %v", when, points, want, pushes, time.Since(start).Round(time.Second))
			}
		} else if time.Since(start) > 5*time.Minute {
			t.Fatalf("%s: VictoriaMetrics holds %v samples of %d accepted after %v (%v)", when, ss, want, time.Since(start).Round(time.Second), err)
		}
		time.Sleep(2 * time.Second)
	}
}

// watchQueue samples the gateway's queue, its points and its disk, until
// the returned function is called; that returns their peaks. A gateway
// that does not answer (killed, restarting) is skipped.
func watchQueue(gateway *pushpath.Collector, dir string) (stop func() (bytes, points int64)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var bytes, points int64
	go func() {
		defer close(done)
		for {
			if tel, err := gateway.Telemetry(ctx); err == nil {
				points = max(points, int64(tel["otelcol_exporter_queue_size"]))
			}
			if b, err := diskUsedErr(dir); err == nil {
				bytes = max(bytes, b)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return func() (int64, int64) {
		cancel()
		<-done
		return bytes, points
	}
}

// diskUsed is the disk the files under dir take, in bytes.
func diskUsed(t *testing.T, dir string) int64 {
	t.Helper()
	b, err := diskUsedErr(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func diskUsedErr(dir string) (int64, error) {
	var used int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			used += st.Blocks * 512
		}
		return nil
	})
	return used, err
}

// sleepUntil waits for the outage to run its course (the fleet pushes
// meanwhile); nothing is asserted after it that a wait on a condition
// could replace.
func sleepUntil(t *testing.T, at time.Time) {
	select {
	case <-time.After(time.Until(at)):
	case <-t.Context().Done():
	}
}

func total(m map[push]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func allEqual(m map[string]int, want int) bool {
	for _, v := range m {
		if v != want {
			return false
		}
	}
	return true
}

func mib[N int64 | float64](b N) float64 { return float64(b) / (1 << 20) }
