//go:build cgo

package nvml

// No GPU on these machines: go-nvml's own mock (internal/testkit/gpumock, over its
// dgxh100 server) stands in for the driver.

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/gpumock"
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
	// A repeated XID is counted each time.
	exportertest.WaitFor(t, 5*time.Second, func() bool {
		src.Sample(context.Background())
		x := src.Snapshot().GPUs[3].XIDs
		return len(x) == 2 && x[0] == (XIDCount{43, 1}) && x[1] == (XIDCount{79, 2})
	})
	if x := src.Snapshot().GPUs[0].XIDs; len(x) != 0 {
		t.Errorf("gpu 0 got another GPU's XIDs: %v", x)
	}
	if last := src.Snapshot().GPUs[3].LastXID; last.IsZero() || time.Since(last) > 5*time.Second {
		t.Errorf("gpu 3 latest XID at %v, want just now", last)
	}
	if last := src.Snapshot().GPUs[0].LastXID; !last.IsZero() {
		t.Errorf("gpu 0 has a latest XID (%v) without any", last)
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
	exportertest.WaitFor(t, 5*time.Second, func() bool { return src.Health() != nil })
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
		t.Error("NVML left loaded although the call returned within closeTimeout")
	}
}

// TestCloseWithHungEventWait: a driver hung in the event set's Wait does
// not hang Close (and with it the exporter's shutdown): Close gives up
// after closeTimeout and leaves NVML loaded rather than shut it down under
// the call; once Wait returns, a later Close shuts NVML down.
func TestCloseWithHungEventWait(t *testing.T) {
	m := gpumock.New(1)
	release := make(chan struct{})
	waiting := make(chan struct{})
	var once sync.Once
	m.EventSetCreateFunc = func() (gonvml.EventSet, gonvml.Return) {
		return &mock.EventSet{
			WaitFunc: func(uint32) (gonvml.EventData, gonvml.Return) {
				once.Do(func() { close(waiting) })
				<-release // ignores its timeout, as a hung driver does
				return gonvml.EventData{}, gonvml.ERROR_TIMEOUT
			},
			FreeFunc: func() gonvml.Return { return gonvml.SUCCESS },
		}, gonvml.SUCCESS
	}
	var shutdowns atomic.Int32
	shutdown := m.ShutdownFunc
	m.ShutdownFunc = func() gonvml.Return { shutdowns.Add(1); return shutdown() }
	src, _ := newSource(t, m)
	src.Sample(context.Background())
	<-waiting

	closed := make(chan struct{})
	go func() { src.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second): // a guard against hanging the test run, not a speed check
		close(release)
		t.Fatal("Close hung on an event Wait that does not return")
	}
	if n := shutdowns.Load(); n != 0 {
		t.Errorf("NVML shut down %d times while the event watcher was still inside Wait", n)
	}
	close(release)
	src.Close()
	if n := shutdowns.Load(); n != 1 {
		t.Errorf("NVML shut down %d times after Wait returned, want once", n)
	}
}

// TestParityReadings: PCIe, ECC, row remapping, violation time, per-process
// utilisation, encoder sessions and process names as the mock gives them.
func TestParityReadings(t *testing.T) {
	m := gpumock.New(2)
	src, _ := newSource(t, m)
	src.Sample(context.Background())
	if err := src.Health(); err != nil {
		t.Fatal(err)
	}
	for i, g := range src.Snapshot().GPUs {
		f := float64(i)
		want := map[Field]float64{
			PCIeTxBytesPerSecond: (100 + f) * 1024, PCIeRxBytesPerSecond: (200 + f) * 1024, PCIeReplays: 3 + f,
			ECCCorrected: 7 + f, ECCUncorrected: f,
			RemappedRowsCorrectable: 1, RemappedRowsUncorrectable: 0, RemappedRowsPending: 0, RemappedRowsFailed: 0,
			ThrottlePowerSeconds: 0.5, ThrottleThermalSeconds: 1, ThrottleAppClocksSeconds: 5.5, ThrottleBaseClocksSeconds: 6,
		}
		for field, v := range want {
			if !g.Has(field) || g.Values[field] != v {
				t.Errorf("gpu %d field %d = %v (has %v), want %v", i, field, g.Values[field], g.Has(field), v)
			}
		}
		pid := uint32(1000 + i)
		if u := g.ProcessUtilization; len(u) != 1 || u[0].PID != pid || u[0].SMPercent != 30+f || u[0].EncoderPercent != 20+f ||
			u[0].DecoderPercent != 5+f || time.Since(u[0].Timestamp) > time.Minute {
			t.Errorf("gpu %d process utilisation %+v", i, u)
		}
		wantSessions := []EncoderSession{
			{SessionID: 1, PID: pid, Codec: "h264", Width: 1920, Height: 1080, AverageFPS: 60, AverageLatency: 1500 * time.Microsecond},
			{SessionID: 2, PID: pid, Codec: "hevc", Width: 1920, Height: 1080, AverageFPS: 60, AverageLatency: 1500 * time.Microsecond},
		}
		if !slices.Equal(g.EncoderSessions, wantSessions) {
			t.Errorf("gpu %d encoder sessions %+v", i, g.EncoderSessions)
		}
		if !slices.Equal(g.ProcessNames, []ProcessName{{pid, "ffmpeg"}}) || g.ProcessesLeftOut != 0 || g.MIG {
			t.Errorf("gpu %d names %v, left out %d, MIG %v", i, g.ProcessNames, g.ProcessesLeftOut, g.MIG)
		}
	}
}

