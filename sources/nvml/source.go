//go:build cgo

package nvml

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// Lib is the NVML library as go-nvml calls it (its mock, in tests).
type Lib = gonvml.Interface

// Config is what the source needs.
type Config struct {
	Lib           Lib           // nil: the system's libnvidia-ml through go-nvml
	Interval      time.Duration // between samples
	Timeout       time.Duration // a sample taking longer is reported as stuck
	RetryInterval time.Duration // between initialisation attempts while NVML is missing
	Log           *slog.Logger
}

// Source samples NVIDIA GPUs. Its health is nil when NVML is up and every
// GPU answered.
type Source struct {
	*sampling.Latest[Snapshot]
	cfg Config

	mu          sync.Mutex // serialises Sample and Close
	initialized bool
	driver      string
	devices     []*device
	stopEvents  context.CancelFunc
	eventsDone  chan struct{}
	inLibrary   sync.WaitGroup // collections still inside NVML
}

// device is one GPU handle and what never changes about it.
type device struct {
	h                    gonvml.Device
	index                int
	uuid, name, pciBusID string
	errors               atomic.Uint64

	xidMu   sync.Mutex
	xids    map[uint64]uint64
	lastXID time.Time

	utilSeen uint64 // NVML timestamp (µs) of the newest process utilisation sample read
}

// New returns a source; nothing is read until Sample or Run.
func New(cfg Config) *Source {
	if cfg.Lib == nil {
		cfg.Lib = gonvml.New()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Source{cfg: cfg, Latest: sampling.NewLatest(cfg.Log, "NVIDIA GPUs", &Snapshot{}, errors.New("NVML not sampled yet"))}
}

// Run samples until ctx ends, retrying initialisation while NVML is
// missing (drivers can load after boot), then shuts NVML down.
func (s *Source) Run(ctx context.Context) {
	defer s.Close()
	s.Every(ctx, s.interval, s.Sample)
}

// interval is the sampling interval, or the retry interval while NVML is missing.
func (s *Source) interval() time.Duration {
	if !s.Snapshot().Available {
		return s.cfg.RetryInterval
	}
	return s.cfg.Interval
}

// Sample initialises NVML if needed, then reads every GPU once, waiting at
// most Timeout: a driver that hangs leaves the last values in place with an
// error, and the next sample starts only once the stuck one has returned.
func (s *Source) Sample(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	if !s.initialized {
		if err := s.init(); err != nil {
			s.Publish(&Snapshot{}, err, start)
			return
		}
	}
	type result struct {
		snap *Snapshot
		err  error
	}
	done := make(chan result, 1)
	s.inLibrary.Add(1)
	go func() {
		defer s.inLibrary.Done()
		snap, err := s.collect()
		done <- result{snap, err}
	}()
	select {
	case r := <-done:
		s.Publish(r.snap, r.err, start)
		return
	case <-time.After(s.cfg.Timeout):
	case <-ctx.Done():
	}
	stale := *s.Snapshot()
	s.Publish(&stale, fmt.Errorf("NVML did not answer within %v; showing the previous sample", s.cfg.Timeout), start)
	select {
	case r := <-done:
		s.Publish(r.snap, r.err, start)
	case <-ctx.Done():
	}
}

// init loads NVML, finds the GPUs and starts watching their XID events.
func (s *Source) init() error {
	lib := s.cfg.Lib
	if ret := lib.Init(); ret != gonvml.SUCCESS {
		if ret == gonvml.ERROR_LIBRARY_NOT_FOUND {
			return fmt.Errorf("NVIDIA driver library libnvidia-ml.so.1 not found (%v): install the NVIDIA driver; retrying every %v", ret, s.cfg.RetryInterval)
		}
		return fmt.Errorf("NVML init: %v; retrying every %v", ret, s.cfg.RetryInterval)
	}
	count, ret := lib.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		lib.Shutdown()
		return fmt.Errorf("NVML device count: %v", ret)
	}
	driver, _ := lib.SystemGetDriverVersion()
	var devices []*device
	for i := range count {
		h, ret := lib.DeviceGetHandleByIndex(i)
		if ret != gonvml.SUCCESS {
			s.cfg.Log.Warn("GPU handle unavailable; skipping it", "gpu", i, "err", ret)
			continue
		}
		d := &device{h: h, index: i, xids: map[uint64]uint64{}}
		d.uuid, _ = h.GetUUID()
		d.name, _ = h.GetName()
		if pci, ret := h.GetPciInfo(); ret == gonvml.SUCCESS {
			if d.pciBusID = cString(pci.BusId[:]); d.pciBusID == "" {
				d.pciBusID = cString(pci.BusIdLegacy[:])
			}
		}
		devices = append(devices, d)
	}
	s.driver, s.devices, s.initialized = driver, devices, true
	s.watchXIDs()
	s.cfg.Log.Info("NVML ready", "gpus", len(devices), "driver", driver)
	return nil
}

