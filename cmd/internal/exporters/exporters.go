// Package exporters describes each source as the binaries run it: its
// name, port contract, flags, and how it attaches to a pipeline. The single
// exporters run one; worker-exporter runs them all in one process.
package exporters

import (
	"context"
	"flag"
	"log/slog"

	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
)

// Source is one source as an exporter binary runs it.
type Source struct {
	Name        string // cpu, gpu, ffmpeg, docker: worker-exporter's --NAME.port
	Binary      string // its single exporter
	DefaultPort int    // the single exporter's default port
	GuidePort   int    // the port the deployment guide runs it on: worker-exporter's default
	PortEnv     string // the guide's port variable
	// Flags registers the source's flags; Wire attaches it to p after parsing.
	Flags func(fs *flag.FlagSet)
	Wire  func(ctx context.Context, p *pipeline.Pipeline, log *slog.Logger, stop func()) error
}

// All are the sources worker-exporter runs, in the guide's order.
func All() []Source { return []Source{CPU(), GPU(), FFmpeg(), Docker()} }

// Exporter is the single exporter of s.
func (s Source) Exporter() pipeline.Exporter {
	return pipeline.Exporter{Name: s.Binary, DefaultPort: s.DefaultPort, PortEnv: s.PortEnv, Flags: s.Flags, Wire: s.Wire}
}
