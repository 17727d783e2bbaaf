package docker

// Against a fake Engine API (internal/testkit/fakeengine) for what a real daemon
// cannot show on demand; the real one (podman) is exercised end to end in
// cmd/docker-stats-exporter. The engine's own CPU use is read from the real
// /proc.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/fakeengine"
)

func newSource(t *testing.T, e *fakeengine.Engine, mutate ...func(*Config)) (*Source, *bytes.Buffer) {
	t.Helper()
	return newSourceBounded(t, e, DefaultMaxResponseBytes, mutate...)
}

func newSourceBounded(t *testing.T, e *fakeengine.Engine, maxResponse int64, mutate ...func(*Config)) (*Source, *bytes.Buffer) {
	t.Helper()
	cli, err := NewClient(maxResponse, client.WithHost(e.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	var logs bytes.Buffer
	// The interval bounds how long a collection waits for stats calls; tests
	// call Sample themselves, or follow events that do not wait on it.
	cfg := Config{Client: cli, Interval: time.Second, Timeout: 500 * time.Millisecond, Concurrency: 4,
		Log: slog.New(slog.NewTextHandler(&logs, nil))}
	for _, m := range mutate {
		m(&cfg)
	}
	return New(cfg), &logs
}

func find(t *testing.T, s *Source, name string) Container {
	t.Helper()
	for _, c := range s.Snapshot().Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q in %+v", name, s.Snapshot())
	return Container{}
}

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// running is a container that has used one second of CPU so far.
func running(id, name string) *fakeengine.Container {
	st := container.StatsResponse{Read: t0, MemoryStats: container.MemoryStats{Usage: 100 << 20, Limit: 1 << 30, Stats: map[string]uint64{}}}
	st.CPUStats.CPUUsage.TotalUsage = 1e9
	return &fakeengine.Container{ID: id, Name: name, Image: "busybox", State: "running", Stats: st}
}

func TestMemoryCgroupV1AndV2(t *testing.T) {
	e := fakeengine.Start(t)
	v1, v2, bare := running("a", "v1"), running("b", "v2"), running("c", "bare")
	// cgroup v1 payloads carry total_inactive_file (and inactive_file, which docker ignores then).
	v1.Stats.MemoryStats.Stats = map[string]uint64{"total_inactive_file": 30 << 20, "inactive_file": 1 << 20, "cache": 40 << 20}
	// cgroup v2 payloads carry inactive_file only.
	v2.Stats.MemoryStats.Stats = map[string]uint64{"inactive_file": 25 << 20, "file": 50 << 20}
	e.Set(v1, v2, bare)
	src, _ := newSource(t, e)
	src.Sample(context.Background())
	if err := src.Health(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{"v1": 70 << 20, "v2": 75 << 20, "bare": 100 << 20} {
		if c := find(t, src, name); c.MemoryBytes != want || c.MemoryLimitBytes != 1<<30 {
			t.Errorf("%s: memory %v limit %v, want %v", name, c.MemoryBytes, c.MemoryLimitBytes, want)
		}
	}
}

func TestCPUFromOwnSamples(t *testing.T) {
	e := fakeengine.Start(t)
	half, two := running("a", "half"), running("b", "two-cores")
	e.Set(half, two)
	src, _ := newSource(t, e)
	src.Sample(context.Background())
	if c := find(t, src, "half"); c.HasCPU {
		t.Error("CPU% from a single sample")
	}
	// One second later by the daemon's clock: half a core, and two whole cores, busy.
	e.Update(func() {
		half.Stats.Read, half.Stats.CPUStats.CPUUsage.TotalUsage = t0.Add(time.Second), 1_500_000_000
		two.Stats.Read, two.Stats.CPUStats.CPUUsage.TotalUsage = t0.Add(time.Second), 3_000_000_000
	})
	src.Sample(context.Background())
	if c := find(t, src, "half"); !c.HasCPU || c.CPUPercent != 50 {
		t.Errorf("half a core: %v%% (%v), want 50", c.CPUPercent, c.HasCPU)
	}
	if c := find(t, src, "two-cores"); c.CPUPercent != 200 {
		t.Errorf("two cores: %v%%, want 200 (100 per busy core, as docker stats)", c.CPUPercent)
	}
}

func TestNetworkBlockIOAndPIDs(t *testing.T) {
	e := fakeengine.Start(t)
	c := running("a", "web")
	c.Stats.Networks = map[string]container.NetworkStats{"eth0": {RxBytes: 1000, TxBytes: 200}, "eth1": {RxBytes: 5, TxBytes: 7}}
	c.Stats.BlkioStats.IoServiceBytesRecursive = []container.BlkioStatEntry{
		{Major: 8, Op: "Read", Value: 4096}, {Major: 8, Op: "Write", Value: 8192},
		{Major: 259, Op: "read", Value: 1}, {Major: 259, Op: "write", Value: 2}, {Major: 8, Op: "Total", Value: 12288},
	}
	c.Stats.PidsStats.Current = 12
	c.RestartCount = 3
	e.Set(c)
	src, _ := newSource(t, e)
	src.Sample(context.Background())
	got := find(t, src, "web")
	if got.RxBytes != 1005 || got.TxBytes != 207 || got.BlockReadBytes != 4097 || got.BlockWriteBytes != 8194 || got.PIDs != 12 || got.RestartCount != 3 {
		t.Errorf("%+v", got)
	}
}

// TestSlowAndFailingStats: one slow and one failing container cost their
// own figures only, the cycle is bounded by the per-call timeout, and a
// scrape (Snapshot) never waits for it.
func TestSlowAndFailingStats(t *testing.T) {
	e := fakeengine.Start(t)
	slow, failing, fine := running("a", "slow"), running("b", "failing"), running("c", "fine")
	slow.StatsDelay = 5 * time.Second
	failing.StatsFail = true
	e.Set(slow, failing, fine)
	src, _ := newSource(t, e)

	done := make(chan struct{})
	go func() { src.Sample(context.Background()); close(done) }()
	for i := 0; i < 10; i++ { // a reader while the cycle is in flight
		src.Snapshot()
	}
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("a 5 s stats call held the cycle past its 500 ms timeout")
	}
	err := src.Health()
	if err == nil || !strings.Contains(err.Error(), "container slow") || !strings.Contains(err.Error(), "container failing") {
		t.Errorf("health %v: should name both", err)
	}
	if c := find(t, src, "fine"); !c.HasStats {
		t.Error("the fine container lost its stats")
	}
	if c := find(t, src, "slow"); c.HasStats || c.State != "running" {
		t.Errorf("slow container: %+v", c)
	}
}

func TestDaemonGoesAwayAndComesBack(t *testing.T) {
	e := fakeengine.Start(t)
	e.Set(running("a", "web"))
	src, logs := newSource(t, e)
	src.Sample(context.Background())
	if !src.Snapshot().Up {
		t.Fatal("not up")
	}
	e.Down()
	src.Sample(context.Background())
	src.Sample(context.Background())
	snap := src.Snapshot()
	if snap.Up || len(snap.Containers) != 0 || src.Health() == nil || !strings.Contains(src.Health().Error(), "docker daemon at unix://") {
		t.Errorf("daemon down: %+v", snap)
	}
	e.Up(t)
	src.Sample(context.Background())
	if snap := src.Snapshot(); !snap.Up || src.Health() != nil || len(snap.Containers) != 1 {
		t.Errorf("daemon back: %+v", snap)
	}
	if n := strings.Count(logs.String(), "not fully readable"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, logs.String())
	}
}

func TestRemovedContainerGoes(t *testing.T) {
	e := fakeengine.Start(t)
	a, b := running("a", "keep"), running("b", "gone")
	e.Set(a, b)
	src, _ := newSource(t, e)
	src.Sample(context.Background())
	e.Set(a)
	src.Sample(context.Background())
	if cs := src.Snapshot().Containers; len(cs) != 1 || cs[0].Name != "keep" {
		t.Errorf("after removal: %+v", cs)
	}
	src.regMu.Lock()
	_, kept := src.known["b"]
	src.regMu.Unlock()
	if kept {
		t.Error("the removed container is still kept")
	}
}

func TestFiltersAndLabels(t *testing.T) {
	e := fakeengine.Start(t)
	enc, sidecar, db := running("a", "encoder-1"), running("b", "encoder-sidecar"), running("c", "postgres")
	enc.Labels = map[string]string{"com.example.job": "job42", "secret": "x"}
	db.Image = "postgres:16"
	e.Set(enc, sidecar, db)
	src, _ := newSource(t, e, func(c *Config) {
		c.Filter = Filter{IncludeName: regexp.MustCompile(`^encoder`), ExcludeName: regexp.MustCompile(`sidecar`)}
		c.Labels = []string{"com.example.job", "absent"}
	})
	src.Sample(context.Background())
	cs := src.Snapshot().Containers
	if len(cs) != 1 || cs[0].Name != "encoder-1" {
		t.Fatalf("filtered: %+v", cs)
	}
	if l := cs[0].Labels; len(l) != 1 || l[0] != (Label{"com.example.job", "job42"}) {
		t.Errorf("labels %v: only the allowlisted one present", l)
	}

	src, _ = newSource(t, e, func(c *Config) { c.Filter = Filter{ExcludeImage: regexp.MustCompile(`^postgres`)} })
	src.Sample(context.Background())
	if n := len(src.Snapshot().Containers); n != 2 {
		t.Errorf("exclude by image kept %d, want 2", n)
	}
}

func TestOOMEvents(t *testing.T) {
	e := fakeengine.Start(t)
	e.Set(running("a", "hog"), running("b", "calm"))
	src, _ := newSource(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go src.Run(ctx)
	e.OOM("a")
	e.OOM("a")
	oomKills := func() uint64 {
		for _, c := range src.Snapshot().Containers {
			if c.Name == "hog" {
				return c.OOMKills
			}
		}
		return 0
	}
	deadline := time.Now().Add(5 * time.Second)
	for oomKills() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("OOM kills %d, want 2", oomKills())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := find(t, src, "calm").OOMKills; n != 0 {
		t.Errorf("calm container has %d OOM kills", n)
	}
}

// TestContainerRemovedDuringCollection: a container listed, then gone
// before its stats call (404), is left out without an error.
func TestContainerRemovedDuringCollection(t *testing.T) {
	e := fakeengine.Start(t)
	e.Set(running("a", "stays"))
	src, _ := newSource(t, e)
	// The list names a container the stats endpoint no longer knows.
	ghost := running("b", "ghost")
	ghost.StatsGone = true
	e.Set(running("a", "stays"), ghost)
	src.Sample(context.Background())
	if err := src.Health(); err != nil {
		t.Errorf("a removed container made an error: %v", err)
	}
	if cs := src.Snapshot().Containers; len(cs) != 1 || cs[0].Name != "stays" {
		t.Errorf("containers %+v", cs)
	}
}

// TestRestartsSurviveStop: the restart count comes from inspecting every
// container, so it does not fall to 0 (a counter reset to Prometheus) when
// the container stops.
func TestRestartsSurviveStop(t *testing.T) {
	e := fakeengine.Start(t)
	web := running("a", "web")
	web.RestartCount = 2
	e.Set(web)
	src, _ := newSource(t, e)
	src.Sample(context.Background())
	e.Update(func() { web.State, web.ExitCode = "exited", 3 })
	src.Sample(context.Background())
	if c := find(t, src, "web"); c.RestartCount != 2 || c.State != "exited" {
		t.Errorf("stopped container: restarts %v in state %s, want 2 (the count never goes down)", c.RestartCount, c.State)
	}
}

// TestInspectFailure: while a container's inspect fails, what only inspect
// tells is unknown, not 0; each failure is counted and health names the
// container. Its stats are still served.
func TestInspectFailure(t *testing.T) {
	e := fakeengine.Start(t)
	web, other := running("a", "web"), running("b", "other")
	web.RestartCount = 2
	e.Set(web, other)
	src, _ := newSource(t, e)
	src.Sample(context.Background())
	if c := find(t, src, "web"); !c.HasInspect || c.RestartCount != 2 || c.Health != "none" {
		t.Fatalf("inspected: %+v", c)
	}
	e.Update(func() { web.InspectFail = true })
	src.Sample(context.Background())
	src.Sample(context.Background())
	c := find(t, src, "web")
	if c.HasInspect || !c.HasStats {
		t.Errorf("inspect failing: HasInspect %v HasStats %v, want false and true", c.HasInspect, c.HasStats)
	}
	if n := src.Snapshot().InspectErrors; n != 2 {
		t.Errorf("%d inspect errors counted, want 2", n)
	}
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "container web: inspect:") || strings.Contains(err.Error(), "other") {
		t.Errorf("health %v: should name web's inspect, only", err)
	}
}

// TestHealthExitCodeStartTime: what inspect tells of each container.
func TestHealthExitCodeStartTime(t *testing.T) {
	e := fakeengine.Start(t)
	sick, plain, done := running("a", "sick"), running("b", "plain"), running("c", "done")
	sick.Health = container.Unhealthy
	sick.StartedAt = t0.Add(-time.Hour)
	done.State, done.ExitCode, done.StartedAt = "exited", 3, t0.Add(-2*time.Hour)
	e.Set(sick, plain, done)
	src, _ := newSource(t, e)
	src.Sample(context.Background())
	if c := find(t, src, "sick"); c.Health != "unhealthy" || !c.StartedAt.Equal(t0.Add(-time.Hour)) {
		t.Errorf("sick: health %q started %v", c.Health, c.StartedAt)
	}
	if c := find(t, src, "plain"); c.Health != "none" || !c.StartedAt.IsZero() {
		t.Errorf("plain: health %q started %v, want none and never (the fake's zero time)", c.Health, c.StartedAt)
	}
	if c := find(t, src, "done"); c.ExitCode != 3 || c.HasStats || !c.StartedAt.Equal(t0.Add(-2*time.Hour)) {
		t.Errorf("done: %+v", c)
	}
}

// TestStableErrorText: the health error lists the failing containers in
// name order whatever order their calls end in, so one unchanged problem
// is logged once.
func TestStableErrorText(t *testing.T) {
	e := fakeengine.Start(t)
	a, b := running("a", "a-first"), running("b", "b-second")
	a.StatsFail, b.StatsFail = true, true
	e.Set(a, b)
	src, logs := newSource(t, e)
	var texts []string
	for _, slow := range []*fakeengine.Container{b, a, b} {
		e.Update(func() {
			a.StatsDelay, b.StatsDelay = 0, 0
			slow.StatsDelay = 200 * time.Millisecond // the other answers first
		})
		src.Sample(context.Background())
		texts = append(texts, src.Health().Error())
	}
	for _, text := range texts[1:] {
		if text != texts[0] {
			t.Errorf("the same failures read differently:\n%s\n---\n%s", texts[0], text)
		}
	}
	if i, j := strings.Index(texts[0], "a-first"), strings.Index(texts[0], "b-second"); i < 0 || j < i {
		t.Errorf("not in name order: %s", texts[0])
	}
	if n := strings.Count(logs.String(), "not fully readable"); n != 1 {
		t.Errorf("one unchanged problem logged %d times:\n%s", n, logs.String())
	}
}

// TestMissingMemoryStats: a stats body without memory_stats (or with
// zeros, which the API omits) gives no memory figures, not 0.
func TestMissingMemoryStats(t *testing.T) {
	e := fakeengine.Start(t)
	bare := running("a", "bare")
	bare.Stats.MemoryStats = container.MemoryStats{}
	bare.Stats.PidsStats.Current = 0
	e.Set(bare)
	src, _ := newSource(t, e)
	src.Sample(context.Background())
	if c := find(t, src, "bare"); !c.HasStats || c.HasMemory || c.HasMemoryLimit || c.HasPIDs {
		t.Errorf("no memory figures: %+v", c)
	}
}

// TestPacketsThrottlingAndCPUSeconds: docker-shaped figures are served; a
// daemon that counts bytes but no packets (podman) and a container without
// CPU periods leave those figures unknown.
func TestPacketsThrottlingAndCPUSeconds(t *testing.T) {
	e := fakeengine.Start(t)
	limited, podmanLike := running("a", "limited"), running("b", "podman-like")
	limited.Stats.Networks = map[string]container.NetworkStats{
		"eth0": {RxBytes: 1000, RxPackets: 10, RxErrors: 1, RxDropped: 2, TxBytes: 500, TxPackets: 5, TxErrors: 3, TxDropped: 4},
		"eth1": {RxBytes: 100, RxPackets: 1, TxBytes: 0},
	}
	limited.Stats.CPUStats.ThrottlingData = container.ThrottlingData{Periods: 100, ThrottledPeriods: 40, ThrottledTime: 2_500_000_000}
	podmanLike.Stats.Networks = map[string]container.NetworkStats{"network": {RxBytes: 726, TxBytes: 0}}
	e.Set(limited, podmanLike)
	src, _ := newSource(t, e)
	src.Sample(context.Background())
	c := find(t, src, "limited")
	if want := (Packets{Known: true, Packets: 11, Errors: 1, Dropped: 2}); c.Rx != want {
		t.Errorf("rx %+v, want %+v", c.Rx, want)
	}
	if want := (Packets{Known: true, Packets: 5, Errors: 3, Dropped: 4}); c.Tx != want {
		t.Errorf("tx %+v, want %+v", c.Tx, want)
	}
	if !c.HasThrottling || c.ThrottledPeriods != 40 || c.ThrottledSeconds != 2.5 || !c.HasCPUUsage || c.CPUSeconds != 1 {
		t.Errorf("limited CPU: %+v", c)
	}
	p := find(t, src, "podman-like")
	if p.Rx.Known || !p.Tx.Known || p.HasThrottling {
		t.Errorf("podman-like: rx %+v tx %+v throttling %v: bytes without packets are unknown, no bytes no packets is 0, no periods no throttling", p.Rx, p.Tx, p.HasThrottling)
	}
}

// TestSlowContainersKeepIdentity: 64 containers whose stats calls hang
// cost their own figures only. What the list says (every container, its
// state, daemon up) is served while their calls are still in flight, and
// when they time out the others keep their figures and health names them.
func TestSlowContainersKeepIdentity(t *testing.T) {
	e := fakeengine.Start(t)
	cs := []*fakeengine.Container{running("fine", "fine")}
	for i := range 64 {
		c := running(fmt.Sprintf("h%02d", i), fmt.Sprintf("hang-%02d", i))
		c.StatsDelay = time.Hour
		cs = append(cs, c)
	}
	e.Set(cs...)

	// Calls that never end by themselves: the cycle is held until cancelled.
	src, _ := newSource(t, e, func(c *Config) { c.Timeout, c.Concurrency = time.Hour, 16 })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { src.Sample(ctx); close(done) }()
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		s := src.Snapshot()
		return s.Up && len(s.Containers) == 65
	})
	select {
	case <-done:
		t.Fatal("the cycle ended: the listed containers were served only after it")
	default:
	}
	if c := find(t, src, "hang-63"); c.State != "running" {
		t.Errorf("in flight: %+v", c)
	}
	cancel()
	<-done

	// Calls that time out.
	src, _ = newSource(t, e, func(c *Config) { c.Timeout, c.Concurrency = 300*time.Millisecond, 16 })
	src.Sample(context.Background())
	snap := src.Snapshot()
	if !snap.Up || len(snap.Containers) != 65 {
		t.Fatalf("after the cycle: up %v, %d containers", snap.Up, len(snap.Containers))
	}
	if c := find(t, src, "fine"); !c.HasStats || !c.HasMemory {
		t.Errorf("the fine container lost its figures: %+v", c)
	}
	if c := find(t, src, "hang-00"); c.HasStats || c.State != "running" || !c.HasInspect {
		t.Errorf("a hanging container: %+v", c)
	}
	err := src.Health()
	if err == nil || !strings.Contains(err.Error(), "container hang-00: stats:") || !strings.Contains(err.Error(), "and 54 more containers") {
		t.Errorf("health %v: should name the first ten and count the rest", err)
	}
}

