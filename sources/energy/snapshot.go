// Package energy attributes energy to encodes. Each ingest stream is linked
// to the process that sends its progress (sources/procfs finds it); in
// each sampling window the stream gets its process's share of the energy
// the hardware counted in that window: of the CPU energy RAPL counted
// (package and dram zones), its CPU time over the machine's (idle
// included, so idle power stays with the machine, as Kepler does it); of
// each GPU's energy, its use of the GPU's engines. It samples in the
// background and publishes a snapshot that scrapes only read.
package energy

import "github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"

// Device is what the energy was counted on.
type Device uint8

const (
	CPU Device = iota // RAPL package and dram zones
	GPU               // NVML's energy counter of each GPU
	NumDevices
)

// Devices names each Device, for the metric attribute.
var Devices = [NumDevices]string{"cpu", "gpu"}

// Engine is a GPU engine a process uses.
type Engine uint8

const (
	SM      Engine = iota // streaming multiprocessors (compute, 3D, CUDA filters)
	Encoder               // NVENC
	Decoder               // NVDEC
	NumEngines
)

// Engines names each Engine, for the metric attribute.
var Engines = [NumEngines]string{"sm", "encoder", "decoder"}

// Reason is why a stream is not linked to a process.
type Reason uint8

const (
	Remote     Reason = iota // the connection comes from another host: its process is not here
	NotFound                 // no process here holds the other end of the connection (or pipe)
	Permission               // processes of other users could not be read (needs CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE)
	NoProcess                // ?pid=N names no running process
	Exited                   // the linked process exited while the connection stayed open
	BadPID                   // ?pid= is not a positive integer
	NoPeer                   // the connection's peer is not known
	NumReasons
)

// Reasons names each Reason, for the metric attribute.
var Reasons = [NumReasons]string{"remote", "not_found", "permission", "no_process", "exited", "bad_pid", "no_peer"}

// Snapshot is what the latest window saw.
type Snapshot struct {
	// Streams are the streams linked to a process at some time in their
	// current encode, sorted by name; a stream never linked is left out
	// (and listed in Unlinked while it is live).
	Streams []Stream
	// Unlinked are the live streams with no linked process now, and why.
	Unlinked []Unlinked
	// Failures counts the links that failed, by reason: each connection
	// once per reason.
	Failures [NumReasons]uint64
	// Available says whether the device's energy could be read in the
	// latest window (RAPL readable; NVML loaded with a GPU that counts
	// energy).
	Available [NumDevices]bool
}

// Stream is one stream's encode.
type Stream struct {
	Name string
	// Processes are those linked now; empty once they have exited or the
	// connection has closed (the totals below keep their final values).
	Processes []Process
	// CPUSeconds is the user and system time of every process linked in
	// this encode, each from when it was charged to the encode: from its
	// start if it started at most about two windows before it was linked,
	// from its link otherwise (as its energy).
	CPUSeconds float64
	// ProcessesLeftOut counts the processes found at the latest link
	// beyond MaxProcesses, which are not linked.
	ProcessesLeftOut int
	// Energy is what was attributed to the encode so far, per device;
	// HasEnergy says the device's energy was readable in a window since the
	// stream was linked (otherwise the value is unknown, not zero).
	Energy    [NumDevices]float64
	HasEnergy [NumDevices]bool
	// JoulesPerFrame is the energy of every device over the frames
	// encoded, once both are known and frames are counted.
	JoulesPerFrame    float64
	HasJoulesPerFrame bool
	// GPU is set when NVML was readable while the stream was linked:
	// GPUSeconds is the engine time of its processes, summed over GPUs;
	// EncoderSessions counts their NVENC sessions open now.
	GPU             bool
	GPUSeconds      [NumEngines]float64
	EncoderSessions int
}

// Process is a process a stream is linked to.
type Process struct {
	procfs.Process
	Command string // the kernel's name for it (comm)
}

// Unlinked is a live stream that no process is linked to now.
type Unlinked struct {
	Name   string
	Reason Reason
}
