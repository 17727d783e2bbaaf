package docker

// Against a fake Engine API (internal/fakeengine) for what a real daemon
// cannot show on demand; the real one (podman) is exercised end to end in
// cmd/docker-stats-exporter.

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/fakeengine"
)

func newSource(t *testing.T, e *fakeengine.Engine, mutate ...func(*Config)) (*Source, *bytes.Buffer) {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(e.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	var logs bytes.Buffer
	cfg := Config{Client: cli, Interval: 50 * time.Millisecond, Timeout: 500 * time.Millisecond, Concurrency: 4,
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

func running(id, name string) *fakeengine.Container {
	return &fakeengine.Container{ID: id, Name: name, Image: "busybox", State: "running",
		Stats: container.StatsResponse{Read: t0, MemoryStats: container.MemoryStats{Usage: 100 << 20, Limit: 1 << 30, Stats: map[string]uint64{}}}}
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
		half.Stats.Read, half.Stats.CPUStats.CPUUsage.TotalUsage = t0.Add(time.Second), 500_000_000
		two.Stats.Read, two.Stats.CPUStats.CPUUsage.TotalUsage = t0.Add(time.Second), 2_000_000_000
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
	if _, ok := src.prev["b"]; ok {
		t.Error("the removed container's CPU sample is still kept")
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
