//go:build cgo

// Package gpumock builds NVML machines for tests from go-nvml's own mock
// (its dgxh100 server), with every call the gpu-exporter makes set to a
// known reading. These machines have no GPU: the mock stands in for the
// driver.
package gpumock

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// Machine is a mock host with GPUs and an XID event queue.
type Machine struct {
	*server.Server
	Events chan nvml.EventData // what the event set's Wait delivers
}

// New returns a host with n H100s, not in MIG mode. GPU i reads: power
// 100+i W, 40+i °C, utilisation 10+i %, 1+i GiB used of 80 GiB, encoder
// 20+i %, decoder 5+i %, 2 NVENC sessions (H.264 and HEVC, 1920×1080, by
// pid 1000+i) at 60 fps and 1500 µs, 1000·(i+1) J, limit 700 W, clocks
// 1980/2619/1755 MHz, fan not supported (SXM), P0, SW power cap active, one
// process (pid 1000+i, named "ffmpeg") using 512 MiB and, at every call,
// a fresh utilisation sample of SM 30+i %, encoder 20+i %, decoder 5+i %;
// PCIe TX 100+i KB/s and RX 200+i KB/s, 3+i replays, 7+i corrected and i
// uncorrected ECC errors, 1 row remapped for a correctable error, none
// pending or failed; violation time (k+1)·0.5 s for perf policy k.
func New(n int) *Machine {
	m := &Machine{Server: dgxh100.NewWithGPUs(gpus.Multiple(n, gpus.H100_SXM5_80GB)...), Events: make(chan nvml.EventData, 64)}
	for i, d := range m.Devices {
		Set(d.(*server.Device), i)
	}
	m.SystemGetProcessNameFunc = func(pid int) (string, nvml.Return) {
		if pid >= 1000 && pid < 1000+n {
			return "ffmpeg", nvml.SUCCESS
		}
		return "", nvml.ERROR_NOT_FOUND
	}
	m.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		return &mock.EventSet{
			WaitFunc: func(timeoutMS uint32) (nvml.EventData, nvml.Return) {
				select {
				case e := <-m.Events:
					return e, nvml.SUCCESS
				case <-time.After(time.Duration(timeoutMS) * time.Millisecond):
					return nvml.EventData{}, nvml.ERROR_TIMEOUT
				}
			},
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
		}, nvml.SUCCESS
	}
	return m
}

