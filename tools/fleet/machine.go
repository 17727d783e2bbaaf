package fleet

import (
	"fmt"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/docker"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// A simulated worker's hardware and load: what the deployment guide's
// transcoding node runs.
const (
	Sockets    = 2  // RAPL: a package and a dram zone each
	GPUs       = 4  // each carrying two of the streams' encodes
	Streams    = 8  // live ffmpeg encodes reporting progress
	Containers = 20 // the streams' containers and the node's services
)

// Machine is one simulated worker's hardware: the snapshots its sources
// would publish, made up as functions of the time since Start, so that
// each collection sees counters that advanced since the one before. Index
// sets it apart from the other workers' machines (its GPUs' UUIDs, its
// container IDs, its levels of load). Nothing real is read: no RAPL, GPU,
// ffmpeg or Docker daemon is needed.
type Machine struct {
	Index int
	Start time.Time
	Now   func() time.Time // time.Now when nil
}

func (m *Machine) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// elapsed is seconds since Start, and the time it was read at.
func (m *Machine) elapsed() (float64, time.Time) {
	now := m.now()
	return now.Sub(m.Start).Seconds(), now
}

// load is this machine's level of activity, between 0.8 and 1.2, so that
// workers do not all report the same values.
func (m *Machine) load() float64 { return 0.8 + float64(m.Index%41)/100 }

// RAPL is the cpu source's snapshot: package and dram zones of each socket.
func (m *Machine) RAPL() *rapl.Snapshot {
	t, _ := m.elapsed()
	s := &rapl.Snapshot{Discovered: 2 * Sockets, Available: true}
	for p := range Sockets {
		for _, z := range []struct {
			zone  string
			watts float64
		}{{"package", 120}, {"dram", 15}} {
			w := z.watts * m.load()
			s.Zones = append(s.Zones, rapl.ZoneReading{
				Package: fmt.Sprint(p), Zone: z.zone,
				EnergyJoules: 1000 + w*t, PowerWatts: w, HasPower: true,
				MaxRangeJoules: 262143.328850,
			})
		}
	}
	return s
}

// GPU is the gpu source's snapshot: GPUs with every field NVML gives a
// data-centre GPU, and two encodes (processes, NVENC sessions) each.
func (m *Machine) GPU() *nvml.Snapshot {
	t, now := m.elapsed()
	s := &nvml.Snapshot{Available: true, DriverVersion: "570.133.20"}
	for g := range GPUs {
		gpu := nvml.GPU{
			Index:       g,
			UUID:        fmt.Sprintf("GPU-%08x-0000-4000-8000-%012x", m.Index, g),
			Name:        "NVIDIA L4",
			PCIBusID:    fmt.Sprintf("00000000:%02X:00.0", 0x41+g),
			Known:       1<<nvml.NumFields - 1,
			HasThrottle: true,
			LastSample:  now,
		}
		for f := range nvml.NumFields {
			gpu.Values[f] = gpuValue(f, t, m.load())
		}
		for k := range Streams / GPUs {
			pid := uint32(10000 + g*(Streams/GPUs) + k)
			gpu.Processes = append(gpu.Processes, nvml.Process{PID: pid, UsedMemoryBytes: 900 << 20})
			gpu.ProcessUtilization = append(gpu.ProcessUtilization, nvml.ProcessUtilization{
				PID: pid, SMPercent: 20 * m.load(), EncoderPercent: 30 * m.load(), DecoderPercent: 15 * m.load(), Timestamp: now})
			gpu.EncoderSessions = append(gpu.EncoderSessions, nvml.EncoderSession{
				SessionID: pid, PID: pid, Codec: "h264", Width: 1920, Height: 1080, AverageFPS: 30, AverageLatency: 2 * time.Millisecond})
			gpu.ProcessNames = append(gpu.ProcessNames, nvml.ProcessName{PID: pid, Name: "ffmpeg"})
		}
		s.GPUs = append(s.GPUs, gpu)
	}
	return s
}

// gpuValue is a busy encoding GPU's reading of field f, t seconds in.
func gpuValue(f nvml.Field, t, load float64) float64 {
	switch f {
	case nvml.PowerWatts:
		return 55 * load
	case nvml.TemperatureCelsius:
		return 60 + 5*load
	case nvml.UtilizationPercent:
		return 40 * load
	case nvml.MemoryUsedBytes:
		return 2 * 900 << 20
	case nvml.MemoryTotalBytes:
		return 24 << 30
	case nvml.EncoderPercent:
		return 60 * load
	case nvml.DecoderPercent:
		return 30 * load
	case nvml.EncoderSessions:
		return Streams / GPUs
	case nvml.EncoderFPS:
		return 30
	case nvml.EncoderLatencySeconds:
		return 0.002
	case nvml.EnergyJoules:
		return 5000 + 55*load*t
	case nvml.PowerLimitWatts:
		return 72
	case nvml.SMClockHertz, nvml.GraphicsClockHertz:
		return 2040e6
	case nvml.MemoryClockHertz:
		return 6251e6
	case nvml.FanPercent:
		return 0 // passively cooled
	case nvml.PCIeTxBytesPerSecond, nvml.PCIeRxBytesPerSecond:
		return 40e6 * load
	case nvml.ThrottleLowUtilizationSeconds:
		return 100 + t/10
	}
	return 0 // P0, no errors, no remapped rows, no throttling
}

// FFmpeg is the ffmpeg source's snapshot: every stream live, reporting
// twice a second at 30 fps and 4.5 Mbit/s.
func (m *Machine) FFmpeg() ffmpeg.Snapshot {
	t, now := m.elapsed()
	var s ffmpeg.Snapshot
	for i := range Streams {
		st := ffmpeg.StreamSnapshot{Name: fmt.Sprintf("live-%d", i), Active: true, LastSeen: now, Known: 1<<ffmpeg.NumFields - 1}
		st.Values[ffmpeg.Frames] = 30 * t
		st.Values[ffmpeg.FPS] = 30
		st.Values[ffmpeg.Bitrate] = 4500
		st.Values[ffmpeg.Speed] = 1
		st.Values[ffmpeg.OutTime] = t
		st.Values[ffmpeg.Size] = 4500e3 / 8 * t
		st.Values[ffmpeg.Duplicated] = float64(int(t) / 600)
		s.Streams = append(s.Streams, st)
	}
	s.Lines[ffmpeg.LinesParsed] = uint64(Streams * 2 * 12 * t) // 12 lines per progress block
	return s
}

// Docker is the docker source's snapshot: one container per stream and
// the node's services, all running.
func (m *Machine) Docker() *docker.Snapshot {
	t, _ := m.elapsed()
	s := &docker.Snapshot{Up: true, HasEngineCPU: true, EngineCPUPercent: 2 * m.load()}
	for i := range Containers {
		name, cpu, mem := fmt.Sprintf("service-%d", i-Streams), 5*m.load(), 200e6
		if i < Streams {
			name, cpu, mem = fmt.Sprintf("transcode-live-%d", i), 180*m.load(), 1.5e9
		}
		c := docker.Container{
			ID: fmt.Sprintf("%016x%048x", m.Index, i), Name: name, Image: "registry.example/" + name + ":1", State: "running",
			HasInspect: true, Health: "none", StartedAt: m.Start.Add(-time.Hour),
			HasStats: true, HasCPU: true, CPUPercent: cpu, HasCPUUsage: true, CPUSeconds: 3600*cpu/100 + t*cpu/100,
			HasMemory: true, MemoryBytes: mem, HasMemoryLimit: true, MemoryLimitBytes: 64e9,
			HasNetwork: true, RxBytes: 1e9 + 600e3*t, TxBytes: 1e9 + 560e3*t,
			Rx: docker.Packets{Known: true, Packets: 1e6 + 450*t}, Tx: docker.Packets{Known: true, Packets: 1e6 + 420*t},
			BlockReadBytes: 50e6, BlockWriteBytes: 10e6 + 1e3*t, HasPIDs: true, PIDs: 12,
		}
		if i < Streams {
			c.Health = "healthy"
		}
		s.Containers = append(s.Containers, c)
	}
	return s
}

// Stats is what each simulated source reports of its own collections:
// quick, and none failed.
func (m *Machine) Stats() sampling.Stats {
	return sampling.Stats{Duration: 3 * time.Millisecond, LastSuccess: m.now()}
}
