package exporters

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/energy"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
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
		Reads: ReadsRAPL | ReadsNVML | ReadsProcfs, // energy per encode
		Flags: func(fs *flag.FlagSet) {
			fs.IntVar(&cfg.MaxStreams, "ingest.max-streams", cfg.MaxStreams, "streams tracked at once; more get 429")
			fs.DurationVar(&cfg.Silence, "stream.silence", cfg.Silence, "a stream silent this long is reported inactive")
			fs.DurationVar(&cfg.Retention, "stream.retention", cfg.Retention, "how long a finished stream keeps its final values before its series go")
			fs.DurationVar(&cfg.IdleTimeout, "ingest.idle-timeout", cfg.IdleTimeout, "close an ingest connection that sends nothing this long")
			fs.StringVar(&token, "ingest.token", os.Getenv("FFMPEG_EXPORTER_INGEST_TOKEN"), "bearer token required on ingest (env FFMPEG_EXPORTER_INGEST_TOKEN)")
			fs.BoolVar(&stdin, "stdin", false, "also read ffmpeg output from standard input")
			fs.StringVar(&streamName, "stdin.stream", "default", "stream name for --stdin")
			fs.StringVar(&streamName, "stream", "default", "the old name of --stdin.stream, still taken")
			fs.DurationVar(&linger, "stdin.linger", 15*time.Second, "with --stdin: keep serving this long after input ends, then end the ffmpeg source (and a single ffmpeg-exporter with it)")
			en.register(fs)
		},
		Open: func(r *Readers, log *slog.Logger) (OpenedSource, error) {
			if cfg.MaxStreams < 1 {
				return OpenedSource{}, fmt.Errorf("--ingest.max-streams %d: must be at least 1", cfg.MaxStreams)
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
			if perEncode, err = en.open(r, hub, log); err != nil {
				return OpenedSource{}, err
			}
			register := func(p *pipeline.Pipeline) error {
				ingest := &ffmpeg.Ingest{Hub: hub, Token: token, Log: log}
				p.HandleStream("/ingest", "POST ffmpeg output (-progress or stderr) for the stream named by ?stream= (default: default)", ingest, token)
				p.HandleStream("/ingest/{stream}", "POST ffmpeg output for the named stream, e.g. ffmpeg -progress http://HOST:PORT/ingest/job42", ingest, token)
				if perEncode != nil {
					p.AddHealthNotes(instruments.FFmpegExporter.Name, func() []string { return perEncode.Snapshot().IdleNotes() })
					if err := instruments.RegisterEnergy(p.Meter, perEncode); err != nil {
						return err
					}
				}
				return instruments.RegisterFFmpeg(p.Meter, hub)
			}
			var src sampling.Source = hub
			if stdin {
				src = &ffmpeg.Stdin{Hub: hub, Stream: streamName, Linger: linger}
			}
			if perEncode != nil {
				src = newWithEnergy(src, perEncode, r.GPUs())
			}
			limit := max(instruments.FFmpegSeriesLimit(c.MaxStreams), instruments.EnergySeriesLimit(c.MaxStreams))
			return OpenedSource{Source: src, Register: register, SeriesLimit: limit}, nil
		},
	}
}