// TestECCAndRemappedRowsUnsupported: a card without ECC or row remapping
// (consumer cards, ECC off) leaves those readings out, silently.
func TestECCAndRemappedRowsUnsupported(t *testing.T) {
	m := gpumock.New(2)
	d := mockDevice(m, 1)
	d.GetTotalEccErrorsFunc = func(gonvml.MemoryErrorType, gonvml.EccCounterType) (uint64, gonvml.Return) {
		return 0, gonvml.ERROR_NOT_SUPPORTED
	}
	d.GetRemappedRowsFunc = func() (int, int, bool, bool, gonvml.Return) { return 0, 0, false, false, gonvml.ERROR_NOT_SUPPORTED }
	d.GetPcieReplayCounterFunc = func() (int, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	src, logs := newSource(t, m)
	src.Sample(context.Background())
	if err := src.Health(); err != nil {
		t.Fatalf("unsupported readings made an error: %v", err)
	}
	g := src.Snapshot().GPUs[1]
	for _, f := range []Field{ECCCorrected, ECCUncorrected, RemappedRowsCorrectable, RemappedRowsUncorrectable,
		RemappedRowsPending, RemappedRowsFailed, PCIeReplays} {
		if g.Has(f) {
			t.Errorf("unsupported field %d reported as %v", f, g.Values[f])
		}
	}
	if g.Errors != 0 || g.Err != nil || !g.Has(PCIeTxBytesPerSecond) {
		t.Errorf("gpu 1: errors %d, err %v", g.Errors, g.Err)
	}
	if !src.Snapshot().GPUs[0].Has(ECCUncorrected) {
		t.Error("gpu 0 lost a reading gpu 1 lacks")
	}
	if strings.Contains(logs.String(), "not fully readable") {
		t.Errorf("unsupported readings logged as a failure:\n%s", logs)
	}
}

// TestViolationTimeBetweenSamples: a power throttle that begins and ends
// between two samples is invisible in the throttle reasons, which only say
// what is active at the sample, but its time adds up in the violation
// counter, sample after sample.
func TestViolationTimeBetweenSamples(t *testing.T) {
	m := gpumock.New(1)
	d := mockDevice(m, 0)
	d.GetCurrentClocksEventReasonsFunc = func() (uint64, gonvml.Return) { return 0, gonvml.SUCCESS } // never caught active
	var throttled atomic.Uint64                                                                      // ns the driver has counted
	d.GetViolationStatusFunc = func(p gonvml.PerfPolicyType) (gonvml.ViolationTime, gonvml.Return) {
		if p != gonvml.PERF_POLICY_POWER {
			return gonvml.ViolationTime{}, gonvml.SUCCESS
		}
		return gonvml.ViolationTime{ViolationTime: throttled.Load()}, gonvml.SUCCESS
	}
	src, _ := newSource(t, m)
	var got []float64
	for _, burst := range []uint64{0, 300_000_000, 0, 50_000_000} { // throttles between samples
		throttled.Add(burst)
		src.Sample(context.Background())
		g := src.Snapshot().GPUs[0]
		if !g.HasThrottle || g.Throttle != 0 {
			t.Fatalf("throttle reasons %x, want none active at any sample", g.Throttle)
		}
		got = append(got, g.Values[ThrottlePowerSeconds])
	}
	if want := []float64{0, 0.3, 0.3, 0.35}; !slices.Equal(got, want) {
		t.Errorf("power throttle seconds over four samples %v, want %v", got, want)
	}
}

// TestProcessUtilizationSinceLastSeen: each collection asks NVML only for
// samples newer than the newest it has read, so each covers the window
// since the previous collection; no new sample (NOT_FOUND: no process used
// the GPU) leaves no entries and is no error.
func TestProcessUtilizationSinceLastSeen(t *testing.T) {
	m := gpumock.New(1)
	var asked []uint64
	next := []struct {
		samples []gonvml.ProcessUtilizationSample
		ret     gonvml.Return
	}{
		{[]gonvml.ProcessUtilizationSample{{Pid: 7, TimeStamp: 1_000, SmUtil: 40}, {Pid: 8, TimeStamp: 1_500, EncUtil: 90}}, gonvml.SUCCESS},
		{nil, gonvml.ERROR_NOT_FOUND},
		// NVML should give one sample per process; should it give more, the newest counts.
		{[]gonvml.ProcessUtilizationSample{{Pid: 7, TimeStamp: 2_500, SmUtil: 10}, {Pid: 7, TimeStamp: 2_000, SmUtil: 99}}, gonvml.SUCCESS},
	}
	mockDevice(m, 0).GetProcessUtilizationFunc = func(lastSeen uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
		asked = append(asked, lastSeen)
		r := next[0]
		next = next[1:]
		return r.samples, r.ret
	}
	src, _ := newSource(t, m)
	var got [][]ProcessUtilization
	for range 3 {
		src.Sample(context.Background())
		if err := src.Health(); err != nil {
			t.Fatal(err)
		}
		got = append(got, src.Snapshot().GPUs[0].ProcessUtilization)
	}
	if want := []uint64{0, 1_500, 1_500}; !slices.Equal(asked, want) {
		t.Errorf("asked for samples after %v, want %v", asked, want)
	}
	want := [][]ProcessUtilization{
		{{PID: 7, SMPercent: 40, Timestamp: time.UnixMicro(1_000)}, {PID: 8, EncoderPercent: 90, Timestamp: time.UnixMicro(1_500)}},
		nil,
		{{PID: 7, SMPercent: 10, Timestamp: time.UnixMicro(2_500)}},
	}
	for i := range want {
		if !slices.EqualFunc(got[i], want[i], func(a, b ProcessUtilization) bool { return a == b }) {
			t.Errorf("collection %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestProcessesCapped: a GPU with more processes than MaxProcesses keeps
// the largest users in each list, says how many it left out, and names
// only what it kept.
func TestProcessesCapped(t *testing.T) {
	const n = MaxProcesses + 44
	m := gpumock.New(1)
	d := mockDevice(m, 0)
	d.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
		out := make([]gonvml.ProcessInfo, n)
		for i := range out {
			out[i] = gonvml.ProcessInfo{Pid: uint32(10_000 + i), UsedGpuMemory: uint64(i) << 20} // the later, the larger
		}
		return out, gonvml.SUCCESS
	}
	d.GetProcessUtilizationFunc = func(uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
		out := make([]gonvml.ProcessUtilizationSample, n-4)
		for i := range out {
			out[i] = gonvml.ProcessUtilizationSample{Pid: uint32(10_000 + i), TimeStamp: 1, SmUtil: uint32(n - i)} // the earlier, the busier
		}
		return out, gonvml.SUCCESS
	}
	d.GetEncoderSessionsFunc = func() ([]gonvml.EncoderSessionInfo, gonvml.Return) {
		return make([]gonvml.EncoderSessionInfo, n+10), gonvml.SUCCESS
	}
	var named atomic.Int64
	m.SystemGetProcessNameFunc = func(pid int) (string, gonvml.Return) { named.Add(1); return "ffmpeg", gonvml.SUCCESS }
	src, _ := newSource(t, m)
	src.Sample(context.Background())
	g := src.Snapshot().GPUs[0]
	if len(g.Processes) != MaxProcesses || len(g.ProcessUtilization) != MaxProcesses || len(g.EncoderSessions) != MaxProcesses {
		t.Fatalf("kept %d processes, %d utilisation samples, %d sessions; want %d each",
			len(g.Processes), len(g.ProcessUtilization), len(g.EncoderSessions), MaxProcesses)
	}
	if g.ProcessesLeftOut != 54 {
		t.Errorf("left out %d, want 54 (the longest list: sessions)", g.ProcessesLeftOut)
	}
	for _, p := range g.Processes {
		if p.PID < 10_000+n-MaxProcesses {
			t.Errorf("kept pid %d though larger users were left out", p.PID)
		}
	}
	for _, p := range g.ProcessUtilization {
		if p.PID >= 10_000+MaxProcesses {
			t.Errorf("kept utilisation of pid %d though busier processes were left out", p.PID)
		}
	}
	// Memory keeps pids 10044..10299, utilisation 10000..10255: 300 distinct.
	if len(g.ProcessNames) != 300 || named.Load() != 300 {
		t.Errorf("%d names from %d lookups, want the 300 kept processes", len(g.ProcessNames), named.Load())
	}
}

// TestMIGMode: a GPU in MIG mode reports what NVML gives for it, leaves the
// rest out without an error, and says so in the snapshot's notes.
func TestMIGMode(t *testing.T) {
	m := gpumock.New(2)
	d := mockDevice(m, 0)
	if ret, _ := d.SetMigMode(gonvml.DEVICE_MIG_ENABLE); ret != gonvml.SUCCESS {
		t.Fatal(ret)
	}
	// What NVML does not give for a GPU in MIG mode.
	d.GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) { return gonvml.Utilization{}, gonvml.ERROR_NOT_SUPPORTED }
	d.GetEncoderUtilizationFunc = func() (uint32, uint32, gonvml.Return) { return 0, 0, gonvml.ERROR_NOT_SUPPORTED }
	d.GetEncoderStatsFunc = func() (int, uint32, uint32, gonvml.Return) { return 0, 0, 0, gonvml.ERROR_NOT_SUPPORTED }
	d.GetEncoderSessionsFunc = func() ([]gonvml.EncoderSessionInfo, gonvml.Return) { return nil, gonvml.ERROR_NOT_SUPPORTED }
	d.GetProcessUtilizationFunc = func(uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
		return nil, gonvml.ERROR_NOT_SUPPORTED
	}
	src, _ := newSource(t, m)
	src.Sample(context.Background())
	if err := src.Health(); err != nil {
		t.Fatalf("MIG mode made an error: %v", err)
	}
	snap := src.Snapshot()
	g := snap.GPUs[0]
	if !g.MIG || snap.GPUs[1].MIG {
		t.Fatalf("MIG %v, %v; want gpu 0 only", g.MIG, snap.GPUs[1].MIG)
	}
	for _, f := range []Field{UtilizationPercent, EncoderPercent, EncoderSessions, EncoderFPS} {
		if g.Has(f) {
			t.Errorf("field %d invented for a MIG GPU: %v", f, g.Values[f])
		}
	}
	if g.ProcessUtilization != nil || g.EncoderSessions != nil {
		t.Errorf("per-process readings invented: %v %v", g.ProcessUtilization, g.EncoderSessions)
	}
	if !g.Has(PowerWatts) || !g.Has(MemoryUsedBytes) || !g.Has(ECCCorrected) || len(g.Processes) != 1 {
		t.Errorf("readings NVML gives were lost: %+v", g)
	}
	notes := snap.Notes()
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "gpu 0 is in MIG mode") {
		t.Fatalf("notes %q, want one for gpu 0", notes)
	}
	for _, call := range []string{"GetUtilizationRates", "GetEncoderStats", "GetEncoderSessions", "GetProcessUtilization"} {
		if !strings.Contains(notes[0], call) {
			t.Errorf("note %q does not name %s", notes[0], call)
		}
	}
	if g1 := snap.GPUs[1]; !g1.Has(UtilizationPercent) || len(g1.ProcessUtilization) != 1 {
		t.Errorf("gpu 1, not in MIG mode, disturbed: %+v", g1)
	}
}

// TestProcessNames: a process that exits before it is named is left out
// silently; a name lookup that fails otherwise costs one error per sample,
// not one per process.
func TestProcessNames(t *testing.T) {
	m := gpumock.New(1)
	d := mockDevice(m, 0)
	d.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
		return []gonvml.ProcessInfo{{Pid: 1}, {Pid: 2}, {Pid: 3}}, gonvml.SUCCESS
	}
	broken := &gpumock.Toggle{}
	m.SystemGetProcessNameFunc = func(pid int) (string, gonvml.Return) {
		switch {
		case broken.On():
			return "", gonvml.ERROR_UNKNOWN
		case pid == 2:
			return "", gonvml.ERROR_NOT_FOUND // exited
		}
		return "ffmpeg", gonvml.SUCCESS
	}
	src, _ := newSource(t, m)
	src.Sample(context.Background())
	g := src.Snapshot().GPUs[0]
	if err := src.Health(); err != nil || !slices.Equal(g.ProcessNames, []ProcessName{{1, "ffmpeg"}, {3, "ffmpeg"}, {1000, "ffmpeg"}}) {
		t.Errorf("names %v, health %v; want pid 2 left out silently", g.ProcessNames, err)
	}
	broken.Set(true)
	src.Sample(context.Background())
	g = src.Snapshot().GPUs[0]
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "SystemGetProcessName: ERROR_UNKNOWN") || g.Errors != 1 {
		t.Errorf("health %v, errors %d; want the failure once", err, g.Errors)
	}
	if len(g.ProcessNames) != 0 || len(g.Processes) != 3 {
		t.Errorf("names %v, processes %v", g.ProcessNames, g.Processes)
	}
}
