package exporters

import (
	"flag"
	"log/slog"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
)

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
			return Built{Source: src, Register: func(p *pipeline.Pipeline) error { return instruments.RegisterGPU(p.Meter, src) }}, nil
		},
	}
}
