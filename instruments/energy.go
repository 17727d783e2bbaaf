package instruments

import (
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/energy"
)

// Energy per encode, served on the ffmpeg port. Every per-stream series is
// left out until the stream is linked to a process.
var (
	StreamCPU = Metric{Name: "ffmpeg_stream_cpu_seconds_total", Unit: "s", Kind: Counter, Attributes: stream,
		Help: "CPU time (user + system) of the processes linked to the stream's current encode, each since it was charged to the encode: from its start if it started just before the link, else from the link (as its energy); starts from zero."}
	StreamEnergy = Metric{Name: "ffmpeg_stream_energy_joules_total", Unit: "J", Kind: Counter, Attributes: []string{"stream", "device", "mode"},
		Help: "Energy attributed to the stream's current encode (cpu from RAPL package and dram, gpu from NVML): mode dynamic is what its work added over idle power, by its share of the busy CPU time or GPU engine use, the same whatever runs beside it; mode idle is its share of idle power, by its use of the whole device. Sum over mode for the stream's energy."}
	StreamProcess = Metric{Name: "ffmpeg_stream_process_info", Kind: Gauge, Attributes: []string{"stream", "pid", "command"},
		Help: "Process the stream is linked to now; always 1."}
	StreamJoulesPerFrame = Metric{Name: "ffmpeg_stream_energy_per_frame_joules", Unit: "J", Kind: Gauge, Attributes: stream,
		Help: "Energy attributed to the stream's current encode over the frames it has encoded."}
	StreamGPUSeconds = Metric{Name: "ffmpeg_stream_gpu_seconds_total", Unit: "s", Kind: Counter, Attributes: []string{"stream", "engine"},
		Help: "GPU engine time (sm, encoder, decoder) of the stream's processes, summed over GPUs."}
	StreamEncoderSessions = Metric{Name: "ffmpeg_stream_gpu_encoder_sessions", Kind: Gauge, Attributes: stream,
		Help: "NVENC sessions the stream's processes hold open; 0 for an encode expected on NVENC means it runs on the CPU."}
	StreamUnlinked = Metric{Name: "ffmpeg_stream_unlinked", Kind: Gauge, Attributes: []string{"stream", "reason"},
		Help: "A live stream linked to no process, and why: remote, not_found, permission, no_process, exited, bad_pid or no_peer; always 1."}
	LinkFailures = Metric{Name: "ffmpeg_stream_link_failures_total", Kind: Counter, Attributes: []string{"reason"},
		Help: "Ingest connections that could not be linked to a process, by reason (each connection once per reason)."}
	StreamProcessesLeftOut = Metric{Name: "ffmpeg_stream_processes_left_out", Kind: Gauge, Attributes: stream,
		Help: "Processes found at the stream's latest link beyond the limit of " + strconv.Itoa(energy.MaxProcesses) + " per encode, which are not linked (/health names the stream)."}
	EnergyIdlePower = Metric{Name: "ffmpeg_energy_idle_power_watts", Unit: "W", Kind: Gauge, Attributes: []string{"device", "package", "gpu", "method"},
		Help: "Idle power the latest window split off each device's energy (package: the CPU socket, where sockets are charged apart; gpu: the GPU's index), and how it was found: configured (--energy.idle-watts.*), estimated (intercept of window power against use over recent windows), minimum (lowest window power seen, until use has varied enough) or none."}
	EnergyIdlePowerError = Metric{Name: "ffmpeg_energy_idle_power_stderr_watts", Unit: "W", Kind: Gauge, Attributes: []string{"device", "package", "gpu"},
		Help: "Standard error of an estimated idle power: how sure the estimate is (absent unless the method is estimated)."}
	EnergyCounted = Metric{Name: "ffmpeg_energy_counted_joules_total", Unit: "J", Kind: Counter, Attributes: []string{"device"},
		Help: "Energy the device's counters counted over the windows energy per encode shared out: every stream's energy plus ffmpeg_energy_unattributed_joules_total."}
	EnergyUnattributed = Metric{Name: "ffmpeg_energy_unattributed_joules_total", Unit: "J", Kind: Counter, Attributes: []string{"device", "mode"},
		Help: "Energy counted that no stream was charged: dynamic energy of other work, and idle power no stream used."}
	StreamEncodeInfo = Metric{Name: "ffmpeg_stream_encode_info", Kind: Gauge, Attributes: []string{"stream", "encoder", "preset", "ladder", "source"},
		Help: "The stream's encode profile, always 1: encoder, preset and ladder (WxH@fps rungs, widest first; ? for an unknown part) from bounded vocabularies, and source, the places that told them (url, stderr, cmdline, most trusted first)."}
	StreamOutputPixels = Metric{Name: "ffmpeg_stream_output_pixels_total", Kind: Counter, Attributes: stream,
		Help: "Pixels the stream's current encode produced across every rung of its ladder (frames of the first output, each rung scaled by its rate over the first's, times its width and height); left out until the ladder is known."}
	EncodeEnergy = Metric{Name: "ffmpeg_encode_energy_joules_total", Unit: "J", Kind: Counter, Attributes: []string{"encoder", "preset", "ladder", "device", "mode"},
		Help: "Energy of every encode since start by configuration, as ffmpeg_stream_energy_joules_total charges it (dynamic and idle kept apart); outlives the streams: the live leaderboard."}
	EncodeOutputPixels = Metric{Name: "ffmpeg_encode_output_pixels_total", Kind: Counter, Attributes: []string{"encoder", "preset", "ladder"},
		Help: "Pixels every encode of the configuration produced across its ladder since start."}
	EncodeFrames = Metric{Name: "ffmpeg_encode_frames_total", Kind: Counter, Attributes: []string{"encoder", "preset", "ladder"},
		Help: "Frames every encode of the configuration produced since start (its first video output's, as ffmpeg's frame= counts)."}
	EncodeSeconds = Metric{Name: "ffmpeg_encode_seconds_total", Unit: "s", Kind: Counter, Attributes: []string{"encoder", "preset", "ladder"},
		Help: "Time the configuration's encodes were live since start, summed over encodes: its rate is how many ran at once."}
	EnergyAvailable = Metric{Name: "ffmpeg_energy_available", Kind: Gauge, Attributes: []string{"device"},
		Help: "Whether the device's energy could be read in the latest window (1) or not (0): cpu is RAPL, gpu is NVML."}
)

