// Package nvml reads NVIDIA GPUs through NVML (github.com/NVIDIA/go-nvml)
// in a background sampler whose calls are bounded in time, and publishes a
// snapshot that scrapes only read. NVML needs cgo; a build without cgo has
// a source that says so.
package nvml

import "time"

// Field is one per-GPU reading.
type Field uint8

// The readings; each is left out for a GPU that does not support it.
const (
	PowerWatts            Field = iota // power draw
	TemperatureCelsius                 // GPU core temperature
	UtilizationPercent                 // GPU (SM) busy time
	MemoryUsedBytes                    // framebuffer used
	MemoryTotalBytes                   // framebuffer size
	EncoderPercent                     // NVENC utilisation
	DecoderPercent                     // NVDEC utilisation
	EncoderSessions                    // NVENC sessions open
	EncoderFPS                         // average fps over NVENC sessions
	EncoderLatencySeconds              // average NVENC latency
	EnergyJoules                       // total energy since the driver loaded
	PowerLimitWatts                    // enforced power limit
	SMClockHertz                       // SM clock
	MemoryClockHertz                   // memory clock
	GraphicsClockHertz                 // graphics clock
	FanPercent                         // fan speed, of its maximum
	PerformanceState                   // P-state: 0 (P0, fastest) to 15
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

// GPU is one GPU at the latest sample.
type GPU struct {
	Index                int
	UUID, Name, PCIBusID string
	Values               [NumFields]float64
	Known                uint32 // bit f set: Values[f] is a reading
	Throttle             uint64 // active throttle reason bits
	HasThrottle          bool
	Processes            []Process
	XIDs                 []XIDCount // sorted by XID
	Errors               uint64     // failed NVML calls on this GPU since start
	Err                  error      // why the latest sample of this GPU failed; nil if it did not
	LastSample           time.Time
}

// Has reports whether field f holds a reading.
func (g *GPU) Has(f Field) bool { return g.Known&(1<<f) != 0 }

// Process is a process holding GPU memory.
type Process struct {
	PID             uint32
	UsedMemoryBytes uint64
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
