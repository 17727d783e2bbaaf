//go:build cgo

package energy

// No GPU here: NVML is go-nvml's mock (internal/testkit/gpumock) behind the real
// nvml.Source; the processes it names are real ones, linked by the
// loopback connections they hold.

import (
	"context"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/gpumock"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
)

// gpu is one mock GPU whose energy counter and per-process readings the
// test sets.
type gpu struct {
	millijoules atomic.Uint64
	mu          sync.Mutex
	util        map[uint32][3]uint32 // pid → sm, encoder, decoder percent
	sessions    []gonvml.EncoderSessionInfo
	encoder     uint32 // the GPU's own encoder utilisation
	hang        gpumock.Toggle
	release     chan struct{} // a hung energy call returns once it is closed
}

func newGPU(t *testing.T) (*gpu, *nvml.Source) {
	t.Helper()
	g := &gpu{util: map[uint32][3]uint32{}, release: make(chan struct{})}
	g.millijoules.Store(5_000_000)
	m := gpumock.New(1)
	d := m.Devices[0].(*server.Device)
	d.GetTotalEnergyConsumptionFunc = func() (uint64, gonvml.Return) {
		if g.hang.On() {
			<-g.release
		}
		return g.millijoules.Load(), gonvml.SUCCESS
	}
	d.GetProcessUtilizationFunc = func(last uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
		g.mu.Lock()
		defer g.mu.Unlock()
		now := uint64(time.Now().UnixMicro())
		var out []gonvml.ProcessUtilizationSample
		for pid, u := range g.util {
			out = append(out, gonvml.ProcessUtilizationSample{Pid: pid, TimeStamp: now, SmUtil: u[0], EncUtil: u[1], DecUtil: u[2]})
		}
		return out, gonvml.SUCCESS
	}
	d.GetEncoderSessionsFunc = func() ([]gonvml.EncoderSessionInfo, gonvml.Return) {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.sessions, gonvml.SUCCESS
	}
	d.GetEncoderUtilizationFunc = func() (uint32, uint32, gonvml.Return) {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.encoder, 167000, gonvml.SUCCESS
	}
	src := nvml.New(nvml.Config{Lib: m, Interval: time.Second, Timeout: 5 * time.Second, RetryInterval: time.Second})
	return g, src
}

func (g *gpu) set(util map[uint32][3]uint32, encoder uint32, sessions ...gonvml.EncoderSessionInfo) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.util, g.encoder, g.sessions = util, encoder, sessions
}

func session(pid, w, h, fps uint32) gonvml.EncoderSessionInfo {
	return gonvml.EncoderSessionInfo{Pid: pid, HResolution: w, VResolution: h, AverageFps: fps}
}