// watchXIDs counts XID errors from NVML's event stream, so a repeated XID
// is seen each time. GPUs that cannot deliver events are skipped.
func (s *Source) watchXIDs() {
	set, ret := s.cfg.Lib.EventSetCreate()
	if ret != gonvml.SUCCESS {
		s.cfg.Log.Info("XID events unavailable", "err", ret)
		return
	}
	for _, d := range s.devices {
		if ret := d.h.RegisterEvents(gonvml.EventTypeXidCriticalError, set); ret != gonvml.SUCCESS && ret != gonvml.ERROR_NOT_SUPPORTED {
			s.cfg.Log.Info("XID events unavailable for a GPU", "gpu", d.index, "err", ret)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopEvents, s.eventsDone = cancel, make(chan struct{})
	go func() {
		defer close(s.eventsDone)
		defer set.Free()
		for ctx.Err() == nil {
			data, ret := set.Wait(500)
			switch {
			case ret == gonvml.SUCCESS && data.EventType&gonvml.EventTypeXidCriticalError != 0:
				for _, d := range s.devices {
					if d.h == data.Device {
						d.xidMu.Lock()
						d.xids[data.EventData]++
						d.lastXID = time.Now()
						d.xidMu.Unlock()
					}
				}
			case ret != gonvml.SUCCESS && ret != gonvml.ERROR_TIMEOUT:
				select { // not a timeout: do not spin on a broken event set
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	}()
}

// Close stops the event watcher and shuts NVML down, but never while a
// call is still inside the library: a driver that hangs (in a collection
// or in the event set's Wait) past closeTimeout keeps NVML loaded (the
// process is ending) rather than have Shutdown pull the library from under
// the call, and Close returns so that shutdown goes on.
func (s *Source) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	deadline := time.NewTimer(closeTimeout)
	defer deadline.Stop()
	if s.stopEvents != nil {
		s.stopEvents()
		select {
		case <-s.eventsDone:
			s.stopEvents = nil
		case <-deadline.C: // stopEvents stays set: a later Close waits again
			s.cfg.Log.Warn("NVML event wait is still running; leaving NVML loaded", "waited", closeTimeout)
			return
		}
	}
	if !s.initialized {
		return
	}
	returned := make(chan struct{})
	go func() { s.inLibrary.Wait(); close(returned) }()
	select {
	case <-returned:
		s.cfg.Lib.Shutdown()
		s.initialized = false
	case <-deadline.C:
		s.cfg.Log.Warn("an NVML call is still running; leaving NVML loaded", "waited", closeTimeout)
	}
}

// closeTimeout bounds how long Close waits for calls inside NVML.
const closeTimeout = 2 * time.Second

// collect reads every GPU; one failing GPU does not stop the others.
func (s *Source) collect() (*Snapshot, error) {
	snap := &Snapshot{Available: true, DriverVersion: s.driver}
	var errs []error
	for _, d := range s.devices {
		g := d.read(s.cfg.Lib)
		if g.Err != nil {
			errs = append(errs, fmt.Errorf("gpu %d: %w", d.index, g.Err))
		}
		snap.GPUs = append(snap.GPUs, g)
	}
	return snap, errors.Join(errs...)
}

// read takes one GPU's readings. Fields the GPU does not support are left
// out silently; other failures are counted and reported. lib names the
// processes.
func (d *device) read(lib gonvml.Interface) (g GPU) {
	g = GPU{Index: d.index, UUID: d.uuid, Name: d.name, PCIBusID: d.pciBusID, LastSample: time.Now()}
	var failed []string
	defer func() {
		if r := recover(); r != nil { // a broken binding must not take the exporter down
			failed = append(failed, fmt.Sprint("panic: ", r))
		}
		if len(failed) > 0 {
			d.errors.Add(uint64(len(failed)))
			g.Err = errors.New(strings.Join(failed, "; "))
		}
		g.Errors = d.errors.Load()
		g.XIDs, g.LastXID = d.xidCounts()
	}()
	// ok reports whether a call succeeded; a field the GPU does not support
	// (or does not let us read) is left out silently, anything else counts.
	ok := func(call string, ret gonvml.Return) bool {
		switch ret {
		case gonvml.SUCCESS:
			return true
		case gonvml.ERROR_NOT_SUPPORTED:
			g.Unsupported = append(g.Unsupported, call)
		case gonvml.ERROR_NO_PERMISSION:
		default:
			failed = append(failed, call+": "+ret.Error())
		}
		return false
	}
	set := func(f Field, v float64) { g.Values[f], g.Known = v, g.Known|1<<f }

	h := d.h
	if mw, ret := h.GetPowerUsage(); ok("GetPowerUsage", ret) {
		set(PowerWatts, float64(mw)/1e3)
	}
	if c, ret := h.GetTemperature(gonvml.TEMPERATURE_GPU); ok("GetTemperature", ret) {
		set(TemperatureCelsius, float64(c))
	}
	if u, ret := h.GetUtilizationRates(); ok("GetUtilizationRates", ret) {
		set(UtilizationPercent, float64(u.Gpu))
	}
	if m, ret := h.GetMemoryInfo(); ok("GetMemoryInfo", ret) {
		set(MemoryUsedBytes, float64(m.Used))
		set(MemoryTotalBytes, float64(m.Total))
	}
	if u, _, ret := h.GetEncoderUtilization(); ok("GetEncoderUtilization", ret) {
		set(EncoderPercent, float64(u))
	}
	if u, _, ret := h.GetDecoderUtilization(); ok("GetDecoderUtilization", ret) {
		set(DecoderPercent, float64(u))
	}
	if sessions, fps, latencyUS, ret := h.GetEncoderStats(); ok("GetEncoderStats", ret) {
		set(EncoderSessions, float64(sessions))
		set(EncoderFPS, float64(fps))
		set(EncoderLatencySeconds, float64(latencyUS)/1e6)
	}
	if mj, ret := h.GetTotalEnergyConsumption(); ok("GetTotalEnergyConsumption", ret) {
		set(EnergyJoules, float64(mj)/1e3)
	}
	if mw, ret := h.GetEnforcedPowerLimit(); ok("GetEnforcedPowerLimit", ret) {
		set(PowerLimitWatts, float64(mw)/1e3)
	}
	for _, c := range []struct {
		f    Field
		typ  gonvml.ClockType
		call string
	}{
		{SMClockHertz, gonvml.CLOCK_SM, "GetClockInfo(SM)"},
		{MemoryClockHertz, gonvml.CLOCK_MEM, "GetClockInfo(MEM)"},
		{GraphicsClockHertz, gonvml.CLOCK_GRAPHICS, "GetClockInfo(GRAPHICS)"},
	} {
		if mhz, ret := h.GetClockInfo(c.typ); ok(c.call, ret) {
			set(c.f, float64(mhz)*1e6)
		}
	}
	if pct, ret := h.GetFanSpeed(); ok("GetFanSpeed", ret) {
		set(FanPercent, float64(pct))
	}
	if p, ret := h.GetPerformanceState(); ok("GetPerformanceState", ret) && p != gonvml.PSTATE_UNKNOWN {
		set(PerformanceState, float64(p))
	}
	if reasons, ret := h.GetCurrentClocksEventReasons(); ok("GetCurrentClocksEventReasons", ret) {
		g.Throttle, g.HasThrottle = reasons, true
	}
	if procs, ret := h.GetComputeRunningProcesses(); ok("GetComputeRunningProcesses", ret) {
		for _, p := range procs {
			g.Processes = append(g.Processes, Process{PID: p.Pid, UsedMemoryBytes: p.UsedGpuMemory})
		}
	}
	if cur, _, ret := h.GetMigMode(); ok("GetMigMode", ret) {
		g.MIG = cur == gonvml.DEVICE_MIG_ENABLE
	}
	for _, p := range pcieCounters {
		if kb, ret := h.GetPcieThroughput(p.counter); ok(p.call, ret) {
			set(p.f, float64(kb)*1024) // NVML says KB/s; NVIDIA's own samples divide by 1024
		}
	}
	if n, ret := h.GetPcieReplayCounter(); ok("GetPcieReplayCounter", ret) {
		set(PCIeReplays, float64(n))
	}
	for _, e := range eccCounters {
		if n, ret := h.GetTotalEccErrors(e.typ, gonvml.VOLATILE_ECC); ok(e.call, ret) {
			set(e.f, float64(n))
		}
	}
	if corr, unc, pending, failed, ret := h.GetRemappedRows(); ok("GetRemappedRows", ret) {
		set(RemappedRowsCorrectable, float64(corr))
		set(RemappedRowsUncorrectable, float64(unc))
		set(RemappedRowsPending, boolFloat(pending))
		set(RemappedRowsFailed, boolFloat(failed))
	}
	for i, t := range ThrottleTimes {
		if v, ret := h.GetViolationStatus(gonvml.PerfPolicyType(t.Policy)); ok(violationCalls[i], ret) {
			set(t.Field, float64(v.ViolationTime)/1e9)
		}
	}
	// Samples newer than the last one seen: each covers the window since the
	// previous collection. NOT_FOUND: no process used the GPU in it.
	if samples, ret := h.GetProcessUtilization(d.utilSeen); ret != gonvml.ERROR_NOT_FOUND && ok("GetProcessUtilization", ret) {
		g.ProcessUtilization = d.utilization(samples)
	}
	if sessions, ret := h.GetEncoderSessions(); ok("GetEncoderSessions", ret) {
		for _, s := range sessions {
			g.EncoderSessions = append(g.EncoderSessions, EncoderSession{
				SessionID: s.SessionId, PID: s.Pid, Codec: codec(s.CodecType), Width: s.HResolution, Height: s.VResolution,
				AverageFPS: float64(s.AverageFps), AverageLatency: time.Duration(s.AverageLatency) * time.Microsecond,
			})
		}
	}

	var left [3]int
	g.Processes, left[0] = keepLargest(g.Processes, func(p Process) float64 { return float64(p.UsedMemoryBytes) })
	g.ProcessUtilization, left[1] = keepLargest(g.ProcessUtilization, func(p ProcessUtilization) float64 {
		return p.SMPercent + p.EncoderPercent + p.DecoderPercent
	})
	g.EncoderSessions, left[2] = keepLargest(g.EncoderSessions, func(s EncoderSession) float64 { return s.AverageFPS })
	g.ProcessesLeftOut = slices.Max(left[:])
	g.ProcessNames = processNames(lib, &g, func(ret gonvml.Return) {
		failed = append(failed, "SystemGetProcessName: "+ret.Error())
	})
	return g
}

var pcieCounters = []struct {
	f       Field
	counter gonvml.PcieUtilCounter
	call    string
}{
	{PCIeTxBytesPerSecond, gonvml.PCIE_UTIL_TX_BYTES, "GetPcieThroughput(TX)"},
	{PCIeRxBytesPerSecond, gonvml.PCIE_UTIL_RX_BYTES, "GetPcieThroughput(RX)"},
}

var eccCounters = []struct {
	f    Field
	typ  gonvml.MemoryErrorType
	call string
}{
	{ECCCorrected, gonvml.MEMORY_ERROR_TYPE_CORRECTED, "GetTotalEccErrors(CORRECTED)"},
	{ECCUncorrected, gonvml.MEMORY_ERROR_TYPE_UNCORRECTED, "GetTotalEccErrors(UNCORRECTED)"},
}

// violationCalls names the GetViolationStatus call of each of ThrottleTimes.
var violationCalls = func() []string {
	out := make([]string, len(ThrottleTimes))
	for i, t := range ThrottleTimes {
		out[i] = "GetViolationStatus(" + t.Reason + ")"
	}
	return out
}()

// utilization turns NVML's samples into one entry per process (the newest,
// should NVML return more than one) and remembers the newest timestamp, so
// that the next collection asks only for what came after it.
func (d *device) utilization(samples []gonvml.ProcessUtilizationSample) []ProcessUtilization {
	newest := make(map[uint32]gonvml.ProcessUtilizationSample, len(samples))
	for _, s := range samples {
		if prev, seen := newest[s.Pid]; !seen || s.TimeStamp > prev.TimeStamp {
			newest[s.Pid] = s
		}
		d.utilSeen = max(d.utilSeen, s.TimeStamp)
	}
	out := make([]ProcessUtilization, 0, len(newest))
	for _, s := range newest {
		out = append(out, ProcessUtilization{PID: s.Pid, SMPercent: float64(s.SmUtil), EncoderPercent: float64(s.EncUtil),
			DecoderPercent: float64(s.DecUtil), Timestamp: time.UnixMicro(int64(s.TimeStamp))})
	}
	slices.SortFunc(out, func(a, b ProcessUtilization) int { return cmp.Compare(a.PID, b.PID) })
	return out
}

// keepLargest keeps the MaxProcesses entries of xs with the largest size,
// and says how many it left out.
func keepLargest[T any](xs []T, size func(T) float64) ([]T, int) {
	if len(xs) <= MaxProcesses {
		return xs, 0
	}
	slices.SortStableFunc(xs, func(a, b T) int { return cmp.Compare(size(b), size(a)) })
	return xs[:MaxProcesses:MaxProcesses], len(xs) - MaxProcesses
}

// processNames asks NVML for the name of each process in g's per-process
// series. A process that has exited (or that NVML may not see) is left
// out; fail hears of the first other failure only, so a broken call
// costs one error, not one per process.
func processNames(lib gonvml.Interface, g *GPU, fail func(gonvml.Return)) []ProcessName {
	pids := make([]uint32, 0, len(g.Processes)+len(g.ProcessUtilization))
	for _, p := range g.Processes {
		pids = append(pids, p.PID)
	}
	for _, p := range g.ProcessUtilization {
		pids = append(pids, p.PID)
	}
	slices.Sort(pids)
	pids = slices.Compact(pids)
	var out []ProcessName
	failed := false
	for _, pid := range pids {
		name, ret := lib.SystemGetProcessName(int(pid))
		switch {
		case ret == gonvml.SUCCESS && name != "":
			out = append(out, ProcessName{pid, name})
		case ret == gonvml.SUCCESS, ret == gonvml.ERROR_NOT_FOUND, ret == gonvml.ERROR_NO_PERMISSION, ret == gonvml.ERROR_NOT_SUPPORTED:
		case !failed:
			failed = true
			fail(ret)
		}
	}
	return out
}

func codec(t uint32) string {
	switch gonvml.EncoderType(t) {
	case gonvml.ENCODER_QUERY_H264:
		return "h264"
	case gonvml.ENCODER_QUERY_HEVC:
		return "hevc"
	case gonvml.ENCODER_QUERY_AV1:
		return "av1"
	}
	return "unknown"
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (d *device) xidCounts() ([]XIDCount, time.Time) {
	d.xidMu.Lock()
	defer d.xidMu.Unlock()
	out := make([]XIDCount, 0, len(d.xids))
	for xid, n := range d.xids {
		out = append(out, XIDCount{xid, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].XID < out[j].XID })
	return out, d.lastXID
}

// cString turns NVML's NUL-terminated char array into a string.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
