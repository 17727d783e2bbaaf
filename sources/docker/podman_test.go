package docker

// The cgroup path against the stats path on real podman containers (the
// Docker Engine API of Debian's podman, internal/testkit/podmantest), read from
// this host's cgroups and /proc.

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/podmantest"
)

// TestCgroupPathMatchesStatsOnPodman: a busy, an idle, a memory-filling
// and a network-sending container, each read from its cgroup and by a
// stats call. Counters are read cgroup, stats, cgroup: the stats path's
// must lie between the two cgroup readings (2% either side); memory and
// PIDs too, or within 2% of one of them.
//
// podman before 4.4 swaps rx and tx in its stats (containers/podman#16618,
// fixed by #16628): the container's own view (its eth0) is what the cgroup
// path serves, as Docker does, so against such a podman rx is compared with
// tx.
func TestCgroupPathMatchesStatsOnPodman(t *testing.T) {
	pm := podmantest.Start(t)
	sink, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	pm.Run(t, "idle", "sleep 3600")
	gw, port := pm.Gateway(t, "idle"), sink.Addr().(*net.TCPAddr).Port
	pm.Run(t, "busy", "while :; do :; done")
	pm.Run(t, "filler", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>/dev/null; sleep 3600")
	// One pipeline for the test's life: its processes, and so its memory, hold still.
	pm.Run(t, "sender", fmt.Sprintf("dd if=/dev/zero bs=64k count=10000000 2>/dev/null | nc %s %d", gw, port))

	source := func(cgroups bool) *Source {
		cli, err := NewClient(DefaultMaxResponseBytes, client.WithHost(pm.DockerHost), client.WithAPIVersionNegotiation())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		cfg := Config{Client: cli, Interval: 5 * time.Second, Timeout: 5 * time.Second, Concurrency: 4, Procfs: "/proc"}
		if cgroups {
			cfg.Cgroupfs = "/sys/fs/cgroup"
		}
		return New(cfg)
	}
	byCgroup, byStats := source(true), source(false)
	ctx := context.Background()
	exportertest.WaitFor(t, 60*time.Second, func() bool {
		byCgroup.Sample(ctx)
		snap := byCgroup.Snapshot()
		if len(snap.Containers) != 4 {
			return false
		}
		for _, c := range snap.Containers {
			if c.Path != PathCgroup {
				t.Fatalf("%s: figures by %q (%s), want its cgroup", c.Name, c.Path, c.PathWhy)
			}
		}
		return find(t, byCgroup, "filler").MemoryBytes >= 48<<20 && find(t, byCgroup, "sender").TxBytes >= 4<<20 && find(t, byCgroup, "busy").CPUSeconds >= 0.5
	})
	if err := byCgroup.Health(); err != nil {
		t.Fatal(err)
	}

	byCgroup.Sample(ctx)
	before := byCgroup.Snapshot()
	byStats.Sample(ctx)
	viaStats := byStats.Snapshot()
	byCgroup.Sample(ctx)
	after := byCgroup.Snapshot()
	if err := byStats.Health(); err != nil {
		t.Fatal(err)
	}
	get := func(s *Snapshot, name string) Container {
		for _, c := range s.Containers {
			if c.Name == name {
				return c
			}
		}
		t.Fatalf("no %s in %+v", name, s.Containers)
		return Container{}
	}
	sender := get(viaStats, "sender")
	swapped := sender.RxBytes > sender.TxBytes // the container sends far more than it receives
	if c := get(after, "sender"); c.TxBytes <= c.RxBytes {
		t.Errorf("sender: rx %v tx %v by its cgroup path, want tx (what it sends) the larger", c.RxBytes, c.TxBytes)
	}
	if swapped {
		t.Log("this podman swaps rx and tx in its stats (containers/podman#16618): compared crosswise")
	}
	for _, name := range []string{"busy", "idle", "filler", "sender"} {
		lo, mid, hi := get(before, name), get(viaStats, name), get(after, name)
		if mid.Path != PathStats || !mid.HasStats || !hi.HasStats {
			t.Fatalf("%s: stats path %q %v, cgroup path %v", name, mid.Path, mid.HasStats, hi.HasStats)
		}
		rx, tx := mid.RxBytes, mid.TxBytes
		if swapped {
			rx, tx = tx, rx
		}
		for _, counter := range []struct {
			what        string
			lo, mid, hi float64
		}{
			{"CPU seconds", lo.CPUSeconds, mid.CPUSeconds, hi.CPUSeconds},
			{"rx bytes", lo.RxBytes, rx, hi.RxBytes},
			{"tx bytes", lo.TxBytes, tx, hi.TxBytes},
			{"block read bytes", lo.BlockReadBytes, mid.BlockReadBytes, hi.BlockReadBytes},
			{"block written bytes", lo.BlockWriteBytes, mid.BlockWriteBytes, hi.BlockWriteBytes},
		} {
			if counter.mid < counter.lo*0.98 || counter.mid > counter.hi*1.02 {
				t.Errorf("%s %s: stats path %v, cgroup path %v before and %v after", name, counter.what, counter.mid, counter.lo, counter.hi)
			}
		}
		for _, gauge := range []struct {
			what          string
			lo, stats, hi float64
		}{
			{"memory bytes", lo.MemoryBytes, mid.MemoryBytes, hi.MemoryBytes},
			{"memory limit bytes", lo.MemoryLimitBytes, mid.MemoryLimitBytes, hi.MemoryLimitBytes},
			{"PIDs", lo.PIDs, mid.PIDs, hi.PIDs},
		} {
			// Read between the two cgroup readings: within 2% of one, or
			// between them where the gauge moved (a pipeline's buffers).
			// A container of a megabyte or so (a pipeline's buffers) moves by
			// pages between reads: 256 KiB either way is the same reading.
			slack := max(0.02*gauge.stats, 256<<10)
			if gauge.what == "PIDs" {
				slack = 0.02 * gauge.stats
			}
			between := gauge.stats >= min(gauge.lo, gauge.hi)-slack && gauge.stats <= max(gauge.lo, gauge.hi)+slack
			if !between {
				t.Errorf("%s %s: stats path %v, cgroup path %v before and %v after", name, gauge.what, gauge.stats, gauge.lo, gauge.hi)
			}
		}
		t.Logf("%-6s CPU s %.3f|%.3f|%.3f  memory %.0f|%.0f  rx %.0f|%.0f  tx %.0f|%.0f  (cgroup|stats)", name,
			lo.CPUSeconds, mid.CPUSeconds, hi.CPUSeconds, hi.MemoryBytes, mid.MemoryBytes, hi.RxBytes, rx, hi.TxBytes, tx)
	}
	// CPU% over a window in which the busy one ran (a loaded machine may
	// leave it waiting between two quick reads).
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		byCgroup.Sample(ctx)
		busy, idle := find(t, byCgroup, "busy"), find(t, byCgroup, "idle")
		return busy.HasCPU && idle.HasCPU && busy.CPUPercent > idle.CPUPercent
	})
}

