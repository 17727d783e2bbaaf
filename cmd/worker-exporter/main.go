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
	"path/filepath"
	"strconv"

	"github.com/ffmpeg-rtmp/worker-exporters/cmd/internal/exporters"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
)

// main runs worker-exporter or, called by another exporter's name (a link,
// as the container image ships them), that single exporter: one binary
// serves all five, so the image carries its code once.
func main() {
	name := filepath.Base(os.Args[0])
	for _, s := range exporters.All() {
		if s.Binary == name {
			s.Main()
		}
	}
	exporters.Main("worker-exporter", run)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker-exporter", flag.ContinueOnError)
	var (
		logLevel, logFormat, listenHost string
		all                             = exporters.All()
		ports                           = make([]int, len(all))
		readers                         = exporters.NewReaders()
	)
	for i, s := range all {
		fs.IntVar(&ports[i], s.Name+".port", s.GuidePort, fmt.Sprintf("port of the %s source (what %s serves); 0 disables it", s.Name, s.Binary))
	}
	exporters.Register(fs, readers, all...)
	fs.StringVar(&listenHost, "web.listen-host", "", "host every port listens on (default: all interfaces)")
	web := pipeline.RegisterWeb(fs)
	pipeline.RegisterLogFlags(fs, &logLevel, &logFormat)
	if err := exporters.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	log, err := pipeline.NewLogger(stderr, logLevel, logFormat)
	if err != nil {
		return err
	}
	var serve []exporters.Port
	for i, s := range all {
		if ports[i] < 0 || ports[i] > 65535 {
			return fmt.Errorf("--%s.port %d: not a port number (0-65535)", s.Name, ports[i])
		}
		if ports[i] != 0 {
			serve = append(serve, exporters.Port{Source: s, Addr: net.JoinHostPort(listenHost, strconv.Itoa(ports[i]))})
		}
	}
	if len(serve) == 0 {
		return errors.New("every source is disabled (all --*.port are 0)")
	}
	host, _ := os.Hostname()
	return exporters.ProcessConfig{Service: "worker-exporter", InstanceID: host, Web: *web, Readers: readers, Log: log}.Serve(ctx, serve)
}
