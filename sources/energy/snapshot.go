// Package energy attributes energy to encodes. Each ingest stream is linked
// to the process that sends its progress (sources/procfs finds it). In
// each sampling window each device's energy (RAPL's package and dram
// zones; each GPU's NVML counter) is split in two: idle power over the
// window (estimated from the windows, or set by the operator) and the
// dynamic rest. A stream gets, of the dynamic part, its share of the busy
// resource (its CPU time over the machine's busy CPU time; its engine use
// over the GPU's), so the same work costs the same joules whatever runs
// beside it; and, of the idle part, its share of the whole device (its
// CPU time over the machine's, idle included; its busiest engine's use),
// which does not depend on its neighbours either. What no stream is
// charged is counted as unattributed. It samples in the background and
// publishes a snapshot that scrapes only read.
package energy

import (
	"github.com/ffmpeg-rtmp/worker-exporters/sources/encodeprofile"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
)

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
	Remote      Reason = iota // the connection comes from another host: its process is not here
	NotFound                  // no process here holds the other end of the connection (or pipe)
	Permission                // processes of other users could not be read (needs CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE)
	NoProcess                 // ?pid=N names no running process
	Exited                    // the linked process exited while the connection stayed open
	BadPID                    // ?pid= is not a positive integer
	NoPeer                    // the connection's peer is not known
	PIDMismatch               // ?pid=N names a process that neither holds the connection nor is an ancestor of one that does
	NumReasons
)

// Reasons names each Reason, for the metric attribute.
var Reasons = [NumReasons]string{"remote", "not_found", "permission", "no_process", "exited", "bad_pid", "no_peer", "pid_mismatch"}

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
	// Idle is the idle power each device's latest window used (the CPU's
	// first, then each GPU's).
	Idle []IdlePower
	// Counted is every device's energy the windows shared out since start;
	// Unattributed, what of it, dynamic and idle, no stream was charged:
	// the streams' energy plus Unattributed is Counted.
	Counted      [NumDevices]float64
	Unattributed [NumDevices][NumModes]float64
	// Configurations are the totals of every encode by encoder, preset and
	// ladder since start, sorted: the live leaderboard.
	Configurations []Configuration
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
	// Energy is what was attributed to the encode so far, per device: its
	// Dynamic energy (what its work added over idle power, the same
	// whatever runs beside it) and its share of idle power. HasEnergy says
	// the device's energy was readable in a window since the stream was
	// linked (otherwise the value is unknown, not zero).
	Energy    [NumDevices]float64
	Dynamic   [NumDevices]float64
	HasEnergy [NumDevices]bool
	// Profile is the encode's encoder, preset and ladder (bounded labels)
	// and which place told each; Pixels the pixels it encoded across every
	// rung, once its ladder is known (HasPixels).
	Profile encodeprofile.Profile
	// Labels are its encoder, preset and ladder as its configuration's
	// totals count them (bounded: a ladder past the limit is other), and
	// the places that told them; empty until the first window.
	Labels    [4]string
	Pixels    float64
	HasPixels bool
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