// TestHugeBodiesBounded: a 200 MB stats body costs its container its
// figures, and a 200 MB container list fails the collection, each with a
// clear error and without the exporter reading them whole. TotalAlloc
// (every byte allocated meanwhile) bounds the peak heap: the JSON decoder
// doubles its buffer up to the bound, so about 4 × the bound at most; and
// nothing of it is kept. The bound is 1 MiB here, to keep the test short
// under -race; the default (16 MiB) works the same.
func TestHugeBodiesBounded(t *testing.T) {
	const huge, bound = 200 << 20, 1 << 20
	e := fakeengine.Start(t)
	fine, big := running("a", "fine"), running("b", "big")
	big.StatsPadding = huge
	e.Set(fine, big)
	src, _ := newSourceBounded(t, e, bound, func(c *Config) { c.Timeout = time.Minute }) // the bound ends the read, not a timeout
	sample := func(what string) {
		t.Helper()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		src.Sample(context.Background())
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 5*bound {
			t.Errorf("a %d MB %s: %d MB allocated, want under %d MB", huge>>20, what, n>>20, 5*bound>>20)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if after.HeapInuse > before.HeapInuse+bound {
			t.Errorf("a %d MB %s: %d MB of heap kept", huge>>20, what, (after.HeapInuse-before.HeapInuse)>>20)
		}
	}

	sample("stats body")
	if c := find(t, src, "fine"); !c.HasStats || !src.Snapshot().Up {
		t.Error("the other container lost its stats")
	}
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "container big: stats:") || !strings.Contains(err.Error(), "is over 1048576 bytes") {
		t.Errorf("health %v", err)
	}

	big.StatsPadding = 0
	e.PadList(huge)
	sample("container list")
	if err := src.Health(); src.Snapshot().Up || err == nil || !strings.Contains(err.Error(), "/containers/json is over 1048576 bytes") || strings.Contains(err.Error(), "docker group") {
		t.Errorf("up %v, health %v", src.Snapshot().Up, err)
	}
}