// Set gives device d (index i) its known readings.
func Set(d *server.Device, i int) {
	u := uint32(i)
	d.GetUUIDFunc = func() (string, nvml.Return) { return fmt.Sprintf("GPU-00000000-0000-0000-0000-%012d", i), nvml.SUCCESS }
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		p := nvml.PciInfo{PciDeviceId: d.Config.PciDeviceId, Bus: u}
		for j, c := range fmt.Sprintf("00000000:%02X:00.0", i) {
			p.BusId[j] = int8(c)
		}
		return p, nvml.SUCCESS
	}
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return (100 + u) * 1000, nvml.SUCCESS }
	d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 40 + u, nvml.SUCCESS }
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{Gpu: 10 + u, Memory: 3}, nvml.SUCCESS
	}
	d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		total := uint64(80) << 30
		used := uint64(1+i) << 30
		return nvml.Memory{Total: total, Used: used, Free: total - used}, nvml.SUCCESS
	}
	d.GetEncoderUtilizationFunc = func() (uint32, uint32, nvml.Return) { return 20 + u, 167000, nvml.SUCCESS }
	d.GetDecoderUtilizationFunc = func() (uint32, uint32, nvml.Return) { return 5 + u, 167000, nvml.SUCCESS }
	d.GetEncoderStatsFunc = func() (int, uint32, uint32, nvml.Return) { return 2, 60, 1500, nvml.SUCCESS }
	d.GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) { return uint64(1+i) * 1_000_000, nvml.SUCCESS }
	d.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 700_000, nvml.SUCCESS }
	d.GetClockInfoFunc = func(c nvml.ClockType) (uint32, nvml.Return) {
		switch c {
		case nvml.CLOCK_SM:
			return 1980, nvml.SUCCESS
		case nvml.CLOCK_MEM:
			return 2619, nvml.SUCCESS
		case nvml.CLOCK_GRAPHICS:
			return 1755, nvml.SUCCESS
		}
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
	d.GetFanSpeedFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	d.GetPerformanceStateFunc = func() (nvml.Pstates, nvml.Return) { return nvml.PSTATE_0, nvml.SUCCESS }
	d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return 0x4, nvml.SUCCESS }
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 1000 + u, UsedGpuMemory: 512 << 20}}, nvml.SUCCESS
	}
	d.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
	d.GetProcessUtilizationFunc = func(lastSeen uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		// Like NVML: only samples newer than lastSeen, timed in µs.
		ts := max(uint64(time.Now().UnixMicro()), lastSeen+1)
		return []nvml.ProcessUtilizationSample{{Pid: 1000 + u, TimeStamp: ts, SmUtil: 30 + u, EncUtil: 20 + u, DecUtil: 5 + u}}, nvml.SUCCESS
	}
	d.GetEncoderSessionsFunc = func() ([]nvml.EncoderSessionInfo, nvml.Return) {
		s := nvml.EncoderSessionInfo{Pid: 1000 + u, HResolution: 1920, VResolution: 1080, AverageFps: 60, AverageLatency: 1500}
		h264, hevc := s, s
		h264.SessionId, h264.CodecType = 1, uint32(nvml.ENCODER_QUERY_H264)
		hevc.SessionId, hevc.CodecType = 2, uint32(nvml.ENCODER_QUERY_HEVC)
		return []nvml.EncoderSessionInfo{h264, hevc}, nvml.SUCCESS
	}
	d.GetPcieThroughputFunc = func(c nvml.PcieUtilCounter) (uint32, nvml.Return) {
		switch c {
		case nvml.PCIE_UTIL_TX_BYTES:
			return 100 + u, nvml.SUCCESS
		case nvml.PCIE_UTIL_RX_BYTES:
			return 200 + u, nvml.SUCCESS
		}
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
	d.GetPcieReplayCounterFunc = func() (int, nvml.Return) { return 3 + i, nvml.SUCCESS }
	d.GetTotalEccErrorsFunc = func(t nvml.MemoryErrorType, c nvml.EccCounterType) (uint64, nvml.Return) {
		switch {
		case c != nvml.VOLATILE_ECC:
			return 0, nvml.ERROR_INVALID_ARGUMENT
		case t == nvml.MEMORY_ERROR_TYPE_CORRECTED:
			return 7 + uint64(i), nvml.SUCCESS
		case t == nvml.MEMORY_ERROR_TYPE_UNCORRECTED:
			return uint64(i), nvml.SUCCESS
		}
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
	d.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 1, 0, false, false, nvml.SUCCESS }
	d.GetViolationStatusFunc = func(p nvml.PerfPolicyType) (nvml.ViolationTime, nvml.Return) {
		if p < 0 || p >= nvml.PERF_POLICY_COUNT {
			return nvml.ViolationTime{}, nvml.ERROR_INVALID_ARGUMENT
		}
		return nvml.ViolationTime{ReferenceTime: uint64(time.Now().UnixMicro()), ViolationTime: uint64(p+1) * 500_000_000}, nvml.SUCCESS
	}
}

// Toggle is a switch a test flips while the exporter runs.
type Toggle struct {
	mu sync.Mutex
	on bool
}

func (t *Toggle) Set(on bool) { t.mu.Lock(); t.on = on; t.mu.Unlock() }
func (t *Toggle) On() bool    { t.mu.Lock(); defer t.mu.Unlock(); return t.on }

// CountCalls counts, in calls, every call made to any device of m from now
// on (each of the mock's Get*Func and friends that is set), and in sets
// every XID event set created: what a test needs to prove NVML is read once
// per interval however many users share the reader.
func CountCalls(m *Machine) (calls, sets *atomic.Int64) {
	calls, sets = new(atomic.Int64), new(atomic.Int64)
	for _, d := range m.Devices {
		v := reflect.ValueOf(&d.(*server.Device).Device).Elem()
		for i := range v.NumField() {
			f := v.Field(i)
			if f.Kind() != reflect.Func || f.IsNil() || !strings.HasSuffix(v.Type().Field(i).Name, "Func") {
				continue
			}
			inner := f.Interface()
			f.Set(reflect.MakeFunc(f.Type(), func(args []reflect.Value) []reflect.Value {
				calls.Add(1)
				return reflect.ValueOf(inner).Call(args)
			}))
		}
	}
	create := m.EventSetCreateFunc
	m.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		sets.Add(1)
		return create()
	}
	return calls, sets
}
