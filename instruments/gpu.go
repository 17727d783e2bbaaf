package instruments

import (
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
)

var gpu = []string{"gpu"}

// The gpu-exporter's metrics. The first five are the deployment guide's.
var (
	GPUPower         = Metric{Name: "nvidia_gpu_power_draw_watts", Unit: "W", Kind: Gauge, Attributes: gpu, Help: "Power draw of the GPU."}
	GPUTemperature   = Metric{Name: "nvidia_gpu_temperature_celsius", Unit: "Cel", Kind: Gauge, Attributes: gpu, Help: "GPU core temperature."}
	GPUUtilization   = Metric{Name: "nvidia_gpu_utilization_percent", Unit: "%", Kind: Gauge, Attributes: gpu, Help: "Percent of the last sample period in which a kernel ran on the GPU."}
	GPUMemoryUsed    = Metric{Name: "nvidia_gpu_memory_used_bytes", Unit: "By", Kind: Gauge, Attributes: gpu, Help: "GPU memory in use."}
	GPUMemoryTotal   = Metric{Name: "nvidia_gpu_memory_total_bytes", Unit: "By", Kind: Gauge, Attributes: gpu, Help: "GPU memory installed."}
	GPUInfo          = Metric{Name: "nvidia_gpu_info", Kind: Gauge, Attributes: []string{"gpu", "uuid", "name", "pci_bus_id", "driver_version"}, Help: "Identity of each GPU; always 1."}
	GPUEncoder       = Metric{Name: "nvidia_gpu_encoder_utilization_percent", Unit: "%", Kind: Gauge, Attributes: gpu, Help: "NVENC (video encoder) utilisation."}
	GPUDecoder       = Metric{Name: "nvidia_gpu_decoder_utilization_percent", Unit: "%", Kind: Gauge, Attributes: gpu, Help: "NVDEC (video decoder) utilisation."}
	GPUEncSessions   = Metric{Name: "nvidia_gpu_encoder_sessions", Kind: Gauge, Attributes: gpu, Help: "NVENC sessions open."}
	GPUEncFPS        = Metric{Name: "nvidia_gpu_encoder_average_fps", Kind: Gauge, Attributes: gpu, Help: "Average frames per second over the open NVENC sessions."}
	GPUEncLatency    = Metric{Name: "nvidia_gpu_encoder_average_latency_seconds", Unit: "s", Kind: Gauge, Attributes: gpu, Help: "Average NVENC encode latency over the open sessions."}
	GPUEnergy        = Metric{Name: "nvidia_gpu_energy_joules_total", Unit: "J", Kind: Counter, Attributes: gpu, Help: "Energy consumed by the GPU since the driver loaded."}
	GPUPowerLimit    = Metric{Name: "nvidia_gpu_power_limit_watts", Unit: "W", Kind: Gauge, Attributes: gpu, Help: "Power limit the driver enforces."}
	GPUSMClock       = Metric{Name: "nvidia_gpu_sm_clock_hertz", Unit: "Hz", Kind: Gauge, Attributes: gpu, Help: "SM clock."}
	GPUMemoryClock   = Metric{Name: "nvidia_gpu_memory_clock_hertz", Unit: "Hz", Kind: Gauge, Attributes: gpu, Help: "Memory clock."}
	GPUGraphicsClock = Metric{Name: "nvidia_gpu_graphics_clock_hertz", Unit: "Hz", Kind: Gauge, Attributes: gpu, Help: "Graphics clock."}
	GPUFan           = Metric{Name: "nvidia_gpu_fan_speed_percent", Unit: "%", Kind: Gauge, Attributes: gpu, Help: "Fan speed as a percent of its maximum."}
	GPUPState        = Metric{Name: "nvidia_gpu_performance_state", Kind: Gauge, Attributes: gpu, Help: "Performance state: 0 (P0, fastest) to 15 (P15, slowest)."}
	GPUThrottle      = Metric{Name: "nvidia_gpu_clock_throttle_reason", Kind: Gauge, Attributes: []string{"gpu", "reason"}, Help: "Whether each clock-throttle reason is active (1) or not (0)."}
	GPUXID           = Metric{Name: "nvidia_gpu_xid_errors_total", Kind: Counter, Attributes: []string{"gpu", "xid"}, Help: "XID errors reported by the driver, by XID, since the exporter started."}
	GPUProcessMemory = Metric{Name: "nvidia_gpu_process_memory_used_bytes", Unit: "By", Kind: Gauge, Attributes: []string{"gpu", "pid"}, Help: "GPU memory used by each compute process."}
	GPUErrors        = Metric{Name: "nvidia_gpu_collection_errors_total", Kind: Counter, Attributes: gpu, Help: "NVML calls that failed for the GPU (not counting unsupported fields)."}
	GPULastSample    = Metric{Name: "nvidia_gpu_last_sample_timestamp_seconds", Unit: "s", Kind: Gauge, Attributes: gpu, Help: "Unix time of the GPU's latest sample."}
	GPUNVMLAvailable = Metric{Name: "nvidia_gpu_nvml_available", Kind: Gauge, Help: "Whether NVML is loaded (1) or not (0; /health says why)."}
)