// TestMaxContainers: past the bound, running containers are kept first,
// then the oldest; the rest are counted and health says so.
func TestMaxContainers(t *testing.T) {
	e := fakeengine.Start(t)
	oldStopped, oldRunning, newRunning, newest := running("a", "z-old-stopped"), running("b", "y-old"), running("c", "x-new"), running("d", "w-newest")
	oldStopped.State = "exited"
	oldStopped.Created, oldRunning.Created, newRunning.Created, newest.Created = 1, 2, 3, 4
	e.Set(oldStopped, oldRunning, newRunning, newest)
	src, _ := newSource(t, e, func(c *Config) { c.MaxContainers = 2 })
	src.Sample(context.Background())
	snap := src.Snapshot()
	if len(snap.Containers) != 2 || snap.Containers[0].Name != "x-new" || snap.Containers[1].Name != "y-old" || snap.Skipped != 2 {
		t.Errorf("kept %+v, skipped %d; want x-new and y-old in name order, 2 skipped", snap.Containers, snap.Skipped)
	}
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "2 containers left out: more match than the 2 allowed (--docker.max-containers)") {
		t.Errorf("health %v", err)
	}
}

// TestEngineCPUOfSocketOwner: the engine's process is the one holding the
// daemon's socket (here this test process, which serves the fake Engine
// API), and its CPU use is read from the real /proc. The clock is set so
// the samples are one second apart; between them this process burns CPU.
// getrusage, read around the two samples, brackets what /proc must show.
func TestEngineCPUOfSocketOwner(t *testing.T) {
	e := fakeengine.Start(t)
	e.Set(running("a", "web"))
	src, _ := newSource(t, e, func(c *Config) { c.Procfs = "/proc" })
	now := t0
	src.engine.now = func() time.Time { return now }

	before := cpuTime(t)
	src.Sample(context.Background())
	if src.engine.proc.PID != os.Getpid() {
		t.Fatalf("engine process %d, want this test process %d", src.engine.proc.PID, os.Getpid())
	}
	if src.Snapshot().HasEngineCPU {
		t.Error("CPU% from a single reading")
	}
	start := cpuTime(t)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	exportertest.WaitFor(t, 30*time.Second, func() bool { return cpuTime(t)-start >= 300*time.Millisecond })
	close(stop)
	burned := cpuTime(t) - start
	now = now.Add(time.Second)
	src.Sample(context.Background())
	used := cpuTime(t) - before
	snap := src.Snapshot()
	// /proc counts in 10 ms ticks, truncated at each of the two readings.
	got := time.Duration(snap.EngineCPUPercent / 100 * float64(time.Second))
	if !snap.HasEngineCPU || got < burned-20*time.Millisecond || got > used+20*time.Millisecond {
		t.Errorf("engine CPU %v%% (%v): %v of CPU in the one second, want between %v (burned) and %v (used in all)", snap.EngineCPUPercent, snap.HasEngineCPU, got, burned, used)
	}
}

