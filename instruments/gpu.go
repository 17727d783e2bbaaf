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

	// Parity with dcgm-exporter and nvidia_gpu_exporter: health and per-process use.
	// No unit: the Prometheus translation appends _per_second for By/s even to a name that ends so.
	GPUPCIeThroughput   = Metric{Name: "nvidia_gpu_pcie_throughput_bytes_per_second", Kind: Gauge, Attributes: []string{"gpu", "direction"}, Help: "PCIe throughput over NVML's latest 20 ms sample, sent (tx) or received (rx) by the GPU."}
	GPUPCIeReplays      = Metric{Name: "nvidia_gpu_pcie_replay_errors_total", Kind: Counter, Attributes: gpu, Help: "PCIe packets the GPU had to replay since the driver loaded."}
	GPUECCErrors        = Metric{Name: "nvidia_gpu_ecc_errors_total", Kind: Counter, Attributes: []string{"gpu", "type"}, Help: "ECC memory errors since the driver loaded (volatile counts), corrected or uncorrected."}
	GPURemappedRows     = Metric{Name: "nvidia_gpu_remapped_rows", Kind: Gauge, Attributes: []string{"gpu", "type"}, Help: "Memory rows remapped for correctable or uncorrectable errors; pending and failed are 1 while a remapping waits for a GPU reset or has failed."}
	GPUThrottleTime     = Metric{Name: "nvidia_gpu_clock_throttle_seconds_total", Unit: "s", Kind: Counter, Attributes: []string{"gpu", "reason"}, Help: "Time the clocks were held down by each performance policy since the driver loaded (NVML violation time), throttles between samples included."}
	GPUProcessUtil      = Metric{Name: "nvidia_gpu_process_utilization_percent", Unit: "%", Kind: Gauge, Attributes: []string{"gpu", "pid", "engine"}, Help: "Each process's use of the GPU's SM, encoder and decoder since the previous sample; a process that used none has no series."}
	GPUProcessInfo      = Metric{Name: "nvidia_gpu_process_info", Kind: Gauge, Attributes: []string{"gpu", "pid", "name"}, Help: "Name of each process with per-process series on the GPU; always 1."}
	GPUProcessesLeftOut = Metric{Name: "nvidia_gpu_processes_left_out", Kind: Gauge, Attributes: gpu, Help: "Processes beyond the limit of " + strconv.Itoa(nvml.MaxProcesses) + " per GPU at the latest sample, whose per-process series are left out."}
	GPUXIDLastTimestamp = Metric{Name: "nvidia_gpu_xid_last_timestamp_seconds", Unit: "s", Kind: Gauge, Attributes: gpu, Help: "Unix time of the GPU's latest XID error since the exporter started; no series before the first."}
)

// Labelled readings: the label value each field is reported under.
var (
	pcieDirections = []labelledField{{"tx", nvml.PCIeTxBytesPerSecond}, {"rx", nvml.PCIeRxBytesPerSecond}}
	eccTypes       = []labelledField{{"corrected", nvml.ECCCorrected}, {"uncorrected", nvml.ECCUncorrected}}
	remappedTypes  = []labelledField{
		{"correctable", nvml.RemappedRowsCorrectable}, {"uncorrectable", nvml.RemappedRowsUncorrectable},
		{"pending", nvml.RemappedRowsPending}, {"failed", nvml.RemappedRowsFailed},
	}
	throttleTimes = func() []labelledField {
		out := make([]labelledField, len(nvml.ThrottleTimes))
		for i, t := range nvml.ThrottleTimes {
			out[i] = labelledField{t.Reason, t.Field}
		}
		return out
	}()
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
		gpuFields(GPUPCIeThroughput, "direction", pcieDirections),
		gpuField(GPUPCIeReplays, nvml.PCIeReplays),
		gpuFields(GPUECCErrors, "type", eccTypes),
		gpuFields(GPURemappedRows, "type", remappedTypes),
		gpuFields(GPUThrottleTime, "reason", throttleTimes),
		{Metric: GPUProcessUtil, Each: func(g *nvml.GPU, e *Emit) {
			for _, p := range g.ProcessUtilization {
				pid := attribute.String("pid", strconv.FormatUint(uint64(p.PID), 10))
				e.With(p.SMPercent, pid, attribute.String("engine", "sm"))
				e.With(p.EncoderPercent, pid, attribute.String("engine", "encoder"))
				e.With(p.DecoderPercent, pid, attribute.String("engine", "decoder"))
			}
		}},
		{Metric: GPUProcessInfo, Each: func(g *nvml.GPU, e *Emit) {
			for _, p := range g.ProcessNames {
				e.With(1, attribute.String("pid", strconv.FormatUint(uint64(p.PID), 10)), attribute.String("name", p.Name))
			}
		}},
		{Metric: GPUProcessesLeftOut, Each: func(g *nvml.GPU, e *Emit) { e.Value(float64(g.ProcessesLeftOut)) }},
		{Metric: GPUXIDLastTimestamp, Each: func(g *nvml.GPU, e *Emit) {
			if !g.LastXID.IsZero() {
				e.Value(unixSeconds(g.LastXID))
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

// labelledField is a field reported under one value of a label.
type labelledField struct {
	value string
	field nvml.Field
}

// gpuFields reads the fields of each GPU that supports them, each under
// its value of label.
func gpuFields(m Metric, label string, fields []labelledField) Reading[nvml.Snapshot, nvml.GPU] {
	return Reading[nvml.Snapshot, nvml.GPU]{Metric: m, Each: func(g *nvml.GPU, e *Emit) {
		for _, f := range fields {
			if g.Has(f.field) {
				e.With(g.Values[f.field], attribute.String(label, f.value))
			}
		}
	}}
}

// GPUSeriesLimit is the cardinality limit (series per instrument, as
// sdkmetric.WithCardinalityLimit takes it) for a host with gpus GPUs. The
// instrument with the most series is nvidia_gpu_process_utilization_percent:
// three engines for each of nvml.MaxProcesses processes per GPU. (The next
// largest, nvidia_gpu_process_info, has at most two per-process lists'
// worth; XIDs are NVIDIA's catalogue of under 200 codes.) One more than
// that: at limit N the SDK keeps N-1 series and folds the rest into one
// overflow series.
func GPUSeriesLimit(gpus int) int { return 3*nvml.MaxProcesses*gpus + 1 }

func gpuIndex(g *nvml.GPU) attribute.KeyValue { return attribute.String("gpu", strconv.Itoa(g.Index)) }

// GPU is the gpu-exporter's catalogue.
var GPU = gpuTable.metrics()

// RegisterGPU registers the gpu-exporter's instruments over src's snapshot.
func RegisterGPU(m metric.Meter, src interface{ Snapshot() *nvml.Snapshot }) error {
	return gpuTable.register(m, src.Snapshot)
}