// gpuTable reads each metric from the snapshot or from each GPU in it.
var gpuTable = table[nvml.Snapshot, nvml.GPU]{
	readings: []Reading[nvml.Snapshot, nvml.GPU]{
		gpuField(GPUPower, nvml.PowerWatts),
		gpuField(GPUTemperature, nvml.TemperatureCelsius),
		gpuField(GPUUtilization, nvml.UtilizationPercent),
		gpuField(GPUMemoryUsed, nvml.MemoryUsedBytes),
		gpuField(GPUMemoryTotal, nvml.MemoryTotalBytes),
		gpuField(GPUEncoder, nvml.EncoderPercent),
		gpuField(GPUDecoder, nvml.DecoderPercent),
		gpuField(GPUEncSessions, nvml.EncoderSessions),
		gpuField(GPUEncFPS, nvml.EncoderFPS),
		gpuField(GPUEncLatency, nvml.EncoderLatencySeconds),
		gpuField(GPUEnergy, nvml.EnergyJoules),
		gpuField(GPUPowerLimit, nvml.PowerLimitWatts),
		gpuField(GPUSMClock, nvml.SMClockHertz),
		gpuField(GPUMemoryClock, nvml.MemoryClockHertz),
		gpuField(GPUGraphicsClock, nvml.GraphicsClockHertz),
		gpuField(GPUFan, nvml.FanPercent),
		gpuField(GPUPState, nvml.PerformanceState),
		// Once, not Each: the driver version is the snapshot's, not the GPU's.
		{Metric: GPUInfo, Once: func(s *nvml.Snapshot, e *Emit) {
			for i := range s.GPUs {
				g := &s.GPUs[i]
				e.With(1, gpuIndex(g), attribute.String("uuid", g.UUID), attribute.String("name", g.Name),
					attribute.String("pci_bus_id", g.PCIBusID), attribute.String("driver_version", s.DriverVersion))
			}
		}},
		{Metric: GPUThrottle, Each: func(g *nvml.GPU, e *Emit) {
			if g.HasThrottle {
				for _, r := range nvml.ThrottleReasons {
					e.With(boolFloat(g.Throttle&r.Bit != 0), attribute.String("reason", r.Name))
				}
			}
		}},
		{Metric: GPUXID, Each: func(g *nvml.GPU, e *Emit) {
			for _, x := range g.XIDs {
				e.With(float64(x.Count), attribute.String("xid", strconv.FormatUint(x.XID, 10)))
			}
		}},
		{Metric: GPUProcessMemory, Each: func(g *nvml.GPU, e *Emit) {
			for _, p := range g.Processes {
				e.With(float64(p.UsedMemoryBytes), attribute.String("pid", strconv.FormatUint(uint64(p.PID), 10)))
			}
		}},
		{Metric: GPUErrors, Each: func(g *nvml.GPU, e *Emit) { e.Value(float64(g.Errors)) }},
		{Metric: GPULastSample, Each: func(g *nvml.GPU, e *Emit) { e.Value(unixSeconds(g.LastSample)) }},
		{Metric: GPUNVMLAvailable, Once: func(s *nvml.Snapshot, e *Emit) { e.Bool(s.Available) }},
	},
	items: func(s *nvml.Snapshot) []nvml.GPU { return s.GPUs },
	attrs: func(g *nvml.GPU, kvs []attribute.KeyValue) []attribute.KeyValue { return append(kvs, gpuIndex(g)) },
}

// gpuField reads field f of each GPU that supports it.
func gpuField(m Metric, f nvml.Field) Reading[nvml.Snapshot, nvml.GPU] {
	return Reading[nvml.Snapshot, nvml.GPU]{Metric: m, Each: func(g *nvml.GPU, e *Emit) {
		if g.Has(f) {
			e.Value(g.Values[f])
		}
	}}
}

func gpuIndex(g *nvml.GPU) attribute.KeyValue { return attribute.String("gpu", strconv.Itoa(g.Index)) }

// GPU is the gpu-exporter's catalogue.
var GPU = gpuTable.metrics()

// RegisterGPU registers the gpu-exporter's instruments over src's snapshot.
func RegisterGPU(m metric.Meter, src interface{ Snapshot() *nvml.Snapshot }) error {
	return gpuTable.register(m, src.Snapshot)
}
