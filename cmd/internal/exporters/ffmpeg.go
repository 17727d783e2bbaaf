package exporters

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/energy"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// FFmpeg is FFmpeg progress, ingested over HTTP or from standard input.
func FFmpeg() Source {
	cfg := ffmpeg.DefaultConfig
	var (
		token, streamName string
		stdin             bool
		linger            time.Duration
		en                energyFlags
	)
	return Source{
		Group: instruments.FFmpegExporter, DefaultPort: 9506, GuidePort: 9506, PortEnv: "FFMPEG_EXPORTER_PORT",
		Flags: func(fs *flag.FlagSet) {
			fs.IntVar(&cfg.MaxStreams, "ingest.max-streams", cfg.MaxStreams, "streams tracked at once; more get 429")
			fs.DurationVar(&cfg.Silence, "stream.silence", cfg.Silence, "a stream silent this long is reported inactive")
			fs.DurationVar(&cfg.Retention, "stream.retention", cfg.Retention, "how long a finished stream keeps its final values before its series go")
			fs.DurationVar(&cfg.IdleTimeout, "ingest.idle-timeout", cfg.IdleTimeout, "close an ingest connection that sends nothing this long")
			fs.StringVar(&token, "ingest.token", os.Getenv("FFMPEG_EXPORTER_INGEST_TOKEN"), "bearer token required on ingest (env FFMPEG_EXPORTER_INGEST_TOKEN)")
			fs.BoolVar(&stdin, "stdin", false, "also read ffmpeg output from standard input")
			fs.StringVar(&streamName, "stream", "default", "stream name for --stdin")
			fs.DurationVar(&linger, "stdin.linger", 15*time.Second, "with --stdin: keep serving this long after input ends, then end the ffmpeg source (and a single ffmpeg-exporter with it)")
			en.register(fs)
		},
		Open: func(log *slog.Logger) (Built, error) {
			if cfg.MaxStreams < 1 {
				return Built{}, errors.New("--ingest.max-streams must be at least 1")
			}
			c := cfg
			c.Log = log
			var perEncode *energy.Source // takes each encode's final reading as its connection closes
			c.OnClose = func(stream string, conn uint64) {
				if perEncode != nil {
					perEncode.Closed(stream, conn)
				}
			}
			hub := ffmpeg.NewHub(c)
			var err error
			if perEncode, err = en.open(hub, log); err != nil {
				return Built{}, err
			}
			register := func(p *pipeline.Pipeline) error {
				ingest := &ffmpeg.Ingest{Hub: hub, Token: token, Log: log}
				p.HandleStream("/ingest", "POST ffmpeg output (-progress or stderr) for the stream named by ?stream= (default: default)", ingest, token)
				p.HandleStream("/ingest/{stream}", "POST ffmpeg output for the named stream, e.g. ffmpeg -progress http://HOST:PORT/ingest/job42", ingest, token)
				if perEncode != nil {
					if err := instruments.RegisterEnergy(p.Meter, perEncode); err != nil {
						return err
					}
				}
				return instruments.RegisterFFmpeg(p.Meter, hub)
			}
			var src sampling.Source = hub
			if stdin {
				src = &stdinSource{Hub: hub, name: streamName, linger: linger, log: log}
			}
			if perEncode != nil {
				src = newWithEnergy(src, perEncode)
			}
			limit := max(instruments.FFmpegSeriesLimit(c.MaxStreams), instruments.EnergySeriesLimit(c.MaxStreams))
			return Built{Source: src, Register: register, SeriesLimit: limit}, nil
		},
	}
}

// stdinSource is the hub fed from standard input too: when the input ends
// and the linger is over, it ends, and with it the ffmpeg port (so
// `ffmpeg ... | ffmpeg-exporter --stdin` ends with ffmpeg) but nothing else.
type stdinSource struct {
	*ffmpeg.Hub
	name   string
	linger time.Duration
	log    *slog.Logger
}

func (s *stdinSource) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	pruned := make(chan struct{})
	go func() { s.Hub.Run(ctx); close(pruned) }()
	defer func() { cancel(); <-pruned }()

	var peer ffmpeg.Peer // the writer of our standard input's pipe, when it is one
	peer.Pipe, _ = procfs.PipeInode(os.Stdin)
	err := s.Follow(ctx, openStdin(), s.name, peer)
	if ctx.Err() != nil {
		return
	}
	s.log.Info("stdin ended; ending the ffmpeg source after --stdin.linger", "stream", s.name, "linger", s.linger, "err", err)
	select {
	case <-time.After(s.linger):
	case <-ctx.Done():
	}
}

// openStdin returns standard input in non-blocking mode, so that closing it
// at shutdown ends a read blocked on it (a blocking descriptor would keep
// the reader alive, and the process, until the writer closes).
func openStdin() *os.File {
	if err := syscall.SetNonblock(syscall.Stdin, true); err != nil {
		return os.Stdin
	}
	return os.NewFile(uintptr(syscall.Stdin), "/dev/stdin")
}
