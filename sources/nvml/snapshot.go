// Package nvml reads NVIDIA GPUs through NVML (github.com/NVIDIA/go-nvml)
// in a background sampler whose calls are bounded in time, and publishes a
// snapshot that scrapes only read. NVML needs cgo; a build without cgo has
// a source that says so.
package nvml

import (
	"fmt"
	"strings"
	"time"
)

// Field is one per-GPU reading.
type Field uint8

// The readings; each is left out for a GPU that does not support it.
const (
	PowerWatts                Field = iota // power draw
	TemperatureCelsius                     // GPU core temperature
	UtilizationPercent                     // GPU (SM) busy time
	MemoryUsedBytes                        // framebuffer used
	MemoryTotalBytes                       // framebuffer size
	EncoderPercent                         // NVENC utilisation
	DecoderPercent                         // NVDEC utilisation
	EncoderSessions                        // NVENC sessions open
	EncoderFPS                             // average fps over NVENC sessions
	EncoderLatencySeconds                  // average NVENC latency
	EnergyJoules                           // total energy since the driver loaded
	PowerLimitWatts                        // enforced power limit
	SMClockHertz                           // SM clock
	MemoryClockHertz                       // memory clock
	GraphicsClockHertz                     // graphics clock
	FanPercent                             // fan speed, of its maximum
	PerformanceState                       // P-state: 0 (P0, fastest) to 15
	PCIeTxBytesPerSecond                   // PCIe throughput sent by the GPU
	PCIeRxBytesPerSecond                   // PCIe throughput received by the GPU
	PCIeReplays                            // PCIe replays since the driver loaded
	ECCCorrected                           // volatile (since the driver loaded) corrected ECC errors
	ECCUncorrected                         // volatile uncorrected ECC errors
	RemappedRowsCorrectable                // rows remapped for correctable errors
	RemappedRowsUncorrectable              // rows remapped for uncorrectable errors
	RemappedRowsPending                    // 1 if a remapping waits for a GPU reset
	RemappedRowsFailed                     // 1 if a remapping has failed
	// Time the clocks were held down by each performance policy since the
	// driver loaded, in seconds; see ThrottleTimes.
	ThrottlePowerSeconds
	ThrottleThermalSeconds
	ThrottleSyncBoostSeconds
	ThrottleBoardLimitSeconds
	ThrottleLowUtilizationSeconds
	ThrottleReliabilitySeconds
	ThrottleAppClocksSeconds
	ThrottleBaseClocksSeconds
	NumFields
)

// ThrottleReasons names the clock-throttle reason bits NVML reports, in
// the order of their bits (nvmlClocksEventReason*).
var ThrottleReasons = []struct {
	Name string
	Bit  uint64
}{
	{"gpu_idle", 0x1},
	{"applications_clocks_setting", 0x2},
	{"sw_power_cap", 0x4},
	{"hw_slowdown", 0x8},
	{"sync_boost", 0x10},
	{"sw_thermal_slowdown", 0x20},
	{"hw_thermal_slowdown", 0x40},
	{"hw_power_brake_slowdown", 0x80},
	{"display_clock_setting", 0x100},
}

// ThrottleTimes names the performance policies whose violation time NVML
// counts (nvmlDeviceGetViolationStatus), with the nvmlPerfPolicyType_t
// value and the field holding each. Unlike ThrottleReasons, a cumulative
// time also shows a throttle that began and ended between two samples.
var ThrottleTimes = []struct {
	Reason string
	Policy int // nvmlPerfPolicyType_t
	Field  Field
}{
	{"power", 0, ThrottlePowerSeconds},
	{"thermal", 1, ThrottleThermalSeconds},
	{"sync_boost", 2, ThrottleSyncBoostSeconds},
	{"board_limit", 3, ThrottleBoardLimitSeconds},
	{"low_utilization", 4, ThrottleLowUtilizationSeconds},
	{"reliability", 5, ThrottleReliabilitySeconds},
	{"total_app_clocks", 10, ThrottleAppClocksSeconds},
	{"total_base_clocks", 11, ThrottleBaseClocksSeconds},
}

