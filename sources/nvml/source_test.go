//go:build cgo

package nvml

// No GPU on these machines: go-nvml's own mock (internal/gpumock, over its
// dgxh100 server) stands in for the driver.

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/gpumock"
)

func newSource(t *testing.T, lib gonvml.Interface) (*Source, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	s := New(Config{Lib: lib, Interval: time.Second, Timeout: 200 * time.Millisecond, RetryInterval: time.Second,
		Log: slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))})
	t.Cleanup(s.Close)
	return s, &logs
}

// syncWriter serialises log writes from the sampler's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func mockDevice(m *gpumock.Machine, i int) *server.Device { return m.Devices[i].(*server.Device) }

func TestMultiGPU(t *testing.T) {
	m := gpumock.New(8)
	src, _ := newSource(t, m)
	src.Sample(context.Background())
	snap := src.Snapshot()
	if !snap.Available || src.Health() != nil || snap.DriverVersion != "550.54.15" || len(snap.GPUs) != 8 {
		t.Fatalf("snapshot: available %v err %v driver %q gpus %d", snap.Available, src.Health(), snap.DriverVersion, len(snap.GPUs))
	}
	for i, g := range snap.GPUs {
		f := float64(i)
		want := map[Field]float64{
			PowerWatts: 100 + f, TemperatureCelsius: 40 + f, UtilizationPercent: 10 + f,
			MemoryUsedBytes: (1 + f) * (1 << 30), MemoryTotalBytes: 80 << 30,
			EncoderPercent: 20 + f, DecoderPercent: 5 + f, EncoderSessions: 2, EncoderFPS: 60, EncoderLatencySeconds: 0.0015,
			EnergyJoules: 1000 * (1 + f), PowerLimitWatts: 700,
			SMClockHertz: 1980e6, MemoryClockHertz: 2619e6, GraphicsClockHertz: 1755e6, PerformanceState: 0,
		}
		for field, v := range want {
			if !g.Has(field) || g.Values[field] != v {
				t.Errorf("gpu %d field %d = %v (has %v), want %v", i, field, g.Values[field], g.Has(field), v)
			}
		}
		if g.Has(FanPercent) {
			t.Errorf("gpu %d: fan reported though not supported", i)
		}
		if g.Index != i || g.Name != "NVIDIA H100 80GB HBM3" || !strings.HasSuffix(g.UUID, "00000000000"+string(rune('0'+i))) || g.PCIBusID == "" {
			t.Errorf("gpu %d identity: %+v", i, g)
		}
		if !g.HasThrottle || g.Throttle != 0x4 || len(g.Processes) != 1 || g.Processes[0].PID != uint32(1000+i) || g.Err != nil {
			t.Errorf("gpu %d: throttle %x processes %v err %v", i, g.Throttle, g.Processes, g.Err)
		}
	}
}

