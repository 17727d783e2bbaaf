package exporters

import (
	"context"
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
		Name: "gpu", Binary: "gpu-exporter", DefaultPort: 9505, GuidePort: 9511, PortEnv: "GPU_EXPORTER_PORT",
		Flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&cfg.Interval, "nvml.interval", cfg.Interval, "NVML sampling interval")
			fs.DurationVar(&cfg.Timeout, "nvml.timeout", cfg.Timeout, "an NVML sample taking longer is reported as stuck; scrapes keep the previous values")
			fs.DurationVar(&cfg.RetryInterval, "nvml.retry-interval", cfg.RetryInterval, "how often to retry loading NVML while it is missing")
		},
		Wire: func(ctx context.Context, p *pipeline.Pipeline, log *slog.Logger, _ func()) error {
			cfg.Log = log
			src := nvml.New(cfg)
			if err := instruments.RegisterGPU(p.Meter, src); err != nil {
				return err
			}
			if err := instruments.RegisterSelf(p.Meter, "nvml", src.Stats); err != nil {
				return err
			}
			p.AddHealth("nvml", src.Health)
			go src.Run(ctx)
			return nil
		},
	}
}
