package main

import (
	"context"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/raplfixture"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
)

// BenchmarkScrape: one /metrics scrape of the cpu-exporter on the two-socket
// fixture tree (no RAPL here), through the real pipeline handler, wired as
// the exporter wires it: cached, where nothing changed since the last
// scrape (RAPL samples once a second; Prometheus scrapes every 15 s, a
// load test thousands of times a second), and changed, where a sample was
// published since, so the scrape renders again.
func BenchmarkScrape(b *testing.B) {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	root := raplfixture.Build(b, b.TempDir(), raplfixture.TwoSockets)
	log := slog.New(slog.DiscardHandler)
	o := pipeline.NewOptions(flag.NewFlagSet("bench", flag.ContinueOnError), "cpu-exporter", 9500, "CPU_EXPORTER_PORT")
	p, err := pipeline.New(context.Background(), o, ":9500", log)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(context.Background())
	src := rapl.New(rapl.Config{FS: os.DirFS(root), Root: root, Interval: time.Second, Log: log})
	src.Sample()
	if err := instruments.RegisterRAPL(p.Meter, src); err != nil {
		b.Fatal(err)
	}
	if err := instruments.RegisterSelf(p.Meter, "cpu", src.Stats); err != nil {
		b.Fatal(err)
	}
	p.Watch(src) // as the exporter's attach does
	h := p.Handler()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	for _, bc := range []struct {
		name   string
		before func() // each scrape
	}{
		{"cached", func() {}},
		{"changed", src.Changed},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.before()
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code)
				}
			}
		})
	}
}
