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
// fixture tree (no RAPL here), through the real pipeline handler.
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
	h := p.Handler()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