// energyTable reads each metric from the snapshot or from each linked stream.
var energyTable = table[energy.Snapshot, energy.Stream]{
	readings: []Reading[energy.Snapshot, energy.Stream]{
		{Metric: StreamCPU, Each: func(s *energy.Stream, e *Emit) { e.Value(s.CPUSeconds) }},
		{Metric: StreamEnergy, Each: func(s *energy.Stream, e *Emit) {
			for d, known := range s.HasEnergy {
				if known {
					device := attribute.String("device", energy.Devices[d])
					e.With(s.Dynamic[d], device, attribute.String("mode", energy.Modes[energy.Dynamic]))
					e.With(max(s.Energy[d]-s.Dynamic[d], 0), device, attribute.String("mode", energy.Modes[energy.Idle]))
				}
			}
		}},
		{Metric: StreamProcess, Each: func(s *energy.Stream, e *Emit) {
			for _, p := range s.Processes {
				e.With(1, attribute.String("pid", strconv.Itoa(p.PID)), attribute.String("command", p.Command))
			}
		}},
		{Metric: StreamJoulesPerFrame, Each: func(s *energy.Stream, e *Emit) {
			if s.HasJoulesPerFrame {
				e.Value(s.JoulesPerFrame)
			}
		}},
		{Metric: StreamGPUSeconds, Each: func(s *energy.Stream, e *Emit) {
			if s.GPU {
				for k, v := range s.GPUSeconds {
					e.With(v, attribute.String("engine", energy.Engines[k]))
				}
			}
		}},
		{Metric: StreamEncoderSessions, Each: func(s *energy.Stream, e *Emit) {
			if s.GPU {
				e.Value(float64(s.EncoderSessions))
			}
		}},
		{Metric: StreamEncodeInfo, Each: func(s *energy.Stream, e *Emit) {
			if s.Labels[0] != "" {
				e.With(1, attribute.String("encoder", s.Labels[0]), attribute.String("preset", s.Labels[1]),
					attribute.String("ladder", s.Labels[2]), attribute.String("source", s.Labels[3]))
			}
		}},
		{Metric: StreamOutputPixels, Each: func(s *energy.Stream, e *Emit) {
			if s.HasPixels {
				e.Value(s.Pixels)
			}
		}},
		{Metric: EncodeEnergy, Once: func(s *energy.Snapshot, e *Emit) {
			for _, c := range s.Configurations {
				for d, known := range c.HasEnergy {
					if known {
						for m, v := range c.Energy[d] {
							e.With(v, append(configAttrs(c), attribute.String("device", energy.Devices[d]), attribute.String("mode", energy.Modes[m]))...)
						}
					}
				}
			}
		}},
		{Metric: EncodeOutputPixels, Once: func(s *energy.Snapshot, e *Emit) {
			for _, c := range s.Configurations {
				e.With(c.Pixels, configAttrs(c)...)
			}
		}},
		{Metric: EncodeFrames, Once: func(s *energy.Snapshot, e *Emit) {
			for _, c := range s.Configurations {
				e.With(c.Frames, configAttrs(c)...)
			}
		}},
		{Metric: EncodeSeconds, Once: func(s *energy.Snapshot, e *Emit) {
			for _, c := range s.Configurations {
				e.With(c.Seconds, configAttrs(c)...)
			}
		}},
		{Metric: StreamProcessesLeftOut, Each: func(s *energy.Stream, e *Emit) { e.Value(float64(s.ProcessesLeftOut)) }},
		{Metric: StreamUnlinked, Once: func(s *energy.Snapshot, e *Emit) {
			for _, u := range s.Unlinked {
				e.With(1, attribute.String("stream", u.Name), attribute.String("reason", energy.Reasons[u.Reason]))
			}
		}},
		{Metric: LinkFailures, Once: func(s *energy.Snapshot, e *Emit) {
			e.Counts("reason", energy.Reasons[:], s.Failures[:])
		}},
		{Metric: EnergyIdlePower, Once: func(s *energy.Snapshot, e *Emit) {
			for _, p := range s.Idle {
				e.With(p.Watts, idleAttrs(p, attribute.String("method", energy.IdleMethods[p.Method]))...)
			}
		}},
		{Metric: EnergyIdlePowerError, Once: func(s *energy.Snapshot, e *Emit) {
			for _, p := range s.Idle {
				if p.Method == energy.IdleEstimated {
					e.With(p.StdErr, idleAttrs(p)...)
				}
			}
		}},
		{Metric: EnergyCounted, Once: func(s *energy.Snapshot, e *Emit) {
			for d, ok := range s.Available {
				if ok || s.Counted[d] > 0 {
					e.With(s.Counted[d], attribute.String("device", energy.Devices[d]))
				}
			}
		}},
		{Metric: EnergyUnattributed, Once: func(s *energy.Snapshot, e *Emit) {
			for d, ok := range s.Available {
				if ok || s.Counted[d] > 0 {
					for m, v := range s.Unattributed[d] {
						e.With(v, attribute.String("device", energy.Devices[d]), attribute.String("mode", energy.Modes[m]))
					}
				}
			}
		}},
		{Metric: EnergyAvailable, Once: func(s *energy.Snapshot, e *Emit) {
			for d, ok := range s.Available {
				e.With(boolFloat(ok), attribute.String("device", energy.Devices[d]))
			}
		}},
	},
	items: func(s *energy.Snapshot) []energy.Stream { return s.Streams },
	attrs: func(s *energy.Stream, kvs []attribute.KeyValue) []attribute.KeyValue {
		return append(kvs, attribute.String("stream", s.Name))
	},
}

