package energy

import (
	"math"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
)

// machine simulates the windows of a 16-CPU machine whose package draws
// 40 W idle plus 100 W at full load, linearly: the worked example of a
// stream's cost that must not depend on its neighbours. The arithmetic is
// driven window by window through attribute, with no process or RAPL of
// this machine's: what is tested is the model.
type machine struct {
	src   *Source
	cur   readings
	clock time.Time
}

const (
	simCPUs      = 16
	simIdleWatts = 40.0
	simFullWatts = 100.0 // added at full load
)

func newMachine(idleWatts float64) *machine {
	s := New(Config{Interval: time.Second, IdleWatts: [NumDevices]float64{CPU: idleWatts}})
	m := &machine{src: s, clock: time.Unix(1e9, 0)}
	m.cur = readings{ok: true, at: m.clock, zones: map[[2]string]float64{{"0", "package"}: 0}}
	s.prev = m.cur
	return m
}

// encode adds a linked encode whose one process uses cores CPUs.
func (m *machine) encode(name string) *encode {
	e := &encode{procs: []*proc{{Process: procfs.Process{PID: len(m.src.encodes) + 100}, linked: true, linkedInWindow: true}}}
	m.src.encodes[name] = e
	return e
}

// window runs one second in which each encode's process uses cores[name]
// CPUs and other work uses background CPUs.
func (m *machine) window(cores map[string]float64, background float64) {
	busy := background
	for name, c := range cores {
		p := m.src.encodes[name].procs[0]
		p.cpu += c
		busy += c
	}
	busy = min(busy, simCPUs)
	watts := simIdleWatts + simFullWatts*busy/simCPUs
	m.clock = m.clock.Add(time.Second)
	next := readings{ok: true, at: m.clock, zones: map[[2]string]float64{{"0", "package"}: m.cur.zones[[2]string{"0", "package"}] + watts}}
	next.cpu = procfs.CPU{TotalSeconds: m.cur.cpu.TotalSeconds + simCPUs, IdleSeconds: m.cur.cpu.IdleSeconds + simCPUs - busy}
	m.src.mu.Lock()
	m.src.attribute(next, nil)
	m.src.prev = next
	m.src.mu.Unlock()
	m.cur = next
}

// TestIdleSplit: a 2-core encode is charged the same dynamic energy alone
// and beside three identical encodes (12.5 W: 100 W over 16 CPUs, times
// 2), and the same idle share (5 W: 40 W times 2 of 16 CPUs), once the
// idle power is estimated from a minute of varied load; the estimate is
// within 10% of 40 W; streams plus unattributed equal what was counted,
// and streams never get more.
func TestIdleSplit(t *testing.T) {
	m := newMachine(0)
	x := m.encode("x")
	// A minute of varied load from other work.
	for i := range 60 {
		m.window(nil, float64((i*7)%17))
	}
	idle := m.src.cpuIdle.Estimate()
	if idle.Method != IdleEstimated || math.Abs(idle.Watts-simIdleWatts) > 0.1*simIdleWatts {
		t.Fatalf("idle estimate %+v after a minute of varied load, want %s within 10%% of %v W", idle, IdleMethods[IdleEstimated], simIdleWatts)
	}

	rate := func(windows int, cores map[string]float64) (dynamic, idle float64) {
		d0, e0 := x.dynamic[CPU], x.energy[CPU]
		for range windows {
			m.window(cores, 1) // and a core of other work
		}
		return (x.dynamic[CPU] - d0) / float64(windows), (x.energy[CPU] - x.dynamic[CPU] - (e0 - d0)) / float64(windows)
	}
	aloneDyn, aloneIdle := rate(30, map[string]float64{"x": 2})
	for _, n := range []string{"y", "z", "w"} {
		m.encode(n)
	}
	crowdDyn, crowdIdle := rate(30, map[string]float64{"x": 2, "y": 2, "z": 2, "w": 2})
	t.Logf("alone: %.2f W dynamic, %.2f W idle; beside three: %.2f W dynamic, %.2f W idle", aloneDyn, aloneIdle, crowdDyn, crowdIdle)
	for _, c := range []struct {
		what      string
		got, want float64
	}{
		{"dynamic alone", aloneDyn, 12.5}, {"dynamic beside three", crowdDyn, 12.5},
		{"idle share alone", aloneIdle, 5}, {"idle share beside three", crowdIdle, 5},
	} {
		if math.Abs(c.got-c.want) > 0.1*c.want {
			t.Errorf("%s: %.2f W, want %.2f W within 10%%", c.what, c.got, c.want)
		}
	}

	snap := m.src.snapshot(ffmpeg.Snapshot{}, m.cur, nil)
	var streams float64
	for _, e := range m.src.encodes {
		streams += e.energy[CPU]
	}
	unattributed := snap.Unattributed[CPU][Dynamic] + snap.Unattributed[CPU][Idle]
	if streams > snap.Counted[CPU] || math.Abs(streams+unattributed-snap.Counted[CPU]) > 1e-6*snap.Counted[CPU] {
		t.Errorf("streams %.3f J + unattributed %.3f J, counted %.3f J: want streams within it and the sum equal", streams, unattributed, snap.Counted[CPU])
	}
	if len(snap.Idle) != 1 || snap.Idle[0].Method != IdleEstimated {
		t.Errorf("idle in the snapshot %+v, want the CPU's estimate", snap.Idle)
	}
}

// TestIdleConfigured: an operator's idle power is used as given, from the
// first window; an estimate needs spread in use, and until it has some
// the lowest window power seen stands in (an upper bound of idle power).
func TestIdleConfigured(t *testing.T) {
	m := newMachine(40)
	m.encode("x")
	m.window(map[string]float64{"x": 2}, 0)
	if idle := m.src.cpuIdle.Estimate(); idle.Method != IdleConfigured || idle.Watts != 40 {
		t.Errorf("configured idle %+v, want 40 W configured", idle)
	}
	x := m.src.encodes["x"]
	if math.Abs(x.dynamic[CPU]-12.5) > 1e-9 || math.Abs(x.energy[CPU]-x.dynamic[CPU]-5) > 1e-9 {
		t.Errorf("one window: %.3f J dynamic, %.3f J idle, want 12.5 and 5", x.dynamic[CPU], x.energy[CPU]-x.dynamic[CPU])
	}

	steady := newMachine(0)
	for range 40 {
		steady.window(nil, 4)
	}
	if idle := steady.src.cpuIdle.Estimate(); idle.Method != IdleMinimum || math.Abs(idle.Watts-65) > 1e-9 {
		t.Errorf("steady load: idle %+v, want the lowest window's 65 W as %s", idle, IdleMethods[IdleMinimum])
	}
}
