package docker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/podmantest"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/energy"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
)

// meter stands in for RAPL (no RAPL on these machines): the package draws
// 40 W plus 100 W at full load of this machine's real CPUs, read from the
// real /proc/stat as the test runs; its CPU time is the machine's own.
type meter struct {
	proc *procfs.FS
	mu   sync.Mutex
	last MeterReading
	ok   bool
}

func (m *meter) Read() (MeterReading, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cpu, err := m.proc.CPU()
	if err != nil {
		return MeterReading{}, false
	}
	now := time.Now()
	cur := MeterReading{At: now, TotalSeconds: cpu.TotalSeconds, IdleSeconds: cpu.IdleSeconds, Joules: m.last.Joules}
	if m.ok {
		if machine := cur.TotalSeconds - m.last.TotalSeconds; machine > 0 {
			busy := machine - (cur.IdleSeconds - m.last.IdleSeconds)
			cur.Joules += (40 + 100*busy/machine) * now.Sub(m.last.At).Seconds()
		}
	}
	m.last, m.ok = cur, true
	return cur, true
}

// TestContainerEnergy: two real podman containers, one busy and one idle,
// each charged CPU energy by its cgroup CPU time: the busy one most of
// what work added, the idle one next to nothing; neither more than the
// meter counted.
func TestContainerEnergy(t *testing.T) {
	pm := podmantest.Start(t)
	pm.Run(t, "idle", "sleep 3600")
	pm.Run(t, "busy", "while :; do :; done")
	proc, err := procfs.New("/proc")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := NewClient(DefaultMaxResponseBytes, client.WithHost(pm.DockerHost), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	m := &meter{proc: proc}
	src := New(Config{Client: cli, Interval: time.Second, Timeout: 5 * time.Second, Concurrency: 4, Procfs: "/proc", Cgroupfs: "/sys/fs/cgroup", Meter: m})
	src.idle.Configured = 40 // the meter's law: what work adds is dynamic from the first window
	ctx := context.Background()
	src.Sample(ctx)
	start, _ := m.Read()
	var busy, idle Container
	exportertest.WaitFor(t, 60*time.Second, func() bool {
		src.Sample(ctx)
		busy, idle = find(t, src, "busy"), find(t, src, "idle")
		return busy.HasEnergy && busy.Energy[energy.Dynamic]+busy.Energy[energy.Idle] > 20
	})
	counted := m.last.Joules - start.Joules
	total := func(c Container) float64 { return c.Energy[energy.Dynamic] + c.Energy[energy.Idle] }
	t.Logf("busy %.1f J (%.1f dynamic), idle %.3f J, of %.1f J counted", total(busy), busy.Energy[energy.Dynamic], total(idle), counted)
	if busy.Energy[energy.Dynamic] <= 0 {
		t.Errorf("busy container: no dynamic energy (%v)", busy.Energy)
	}
	if !idle.HasEnergy || total(idle) > total(busy)/20 {
		t.Errorf("idle container: %.3f J, busy %.1f J: want next to nothing against the busy one", total(idle), total(busy))
	}
	if total(busy)+total(idle) > counted {
		t.Errorf("containers got %.1f J, the meter counted %.1f J", total(busy)+total(idle), counted)
	}
	if snap := src.Snapshot(); !snap.HasIdlePower {
		t.Error("no idle power in the snapshot")
	}
}