// listCounter is the client, counting its container lists.
type listCounter struct {
	*Client
	lists atomic.Int32
}

func (l *listCounter) ContainerList(ctx context.Context, o container.ListOptions) ([]container.Summary, error) {
	l.lists.Add(1)
	return l.Client.ContainerList(ctx, o)
}

// TestEventsFollowPodman: podman's event stream alone tells the source of
// a container started, renamed, stopped and removed (podman says remove
// where Docker says destroy): no list is taken after the one that follows
// the stream's connection.
func TestEventsFollowPodman(t *testing.T) {
	pm := podmantest.Start(t)
	pm.Run(t, "first", "sleep 3600")
	cli, err := NewClient(DefaultMaxResponseBytes, client.WithHost(pm.DockerHost), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	lc := &listCounter{Client: cli}
	src := New(Config{Client: lc, Interval: 300 * time.Millisecond, Timeout: 5 * time.Second, Concurrency: 4, ListInterval: time.Hour,
		Procfs: "/proc", Cgroupfs: "/sys/fs/cgroup"})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { src.Run(ctx); close(ran) }()
	defer func() { cancel(); <-ran }()
	exportertest.WaitFor(t, 30*time.Second, func() bool { return trustedNow(&src.events) && lc.lists.Load() >= 2 })
	lists := lc.lists.Load()
	state := func(name string) string {
		for _, c := range src.Snapshot().Containers {
			if c.Name == name {
				return c.State + "/" + c.Path
			}
		}
		return ""
	}
	pm.Run(t, "late", "sleep 3600")
	exportertest.WaitFor(t, 30*time.Second, func() bool { return state("late") == "running/"+PathCgroup })
	pm.Podman(t, "rename", "late", "renamed")
	exportertest.WaitFor(t, 30*time.Second, func() bool { return state("renamed") == "running/"+PathCgroup && state("late") == "" })
	pm.Podman(t, "stop", "--time", "0", "renamed")
	exportertest.WaitFor(t, 30*time.Second, func() bool { return state("renamed") == "exited/" })
	pm.Podman(t, "rm", "renamed")
	exportertest.WaitFor(t, 30*time.Second, func() bool { return state("renamed") == "" })
	if n := lc.lists.Load(); n != lists {
		t.Errorf("%d lists while podman's events told every change, want none", n-lists)
	}
}