// cpuTime is this process's CPU time so far, all threads.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestEngineByNameOrNot: with the daemon on TCP there is no socket to
// follow: a process named dockerd is the engine (here a copy of sleep so
// named), and without one the figure is left out and the debug log says
// why, once.
func TestEngineByNameOrNot(t *testing.T) {
	var logs bytes.Buffer
	eng := newEngineCPU("/proc", "tcp://127.0.0.1:2375", slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for range 2 {
		eng.nextLook = time.Time{}
		if _, ok := eng.sample(); ok {
			t.Fatal("an engine CPU% with no engine process")
		}
	}
	if n := strings.Count(logs.String(), "0 processes named dockerd in /proc"); n != 1 {
		t.Errorf("the reason logged %d times, want once:\n%s", n, logs.String())
	}
	logs.Reset()
	if _, ok := newEngineCPU(t.TempDir(), "unix:///run/docker.sock", eng.log).sample(); ok || !strings.Contains(logs.String(), "is not a procfs mount") {
		t.Errorf("no procfs: %v, log %q", ok, logs.String())
	}

	sleep, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	dockerd := filepath.Join(t.TempDir(), "dockerd")
	if err := os.WriteFile(dockerd, sleep, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dockerd, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	eng.nextLook = time.Time{}
	eng.sample()
	if eng.proc.PID != cmd.Process.Pid {
		t.Errorf("engine process %d, want the one named dockerd, %d", eng.proc.PID, cmd.Process.Pid)
	}
	if _, ok := eng.sample(); !ok {
		t.Error("no CPU% from two readings of the process")
	}
}

// oomKept reports whether an OOM count for container id is kept.
func oomKept(s *Source, id string) bool {
	s.oomMu.Lock()
	defer s.oomMu.Unlock()
	return s.oom[id] != nil
}

// TestOOMBeforeListed: an OOM event for a container created after the
// list (so not served yet) is counted once the container is listed; a
// served container's count goes with it, and a count for one never listed
// (filtered out, say) goes after unservedCollections.
func TestOOMBeforeListed(t *testing.T) {
	e := fakeengine.Start(t)
	e.Set(running("a", "old"))
	src, _ := newSource(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src.Sample(ctx) // negotiates the API version before the event stream, as Run does
	watched := make(chan struct{})
	go func() { src.watch(ctx); close(watched) }()
	defer func() { cancel(); <-watched }()

	e.OOM("new")
	exportertest.WaitFor(t, 5*time.Second, func() bool { return oomKept(src, "new") })
	src.Sample(ctx) // "new" is not listed yet
	e.Set(running("a", "old"), running("new", "late"))
	src.Sample(ctx)
	if n := find(t, src, "late").OOMKills; n != 1 {
		t.Fatalf("late container: %d OOM kills, want the 1 seen before it was listed", n)
	}

	e.Set(running("a", "old"))
	src.Sample(ctx)
	if oomKept(src, "new") {
		t.Error("the OOM count of a removed container is kept")
	}

	e.OOM("ghost")
	exportertest.WaitFor(t, 5*time.Second, func() bool { return oomKept(src, "ghost") })
	for range unservedCollections + 1 {
		src.Sample(ctx)
	}
	if oomKept(src, "ghost") {
		t.Errorf("the OOM count of a container never listed is kept past %d collections", unservedCollections)
	}
}

// closeCounter is the client, counting its closes.
type closeCounter struct {
	*Client
	closed atomic.Int32
}

func (c *closeCounter) Close() error { c.closed.Add(1); return c.Client.Close() }

// TestRunClosesClient: the client's connections go when Run ends.
func TestRunClosesClient(t *testing.T) {
	e := fakeengine.Start(t)
	e.Set(running("a", "old"))
	cli, err := NewClient(DefaultMaxResponseBytes, client.WithHost(e.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	cc := &closeCounter{Client: cli}
	src := New(Config{Client: cc, Interval: 50 * time.Millisecond, Timeout: 500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { src.Run(ctx); close(ran) }()
	exportertest.WaitFor(t, 5*time.Second, func() bool { return src.Snapshot().Up })
	cancel()
	<-ran
	if n := cc.closed.Load(); n != 1 {
		t.Errorf("client closed %d times when Run ended, want 1", n)
	}
}
