// Package exporters describes each source as the binaries run it — its
// names, port contract, flags and how it is built — and runs them: a single
// exporter serves one source on one port, worker-exporter serves every
// source on its own port in one process. Both go through the same runner.
package exporters

import (
	"flag"
	"log/slog"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// Source is one source as an exporter binary runs it.
type Source struct {
	// Group gives the source's name (cpu, gpu, ffmpeg, docker: flags,
	// /health, self-metrics and logs all use it), its single exporter's
	// binary name and its metrics.
	instruments.Group
	DefaultPort int    // the single exporter's default port
	GuidePort   int    // the port the deployment guide runs it on: worker-exporter's default
	PortEnv     string // the guide's port variable

	// Reads are the readers of the machine it needs: the runner registers
	// their flags once and builds each once per process (Readers).
	Reads Reads
	// Flags registers the source's own flags.
	Flags func(fs *flag.FlagSet)
	// Open builds the source from its parsed flags over the process's
	// readers. A flag value that cannot work is an error here, and the
	// binary exits; missing hardware or a daemon that is down is not: the
	// source reports it on /health and keeps trying.
	Open func(r *Readers, log *slog.Logger) (OpenedSource, error)
}

// OpenedSource is a source ready to attach to a pipeline and run.
type OpenedSource struct {
	sampling.Source
	// Register adds the source's instruments and endpoints to p.
	Register func(p *pipeline.Pipeline) error
	// SeriesLimit is the most series any one of its instruments can have
	// within the source's own bounds (streams, containers, GPUs); the
	// pipeline sets the SDK's cardinality limit from it so that nothing
	// within them is folded into an overflow series. 0: the SDK's default.
	SeriesLimit int
}

// All are the sources worker-exporter runs, in the guide's order.
func All() []Source { return []Source{CPU(), GPU(), FFmpeg(), Docker()} }

// Register registers the flags of sources and of the readers they need,
// each once.
func Register(fs *flag.FlagSet, r *Readers, sources ...Source) {
	var reads Reads
	for _, s := range sources {
		reads |= s.Reads
	}
	r.Register(fs, reads)
	for _, s := range sources {
		s.Flags(fs)
	}
}
