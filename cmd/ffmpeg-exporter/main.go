// Command ffmpeg-exporter serves FFmpeg encoding progress as metrics.
//
//	ffmpeg ... -progress http://localhost:9506/ingest/job42 ...
//	ffmpeg ... 2>&1 | ffmpeg-exporter --stdin --stream job42
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ffmpeg-exporter:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ffmpeg-exporter", flag.ContinueOnError)
	opts := pipeline.NewOptions(fs, "ffmpeg-exporter", 9506, "FFMPEG_EXPORTER_PORT")
	cfg := ffmpeg.DefaultConfig
	fs.IntVar(&cfg.MaxStreams, "ingest.max-streams", cfg.MaxStreams, "streams tracked at once; more get 429")
	fs.DurationVar(&cfg.Silence, "stream.silence", cfg.Silence, "a stream silent this long is reported inactive")
	fs.DurationVar(&cfg.Retention, "stream.retention", cfg.Retention, "how long a finished stream keeps its final values before its series go")
	fs.DurationVar(&cfg.IdleTimeout, "ingest.idle-timeout", cfg.IdleTimeout, "close an ingest connection that sends nothing this long")
	token := fs.String("ingest.token", os.Getenv("FFMPEG_EXPORTER_INGEST_TOKEN"), "bearer token required on ingest (env FFMPEG_EXPORTER_INGEST_TOKEN)")
	stdin := fs.Bool("stdin", false, "also read ffmpeg output from standard input")
	streamName := fs.String("stream", "default", "stream name for --stdin")
	linger := fs.Duration("stdin.linger", 15*time.Second, "with --stdin: keep serving this long after input ends, then exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log, err := opts.Logger(os.Stderr)
	if err != nil {
		return err
	}
	addr, err := opts.Address()
	if err != nil {
		return err
	}
	if cfg.MaxStreams < 1 {
		return errors.New("--ingest.max-streams must be at least 1")
	}

	hub := ffmpeg.NewHub(cfg)
	p, err := pipeline.New(ctx, opts, addr, log)
	if err != nil {
		return err
	}
	if err := instruments.RegisterFFmpeg(p.Meter, hub); err != nil {
		return err
	}
	ingest := &ffmpeg.Ingest{Hub: hub, Token: *token, Log: log}
	p.Handle("/ingest", "POST ffmpeg output (-progress or stderr) for the stream named by ?stream= (default: default)", ingest)
	p.Handle("/ingest/{stream}", "POST ffmpeg output for the named stream, e.g. ffmpeg -progress http://HOST:PORT/ingest/job42", ingest)
	p.AddHealth("ffmpeg", hub.Health)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go prune(ctx, hub)
	if *stdin {
		conn, err := hub.Open(*streamName)
		if err != nil {
			return err
		}
		go func() {
			err := conn.Consume(os.Stdin)
			conn.Close()
			log.Info("stdin ended; exiting after --stdin.linger", "stream", *streamName, "linger", *linger, "err", err)
			select {
			case <-time.After(*linger):
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	return p.Serve(ctx, ln)
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
