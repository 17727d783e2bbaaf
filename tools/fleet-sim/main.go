// Command fleet-sim runs simulated worker-exporters in one process — the
// real instruments and OTLP pipeline over made-up snapshots of a busy
// transcoding worker (2 sockets, 4 GPUs, 8 live streams, 20 containers),
// each with its own resource and OTLP connection — to size the push path.
//
//	fleet-sim -workers 250,500,1000             # start VictoriaMetrics and a gateway, print the sizing table
//	fleet-sim -workers 1000 -sweep              # then keep doubling until the gateway does not hold the fleet
//	fleet-sim -workers 500 -endpoint http://gateway:4317   # only push, to a gateway of yours, until interrupted
//
// `make fleet` runs the first with the repository's binaries and configs.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/tools/fleet"
	"github.com/ffmpeg-rtmp/worker-exporters/tools/sizing"
)

func main() {
	cfg := sizing.Config{Interval: 15 * time.Second, Window: 2, Max: 64000}
	workers := "250,500,1000"
	endpoint := ""
	flag.StringVar(&workers, "workers", workers, "fleet sizes to measure, comma-separated, growing")
	flag.BoolVar(&cfg.Sweep, "sweep", false, "after -workers, keep doubling the fleet until the gateway does not hold it (or -max)")
	flag.IntVar(&cfg.Max, "max", cfg.Max, "the largest fleet a -sweep tries")
	flag.DurationVar(&cfg.Interval, "interval", cfg.Interval, "each worker's push interval (OTEL_METRIC_EXPORT_INTERVAL)")
	flag.IntVar(&cfg.Window, "intervals", cfg.Window, "intervals measured at each size")
	flag.StringVar(&cfg.Collector, "collector", "bin/otelcol-worker", "the collector binary (make collector)")
	flag.StringVar(&cfg.CollectorConfig, "collector.config", "otel-collector/config.yaml", "the gateway's config")
	flag.StringVar(&cfg.VictoriaMetrics, "victoria-metrics", "bin/victoria-metrics", "the VictoriaMetrics binary (make victoriametrics)")
	flag.StringVar(&cfg.VMFlags, "victoria-metrics.flags", "examples/victoriametrics/flags", "VictoriaMetrics' flags file")
	flag.StringVar(&endpoint, "endpoint", endpoint, "push to this OTLP gRPC endpoint instead, measuring nothing, until interrupted")
	verbose := flag.Bool("v", false, "log progress")
	flag.Parse()

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	sizes, err := parseSizes(workers)
	if err == nil && (cfg.Interval <= 0 || cfg.Window < 1) {
		err = fmt.Errorf("-interval %v and -intervals %d must be positive", cfg.Interval, cfg.Window)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet-sim:", err)
		os.Exit(2)
	}
	cfg.Workers = sizes

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if endpoint != "" {
		err = push(ctx, endpoint, cfg)
	} else {
		err = measure(ctx, cfg)
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "fleet-sim:", err)
		os.Exit(1)
	}
}

func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || len(sizes) > 0 && n <= sizes[len(sizes)-1] {
			return nil, fmt.Errorf("-workers %q: want growing positive counts, e.g. 250,500,1000", s)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

func measure(ctx context.Context, cfg sizing.Config) error {
	dir, err := os.MkdirTemp("", "fleet-sim-vm")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.DataDir = dir
	_, _, err = sizing.Run(ctx, cfg, os.Stdout)
	return err
}

// push runs the largest fleet of cfg against endpoint until ctx ends.
func push(ctx context.Context, endpoint string, cfg sizing.Config) error {
	f := fleet.New(fleet.Push{Endpoint: endpoint, Interval: cfg.Interval}, cfg.Log)
	defer func() {
		stop, cancel := context.WithTimeout(context.Background(), 30*time.Second) // the last pushes
		defer cancel()
		f.Close(stop)
	}()
	n := cfg.Workers[len(cfg.Workers)-1]
	if err := f.Grow(ctx, n); err != nil {
		return err
	}
	series, err := f.Workers()[0].Series()
	if err != nil {
		return err
	}
	fmt.Printf("%d workers pushing %d series each to %s every %v; interrupt to stop\n", n, series, endpoint, cfg.Interval)
	<-ctx.Done()
	return nil
}