// MaxProcesses bounds each per-process list of one GPU (Processes,
// ProcessUtilization, EncoderSessions), and so the per-process series:
// beyond it the largest users are kept and the rest counted in
// GPU.ProcessesLeftOut.
const MaxProcesses = 256

// GPU is one GPU at the latest sample.
type GPU struct {
	Index                int
	UUID, Name, PCIBusID string
	Values               [NumFields]float64
	Known                uint64 // bit f set: Values[f] is a reading
	Throttle             uint64 // active throttle reason bits
	HasThrottle          bool
	Processes            []Process
	XIDs                 []XIDCount // sorted by XID
	LastXID              time.Time  // when the latest XID error arrived; zero if none since start
	Errors               uint64     // failed NVML calls on this GPU since start
	Err                  error      // why the latest sample of this GPU failed; nil if it did not
	LastSample           time.Time

	// ProcessUtilization is each process's use of the GPU's engines over
	// the window since the previous sample (NVML keeps per-process samples
	// and returns those newer than the last one seen). A process that used
	// no engine in the window has no entry. Together with EncoderSessions,
	// this is what per-process energy is apportioned by.
	ProcessUtilization []ProcessUtilization
	// EncoderSessions are the NVENC sessions open at the sample, each with
	// its process.
	EncoderSessions []EncoderSession
	// ProcessNames names the processes in Processes and ProcessUtilization
	// (NVML's name for each; a process that has exited is left out).
	ProcessNames []ProcessName
	// ProcessesLeftOut is how many processes beyond MaxProcesses the
	// longest per-process list of this sample had to leave out.
	ProcessesLeftOut int

	// MIG is set when the GPU is in MIG mode: every reading is the whole
	// GPU's, and NVML reports some of them for no MIG instance.
	MIG bool
	// Unsupported names the NVML calls this GPU answered with "not
	// supported" at this sample: their readings are left out.
	Unsupported []string
}

// Has reports whether field f holds a reading.
func (g *GPU) Has(f Field) bool { return g.Known&(1<<f) != 0 }

// Process is a process holding GPU memory.
type Process struct {
	PID             uint32
	UsedMemoryBytes uint64
}

// ProcessUtilization is one process's share of the GPU's engines, as a
// percent of the window that ended at Timestamp.
type ProcessUtilization struct {
	PID            uint32
	SMPercent      float64 // streaming multiprocessors (compute, 3D)
	EncoderPercent float64 // NVENC
	DecoderPercent float64 // NVDEC
	Timestamp      time.Time
}

// EncoderSession is one open NVENC session.
type EncoderSession struct {
	SessionID      uint32
	PID            uint32
	Codec          string // "h264", "hevc", "av1", or "unknown"
	Width, Height  uint32 // encoded resolution
	AverageFPS     float64
	AverageLatency time.Duration
}

// ProcessName is what NVML calls a process.
type ProcessName struct {
	PID  uint32
	Name string
}

// XIDCount is how many times an XID error was seen.
type XIDCount struct {
	XID   uint64
	Count uint64
}

// Snapshot is what the latest sample saw.
type Snapshot struct {
	Available     bool // NVML initialised
	DriverVersion string
	GPUs          []GPU
}

// Notes says what the snapshot does not cover although nothing failed:
// for each GPU in MIG mode, that its readings are the whole GPU's and
// which of them NVML does not give for it.
func (s *Snapshot) Notes() []string {
	var notes []string
	for i := range s.GPUs {
		g := &s.GPUs[i]
		if !g.MIG {
			continue
		}
		note := fmt.Sprintf("gpu %d is in MIG mode: readings are for the whole GPU, none per MIG instance", g.Index)
		if len(g.Unsupported) > 0 {
			note += "; NVML does not give " + strings.Join(g.Unsupported, ", ") + " for it, so those series are left out"
		}
		notes = append(notes, note)
	}
	return notes
}
