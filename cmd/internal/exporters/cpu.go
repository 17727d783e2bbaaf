package exporters

import (
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
		Group: instruments.CPUExporter, DefaultPort: 9500, GuidePort: 9510, PortEnv: "CPU_EXPORTER_PORT",
		Flags: func(fs *flag.FlagSet) {
			SharedStringVar(fs, &sysfs, "path.sysfs", "/sys", "sysfs mount point") // energy per encode reads it too
			fs.DurationVar(&interval, "rapl.interval", time.Second, "RAPL sampling interval (shortened automatically so no counter wrap is missed; never below "+rapl.MinInterval.String()+")")
		},
		Open: func(log *slog.Logger) (Built, error) {
			src := rapl.New(rapl.Config{FS: os.DirFS(sysfs), Root: sysfs, Interval: interval, Log: log})
			return Built{Source: src, Register: func(p *pipeline.Pipeline) error { return instruments.RegisterRAPL(p.Meter, src) }}, nil
		},
	}
}
