package exporters

import (
	"flag"
	"log/slog"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
)

// CPU is RAPL power and energy, from the process's RAPL reader.
func CPU() Source {
	return Source{
		Group: instruments.CPUExporter, DefaultPort: 9500, GuidePort: 9510, PortEnv: "CPU_EXPORTER_PORT",
		Reads: ReadsRAPL,
		Flags: func(*flag.FlagSet) {},
		Open: func(r *Readers, _ *slog.Logger) (OpenedSource, error) {
			src := r.RAPL()
			return OpenedSource{Source: src, Register: func(p *pipeline.Pipeline) error { return instruments.RegisterRAPL(p.Meter, src.Source) },
				SeriesLimit: rapl.MaxZones + 1}, nil
		},
	}
}