func TestNotSupportedFieldsLeftOut(t *testing.T) {
	m := gpumock.New(2)
	// A consumer card: no encoder stats, no energy counter, no throttle reasons.
	d := mockDevice(m, 1)
	d.GetEncoderStatsFunc = func() (int, uint32, uint32, gonvml.Return) { return 0, 0, 0, gonvml.ERROR_NOT_SUPPORTED }
	d.GetTotalEnergyConsumptionFunc = func() (uint64, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	d.GetCurrentClocksEventReasonsFunc = func() (uint64, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	d.GetPerformanceStateFunc = func() (gonvml.Pstates, gonvml.Return) { return gonvml.PSTATE_UNKNOWN, gonvml.SUCCESS }
	src, _ := newSource(t, m)
	src.Sample(context.Background())
	snap := src.Snapshot()
	if src.Health() != nil {
		t.Fatalf("unsupported fields made an error: %v", src.Health())
	}
	g := snap.GPUs[1]
	for _, f := range []Field{EncoderSessions, EncoderFPS, EncoderLatencySeconds, EnergyJoules, PerformanceState} {
		if g.Has(f) {
			t.Errorf("unsupported field %d reported", f)
		}
	}
	if g.HasThrottle || !g.Has(PowerWatts) || g.Errors != 0 {
		t.Errorf("gpu 1: %+v", g)
	}
	if !snap.GPUs[0].Has(EnergyJoules) {
		t.Error("gpu 0 lost a field gpu 1 lacks")
	}
}

func TestFailingGPUAmongHealthy(t *testing.T) {
	m := gpumock.New(4)
	lost := &gpumock.Toggle{}
	d := mockDevice(m, 2)
	d.GetPowerUsageFunc = func() (uint32, gonvml.Return) {
		if lost.On() {
			return 0, gonvml.ERROR_GPU_IS_LOST
		}
		return 123_000, gonvml.SUCCESS
	}
	src, logs := newSource(t, m)
	src.Sample(context.Background())
	if err := src.Health(); err != nil {
		t.Fatal(err)
	}
	lost.Set(true) // the GPU falls off the bus mid-run
	src.Sample(context.Background())
	src.Sample(context.Background())
	snap := src.Snapshot()
	err := src.Health()
	if err == nil || !strings.Contains(err.Error(), "gpu 2") || !strings.Contains(err.Error(), "GetPowerUsage: ERROR_GPU_IS_LOST") {
		t.Errorf("health %v, want gpu 2 named with the failing call", err)
	}
	if g := snap.GPUs[2]; g.Has(PowerWatts) || g.Errors != 2 || !g.Has(TemperatureCelsius) {
		t.Errorf("failing gpu: errors %d, power %v, temperature %v", g.Errors, g.Has(PowerWatts), g.Has(TemperatureCelsius))
	}
	for _, i := range []int{0, 1, 3} {
		if g := snap.GPUs[i]; g.Err != nil || !g.Has(PowerWatts) || g.Errors != 0 {
			t.Errorf("healthy gpu %d disturbed: %+v", i, g)
		}
	}
	if n := strings.Count(logs.String(), "not fully readable"); n != 1 {
		t.Errorf("failure logged %d times over two samples, want once", n)
	}
	lost.Set(false)
	src.Sample(context.Background())
	if err := src.Health(); err != nil || src.Snapshot().GPUs[2].Errors != 2 {
		t.Errorf("after recovery: %v, errors %d (the counter keeps its count)", err, src.Snapshot().GPUs[2].Errors)
	}
}

func TestLibraryMissingThenLoaded(t *testing.T) {
	m := gpumock.New(1)
	loaded := &gpumock.Toggle{}
	m.InitFunc = func() gonvml.Return {
		if loaded.On() {
			return gonvml.SUCCESS
		}
		return gonvml.ERROR_LIBRARY_NOT_FOUND
	}
	src, _ := newSource(t, m)
	src.Sample(context.Background())
	snap := src.Snapshot()
	if snap.Available || len(snap.GPUs) != 0 || src.Health() == nil || !strings.Contains(src.Health().Error(), "libnvidia-ml.so.1 not found") {
		t.Errorf("no library: %+v", snap)
	}
	loaded.Set(true) // the driver loads after boot
	src.Sample(context.Background())
	if s := src.Snapshot(); !s.Available || len(s.GPUs) != 1 || src.Health() != nil {
		t.Errorf("after the driver loaded: %+v", s)
	}
}

// TestRealLibraryMissing uses the real go-nvml binding: on a host without
// the NVIDIA driver (as here) it must report why, not fail.
func TestRealLibraryMissing(t *testing.T) {
	src, _ := newSource(t, nil)
	src.Sample(context.Background())
	snap := src.Snapshot()
	if snap.Available {
		t.Skip("this host has an NVIDIA driver; the missing-library path cannot be seen here")
	}
	if src.Health() == nil || !strings.Contains(src.Health().Error(), "libnvidia-ml.so.1") {
		t.Errorf("without a driver: %v", src.Health())
	}
}

func TestXIDEvents(t *testing.T) {
	m := gpumock.New(4)
	src, _ := newSource(t, m)
	src.Sample(context.Background())
	for _, xid := range []uint64{79, 79, 43} {
		m.Events <- gonvml.EventData{Device: m.Devices[3], EventType: gonvml.EventTypeXidCriticalError, EventData: xid}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		src.Sample(context.Background())
		x := src.Snapshot().GPUs[3].XIDs
		if len(x) == 2 && x[0] == (XIDCount{43, 1}) && x[1] == (XIDCount{79, 2}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("XIDs %v, want 43×1 and 79×2 (a repeated XID counted each time)", x)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if x := src.Snapshot().GPUs[0].XIDs; len(x) != 0 {
		t.Errorf("gpu 0 got another GPU's XIDs: %v", x)
	}
}

func TestHungDriverBounded(t *testing.T) {
	m := gpumock.New(2)
	hang := &gpumock.Toggle{}
	release := make(chan struct{})
	mockDevice(m, 1).GetTemperatureFunc = func(gonvml.TemperatureSensors) (uint32, gonvml.Return) {
		if hang.On() {
			<-release
		}
		return 50, gonvml.SUCCESS
	}
	src, _ := newSource(t, m)
	src.Sample(context.Background())
	before := src.Snapshot()

	hang.Set(true)
	done := make(chan struct{})
	go func() { src.Sample(context.Background()); close(done) }()
	// While the driver hangs the snapshot stays readable and says so.
	deadline := time.Now().Add(5 * time.Second)
	for src.Health() == nil {
		if time.Now().After(deadline) {
			t.Fatal("a hung NVML call was not reported")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := src.Health(); !strings.Contains(err.Error(), "did not answer") {
		t.Errorf("health %v", err)
	}
	if got := src.Snapshot(); len(got.GPUs) != len(before.GPUs) || got.GPUs[0].Values != before.GPUs[0].Values {
		t.Error("the previous values were not kept while the driver hung")
	}
	hang.Set(false)
	close(release)
	<-done
	if err := src.Health(); err != nil {
		t.Errorf("after the driver answered: %v", err)
	}
}

func TestPanickingBindingContained(t *testing.T) {
	m := gpumock.New(2)
	mockDevice(m, 0).GetFanSpeedFunc = nil // moq panics on a nil func
	src, _ := newSource(t, m)
	src.Sample(context.Background())
	snap := src.Snapshot()
	if err := snap.GPUs[0].Err; err == nil || !strings.Contains(err.Error(), "panic") {
		t.Errorf("gpu 0 err %v, want the panic reported", err)
	}
	if snap.GPUs[1].Err != nil || !snap.GPUs[1].Has(PowerWatts) {
		t.Errorf("gpu 1 disturbed: %+v", snap.GPUs[1])
	}
	if src.Health() == nil || !strings.Contains(src.Health().Error(), "gpu 0") {
		t.Errorf("health %v does not name the failing gpu", src.Health())
	}
}

// TestNoShutdownWhileInsideLibrary: a run stopped while a collection hangs
// inside NVML waits for the call to return before Shutdown, and never
// shuts down under it.
func TestNoShutdownWhileInsideLibrary(t *testing.T) {
	m := gpumock.New(1)
	var inside, shutdownInside atomic.Bool
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	mockDevice(m, 0).GetTemperatureFunc = func(gonvml.TemperatureSensors) (uint32, gonvml.Return) {
		inside.Store(true)
		defer inside.Store(false)
		select {
		case entered <- struct{}{}:
			<-release
		default:
		}
		return 50, gonvml.SUCCESS
	}
	shutdown := m.ShutdownFunc
	m.ShutdownFunc = func() gonvml.Return {
		shutdownInside.Store(inside.Load())
		return shutdown()
	}
	src, _ := newSource(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { src.Run(ctx); close(ran) }()
	<-entered
	cancel()
	time.AfterFunc(300*time.Millisecond, func() { close(release) })
	<-ran
	if shutdownInside.Load() {
		t.Error("NVML was shut down while a call was still inside it")
	}
	if !inside.Load() && src.initialized {
		t.Error("NVML left loaded although the call returned within CloseTimeout")
	}
}
