package exporters

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
)

// FFmpeg is FFmpeg progress, ingested over HTTP or from standard input.
func FFmpeg() Source {
	cfg := ffmpeg.DefaultConfig
	var (
		token, streamName string
		stdin             bool
		linger            time.Duration
	)
	return Source{
		Name: "ffmpeg", Binary: "ffmpeg-exporter", DefaultPort: 9506, GuidePort: 9506, PortEnv: "FFMPEG_EXPORTER_PORT",
		Flags: func(fs *flag.FlagSet) {
			fs.IntVar(&cfg.MaxStreams, "ingest.max-streams", cfg.MaxStreams, "streams tracked at once; more get 429")
			fs.DurationVar(&cfg.Silence, "stream.silence", cfg.Silence, "a stream silent this long is reported inactive")
			fs.DurationVar(&cfg.Retention, "stream.retention", cfg.Retention, "how long a finished stream keeps its final values before its series go")
			fs.DurationVar(&cfg.IdleTimeout, "ingest.idle-timeout", cfg.IdleTimeout, "close an ingest connection that sends nothing this long")
			fs.StringVar(&token, "ingest.token", os.Getenv("FFMPEG_EXPORTER_INGEST_TOKEN"), "bearer token required on ingest (env FFMPEG_EXPORTER_INGEST_TOKEN)")
			fs.BoolVar(&stdin, "stdin", false, "also read ffmpeg output from standard input")
			fs.StringVar(&streamName, "stream", "default", "stream name for --stdin")
			fs.DurationVar(&linger, "stdin.linger", 15*time.Second, "with --stdin: keep serving this long after input ends, then exit")
		},
		Wire: func(ctx context.Context, p *pipeline.Pipeline, log *slog.Logger, stop func()) error {
			if cfg.MaxStreams < 1 {
				return errors.New("--ingest.max-streams must be at least 1")
			}
			hub := ffmpeg.NewHub(cfg)
			if err := instruments.RegisterFFmpeg(p.Meter, hub); err != nil {
				return err
			}
			ingest := &ffmpeg.Ingest{Hub: hub, Token: token, Log: log}
			p.Handle("/ingest", "POST ffmpeg output (-progress or stderr) for the stream named by ?stream= (default: default)", ingest)
			p.Handle("/ingest/{stream}", "POST ffmpeg output for the named stream, e.g. ffmpeg -progress http://HOST:PORT/ingest/job42", ingest)
			if err := instruments.RegisterSelf(p.Meter, "ffmpeg", nil); err != nil {
				return err
			}
			p.AddHealth("ffmpeg", hub.Health)
			go prune(ctx, hub)
			if stdin {
				return readStdin(ctx, hub, streamName, linger, log, stop)
			}
			return nil
		},
	}
}

// readStdin feeds standard input to stream name, then ends serving linger
// after it closes, so `ffmpeg ... | ffmpeg-exporter --stdin` ends with ffmpeg.
func readStdin(ctx context.Context, hub *ffmpeg.Hub, name string, linger time.Duration, log *slog.Logger, stop func()) error {
	conn, err := hub.Open(name)
	if err != nil {
		return err
	}
	go func() {
		err := conn.Consume(os.Stdin)
		conn.Close()
		log.Info("stdin ended; exiting after --stdin.linger", "stream", name, "linger", linger, "err", err)
		select {
		case <-time.After(linger):
			stop()
		case <-ctx.Done():
		}
	}()
	return nil
}

// prune drops finished streams whose retention is up.
func prune(ctx context.Context, hub *ffmpeg.Hub) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			hub.Prune()
		}
	}
}
