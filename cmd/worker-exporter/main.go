// Command worker-exporter runs every source in one process — one OTLP
// connection, one resource — while each source keeps its documented port,
// so the deployment guide's four scrape jobs work unchanged against it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/cmd/internal/exporters"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "worker-exporter:", err)
		os.Exit(1)
	}
}

// source is one enabled source with its listener.
type source struct {
	exporters.Source
	port int
	p    *pipeline.Pipeline
	ln   net.Listener
	err  error // why it cannot serve
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker-exporter", flag.ContinueOnError)
	var (
		webConfig, logLevel, logFormat, listenHost string
		all                                        = exporters.All()
		ports                                      = make([]int, len(all))
	)
	for i, s := range all {
		fs.IntVar(&ports[i], s.Name+".port", s.GuidePort, fmt.Sprintf("port of the %s source (what %s serves); 0 disables it", s.Name, s.Binary))
		s.Flags(fs)
	}
	fs.StringVar(&listenHost, "web.listen-host", "", "host every port listens on (default: all interfaces)")
	pipeline.RegisterWebConfig(fs, &webConfig)
	pipeline.RegisterLogFlags(fs, &logLevel, &logFormat)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log, err := pipeline.NewLogger(stderr, logLevel, logFormat)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	shared, err := pipeline.NewShared(ctx, "worker-exporter", host, log)
	if err != nil {
		return err
	}
	defer shared.Close(context.Background())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var sources []*source
	for i, s := range all {
		if ports[i] == 0 {
			continue
		}
		src := &source{Source: s, port: ports[i]}
		sources = append(sources, src)
		if src.p, src.err = shared.Pipeline(s.Binary); src.err != nil {
			continue
		}
		if src.err = s.Wire(ctx, src.p, log.With("source", s.Name), cancel); src.err != nil {
			continue
		}
		src.ln, src.err = net.Listen("tcp", net.JoinHostPort(listenHost, strconv.Itoa(src.port)))
	}
	if len(sources) == 0 {
		return errors.New("every source is disabled (all --*.port are 0)")
	}
	go reportStart(ctx, sources, log)

	var wg sync.WaitGroup
	serving := 0
	for _, s := range sources {
		if s.err != nil {
			continue
		}
		serving++
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.p.Serve(ctx, s.ln, webConfig); err != nil {
				log.Error("port stopped", "source", s.Name, "port", s.port, "err", err)
			}
		}()
	}
	if serving == 0 {
		return errors.New("no source could start; see the table above")
	}
	wg.Wait()
	return nil
}

// reportStart logs, once, a table of what each source found at start: its
// port and health, or why it cannot serve. Sources that failed keep retrying.
func reportStart(ctx context.Context, sources []*source, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) {
	// Give the background samplers their first sample.
	select {
	case <-ctx.Done():
		return
	case <-time.After(2 * time.Second):
	}
	for _, s := range sources {
		err := s.err
		if err == nil {
			err = s.p.HealthErr()
		}
		if err != nil {
			log.Warn("source", "name", s.Name, "port", s.port, "status", "error", "err", err)
		} else {
			log.Info("source", "name", s.Name, "port", s.port, "status", "ok")
		}
	}
}
