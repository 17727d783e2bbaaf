package exporters

import (
	"flag"
	"log/slog"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
)

// maxGPUs is the most GPUs one host has (DGX-2, HGX-2): the GPU count is
// not known until NVML loads, the series limit is needed before.
const maxGPUs = 16

// GPU is NVIDIA GPUs, from the process's NVML reader.
func GPU() Source {
	return Source{
		Group: instruments.GPUExporter, DefaultPort: 9505, GuidePort: 9511, PortEnv: "GPU_EXPORTER_PORT",
		Reads: ReadsNVML,
		Flags: func(*flag.FlagSet) {},
		Open: func(r *Readers, _ *slog.Logger) (OpenedSource, error) {
			src := r.GPUs()
			return OpenedSource{Source: src, Register: func(p *pipeline.Pipeline) error { return RegisterGPU(p, src.Source) },
				SeriesLimit: instruments.GPUSeriesLimit(maxGPUs)}, nil
		},
	}
}

// RegisterGPU adds src's instruments to p, and to p's /health what src
// does not cover (GPUs in MIG mode).
func RegisterGPU(p *pipeline.Pipeline, src *nvml.Source) error {
	p.AddHealthNotes(instruments.GPUExporter.Name, func() []string { return src.Snapshot().Notes() })
	return instruments.RegisterGPU(p.Meter, src)
}
