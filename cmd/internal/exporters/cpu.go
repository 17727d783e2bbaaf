package exporters

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
)

// CPU is RAPL power and energy.
func CPU() Source {
	var (
		sysfs    string
		interval time.Duration
	)
	return Source{
		Name: "cpu", Binary: "cpu-exporter", DefaultPort: 9500, GuidePort: 9510, PortEnv: "CPU_EXPORTER_PORT",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&sysfs, "path.sysfs", "/sys", "sysfs mount point")
			fs.DurationVar(&interval, "rapl.interval", time.Second, "RAPL sampling interval (shortened automatically so no counter wrap is missed)")
		},
		Wire: func(ctx context.Context, p *pipeline.Pipeline, log *slog.Logger, _ func()) error {
			src := rapl.New(rapl.Config{FS: os.DirFS(sysfs), Root: sysfs, Interval: interval, Log: log})
			if err := instruments.RegisterRAPL(p.Meter, src); err != nil {
				return err
			}
			if err := instruments.RegisterSelf(p.Meter, "rapl", src.Stats); err != nil {
				return err
			}
			p.AddHealth("rapl", src.Health)
			go src.Run(ctx)
			return nil
		},
	}
}
