package exporters

import (
	"flag"
	"log/slog"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
)

// maxGPUs is the most GPUs one host has (DGX-2, HGX-2): the GPU count is
// not known until NVML loads, the series limit is needed before.
const maxGPUs = 16

// GPU is NVIDIA GPUs through NVML.
func GPU() Source {
	cfg := nvml.Config{Interval: time.Second, Timeout: 5 * time.Second, RetryInterval: 30 * time.Second}
	return Source{
		Group: instruments.GPUExporter, DefaultPort: 9505, GuidePort: 9511, PortEnv: "GPU_EXPORTER_PORT",
		Flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&cfg.Interval, "nvml.interval", cfg.Interval, "NVML sampling interval")
			fs.DurationVar(&cfg.Timeout, "nvml.timeout", cfg.Timeout, "an NVML sample taking longer is reported as stuck; scrapes keep the previous values")
			fs.DurationVar(&cfg.RetryInterval, "nvml.retry-interval", cfg.RetryInterval, "how often to retry loading NVML while it is missing")
		},
		Open: func(log *slog.Logger) (Built, error) {
			c := cfg
			c.Log = log
			src := nvml.New(c)
			return Built{Source: src, Register: func(p *pipeline.Pipeline) error { return RegisterGPU(p, src) },
				SeriesLimit: instruments.GPUSeriesLimit(maxGPUs)}, nil
		},
	}
}

// RegisterGPU adds src's instruments to p, and to p's /health what src
// does not cover (GPUs in MIG mode).
func RegisterGPU(p *pipeline.Pipeline, src *nvml.Source) error {
	p.AddHealthNotes(instruments.GPUExporter.Source, func() []string { return src.Snapshot().Notes() })
	return instruments.RegisterGPU(p.Meter, src)
}
