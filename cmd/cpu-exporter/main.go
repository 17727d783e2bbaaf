// Command cpu-exporter serves CPU energy and power from RAPL (powercap).
package main

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

func main() { cpuExporter().Main() }

func cpuExporter() pipeline.Exporter {
	var (
		sysfs    string
		interval time.Duration
	)
	return pipeline.Exporter{
		Name: "cpu-exporter", DefaultPort: 9500, PortEnv: "CPU_EXPORTER_PORT",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&sysfs, "path.sysfs", "/sys", "sysfs mount point")
			fs.DurationVar(&interval, "rapl.interval", time.Second, "sampling interval (shortened automatically so no counter wrap is missed)")
		},
		Wire: func(ctx context.Context, p *pipeline.Pipeline, log *slog.Logger, _ func()) error {
			src := rapl.New(rapl.Config{FS: os.DirFS(sysfs), Root: sysfs, Interval: interval, Log: log})
			if err := instruments.RegisterRAPL(p.Meter, src); err != nil {
				return err
			}
			p.AddHealth("rapl", src.Health)
			go src.Run(ctx)
			return nil
		},
	}
}