// TestGPUAttribution: each GPU's dynamic energy goes to the processes
// using it by their engine use (idle power is configured as nothing here,
// so the whole counter is dynamic; TestIdleSplit covers idle power); a
// process of no stream keeps its share; a stream expected on NVENC with no
// session reads zero GPU energy and zero sessions while its CPU time grows.
func TestGPUAttribution(t *testing.T) {
	g, nv := newGPU(t)
	r := newRig(t, nv)
	r.src.cfg.IdleWatts[GPU] = 1e-12
	pids := map[string]int{}
	for _, name := range []string{"a", "b", "c"} {
		script := "sleep 60"
		if name == "c" {
			script = busy // encodes on the CPU: NVENC was asked for and did not open
		}
		cmd, conn := child(t, script)
		pids[name] = cmd.Process.Pid
		r.open(name, peer(conn, 0))
	}
	a, b := uint32(pids["a"]), uint32(pids["b"])
	const other = 1 // a process of no stream
	g.set(map[uint32][3]uint32{a: {10, 60, 0}, b: {0, 20, 10}, other: {20, 0, 0}}, 80,
		session(a, 1920, 1080, 60), session(a, 1280, 720, 60), session(b, 1280, 720, 30))

	r.window() // links, and reads the counter once
	const perWindow = 100.0
	for range 3 {
		g.millijoules.Add(perWindow * 1000)
		r.waitCPU(pids["c"], 0.05)
		r.window()
	}
	snap := r.src.Snapshot()
	// Weights 70, 30 and 20 of 120.
	want := map[string]float64{"a": 3 * perWindow * 70 / 120, "b": 3 * perWindow * 30 / 120, "c": 0}
	sessions := map[string]int{"a": 2, "b": 1, "c": 0}
	var sum float64
	for name, w := range want {
		st, ok := stream(snap, name)
		if !ok || !st.GPU || !st.HasEnergy[GPU] {
			t.Fatalf("%s: %+v, want GPU readings", name, st)
		}
		sum += st.Energy[GPU]
		if math.Abs(st.Energy[GPU]-w) > 1e-6 || math.Abs(st.Dynamic[GPU]-w) > 1e-6 {
			t.Errorf("%s: %.3f J of GPU energy, want %.3f", name, st.Energy[GPU], w)
		}
		if st.EncoderSessions != sessions[name] {
			t.Errorf("%s: %d NVENC sessions, want %d", name, st.EncoderSessions, sessions[name])
		}
	}
	if sum > 3*perWindow {
		t.Errorf("streams got %v J of the GPU's %v", sum, 3*perWindow)
	}
	st, _ := stream(snap, "a")
	if ratio := st.GPUSeconds[Encoder] / st.GPUSeconds[SM]; math.Abs(ratio-6) > 1e-9 || st.GPUSeconds[Decoder] != 0 {
		t.Errorf("a: engine seconds %v, want encoder 6× sm and no decoder", st.GPUSeconds)
	}
	c, _ := stream(snap, "c")
	if c.CPUSeconds < 0.15 || c.Energy[CPU] <= 0 || c.Energy[GPU] != 0 || c.EncoderSessions != 0 {
		t.Errorf("c (no NVENC session): %+v, want CPU time and energy, no GPU energy or session", c)
	}
	if !snap.Available[GPU] {
		t.Error("GPU energy not available")
	}

	// Without per-process encoder figures, the GPU's encoder utilisation
	// (50 %) is shared among the sessions by the pixels each encodes.
	g.set(map[uint32][3]uint32{}, 50, session(a, 1920, 1080, 30), session(b, 1280, 720, 30))
	before := map[string]float64{}
	snap = r.window()
	for _, name := range []string{"a", "b"} {
		st, _ := stream(snap, name)
		before[name] = st.Energy[GPU]
	}
	g.millijoules.Add(perWindow * 1000)
	snap = r.window()
	pa, pb := 1920.0*1080, 1280.0*720
	for name, share := range map[string]float64{"a": pa / (pa + pb), "b": pb / (pa + pb)} {
		st, _ := stream(snap, name)
		if got, w := st.Energy[GPU]-before[name], perWindow*share; math.Abs(got-w) > 1e-6 {
			t.Errorf("%s: %.3f J from its sessions, want %.3f", name, got, w)
		}
	}
}

// TestHungNVML: a driver that hangs inside a call (the mock's energy
// counter blocks) holds up no window: CPU energy is still attributed and
// every window published, GPU energy waits, and health says why.
func TestHungNVML(t *testing.T) {
	g, nv := newGPU(t)
	r := newRig(t, nv)
	r.src.cfg.Interval = 100 * time.Millisecond // windows; NVML samples every second
	r.meter.Start(50 * time.Millisecond)
	cmd, conn := child(t, busy)
	r.open("job", peer(conn, 0))
	g.set(map[uint32][3]uint32{uint32(cmd.Process.Pid): {0, 50, 0}}, 50)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.src.Run(ctx) }()
	gpuDone := make(chan struct{}) // NVML samples on its own, as the runner's shared reader does
	go func() { defer close(gpuDone); nv.Run(ctx) }()
	defer func() { g.hang.Set(false); close(g.release); cancel(); <-done; <-gpuDone }()
	job := func() Stream { st, _ := stream(r.src.Snapshot(), "job"); return st }
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		g.millijoules.Add(1000)
		return job().HasEnergy[GPU] && job().Energy[CPU] > 0
	})

	g.hang.Set(true)
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		err := r.src.Health()
		return err != nil && strings.Contains(err.Error(), "NVML has not answered")
	})
	st, gen := job(), r.src.Generation()
	g.millijoules.Add(100_000)
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		return r.src.Generation() >= gen+5 && job().Energy[CPU] > st.Energy[CPU] && job().CPUSeconds > st.CPUSeconds
	})
	if now := job(); now.Energy[GPU] != st.Energy[GPU] {
		t.Errorf("GPU energy went from %v to %v while NVML hung", st.Energy[GPU], now.Energy[GPU])
	}
}
