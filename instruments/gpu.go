package instruments

import (
	"context"
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
	gpuFieldMetrics  = [nvml.NumFields]Metric{
		nvml.PowerWatts: GPUPower, nvml.TemperatureCelsius: GPUTemperature, nvml.UtilizationPercent: GPUUtilization,
		nvml.MemoryUsedBytes: GPUMemoryUsed, nvml.MemoryTotalBytes: GPUMemoryTotal,
		nvml.EncoderPercent: GPUEncoder, nvml.DecoderPercent: GPUDecoder, nvml.EncoderSessions: GPUEncSessions,
		nvml.EncoderFPS: GPUEncFPS, nvml.EncoderLatencySeconds: GPUEncLatency, nvml.EnergyJoules: GPUEnergy,
		nvml.PowerLimitWatts: GPUPowerLimit, nvml.SMClockHertz: GPUSMClock, nvml.MemoryClockHertz: GPUMemoryClock,
		nvml.GraphicsClockHertz: GPUGraphicsClock, nvml.FanPercent: GPUFan, nvml.PerformanceState: GPUPState,
	}
	gpuOtherMetrics = []Metric{GPUInfo, GPUThrottle, GPUXID, GPUProcessMemory, GPUErrors, GPULastSample, GPUNVMLAvailable}

	// GPU is the gpu-exporter's catalogue.
	GPU = append(gpuFieldMetrics[:], gpuOtherMetrics...)
)

// RegisterGPU registers the gpu-exporter's instruments over src's snapshot.
func RegisterGPU(m metric.Meter, src interface{ Snapshot() *nvml.Snapshot }) error {
	obs, err := observables(m, GPU)
	if err != nil {
		return err
	}
	fields := obs[:nvml.NumFields]
	other := obs[nvml.NumFields:]
	info, throttle, xid, procs, errs, last, available := other[0], other[1], other[2], other[3], other[4], other[5], other[6]
	return obs.register(m, func(_ context.Context, o metric.Observer) error {
		snap := src.Snapshot()
		o.ObserveFloat64(available, boolFloat(snap.Available))
		for i := range snap.GPUs {
			g := &snap.GPUs[i]
			idx := attribute.String("gpu", strconv.Itoa(g.Index))
			attrs := metric.WithAttributeSet(attribute.NewSet(idx))
			for f, inst := range fields {
				if g.Has(nvml.Field(f)) {
					o.ObserveFloat64(inst, g.Values[f], attrs)
				}
			}
			o.ObserveFloat64(info, 1, metric.WithAttributes(idx, attribute.String("uuid", g.UUID), attribute.String("name", g.Name),
				attribute.String("pci_bus_id", g.PCIBusID), attribute.String("driver_version", snap.DriverVersion)))
			if g.HasThrottle {
				for _, r := range nvml.ThrottleReasons {
					o.ObserveFloat64(throttle, boolFloat(g.Throttle&r.Bit != 0), metric.WithAttributes(idx, attribute.String("reason", r.Name)))
				}
			}
			for _, x := range g.XIDs {
				o.ObserveFloat64(xid, float64(x.Count), metric.WithAttributes(idx, attribute.String("xid", strconv.FormatUint(x.XID, 10))))
			}
			for _, p := range g.Processes {
				o.ObserveFloat64(procs, float64(p.UsedMemoryBytes), metric.WithAttributes(idx, attribute.String("pid", strconv.FormatUint(uint64(p.PID), 10))))
			}
			o.ObserveFloat64(errs, float64(g.Errors), attrs)
			o.ObserveFloat64(last, unixSeconds(g.LastSample), attrs)
		}
		return nil
	})
}