// configAttrs name a configuration of the leaderboard.
func configAttrs(c energy.Configuration) []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("encoder", c.Encoder), attribute.String("preset", c.Preset), attribute.String("ladder", c.Ladder)}
}

// idleAttrs names a device's idle power: the cpu, or a GPU by its index.
func idleAttrs(p energy.IdlePower, extra ...attribute.KeyValue) []attribute.KeyValue {
	kvs := []attribute.KeyValue{attribute.String("device", energy.Devices[p.Device])}
	if p.Package != "" {
		kvs = append(kvs, attribute.String("package", p.Package))
	}
	if p.GPU != "" {
		kvs = append(kvs, attribute.String("gpu", p.GPU))
	}
	return append(kvs, extra...)
}

// EnergySeriesLimit is the most series one energy-per-encode instrument
// has within maxStreams streams: at most energy.MaxProcesses processes per
// stream, NumEngines engines and NumDevices devices. The SDK keeps one more
// for its overflow series.
func EnergySeriesLimit(maxStreams int) int {
	return max(maxStreams*max(energy.MaxProcesses, int(energy.NumEngines), int(energy.NumDevices)*int(energy.NumModes)),
		energy.MaxConfigurations*int(energy.NumDevices)*int(energy.NumModes)) + 1
}

// Energy is the catalogue of energy per encode, part of the ffmpeg-exporter's.
var Energy = energyTable.metrics()

// RegisterEnergy registers the energy-per-encode instruments over src's snapshot.
func RegisterEnergy(m metric.Meter, src interface{ Snapshot() *energy.Snapshot }) error {
	return energyTable.register(m, src.Snapshot)
}
