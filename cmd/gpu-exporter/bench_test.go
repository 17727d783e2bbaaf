//go:build cgo

package main

import (
	"context"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/gpumock"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
)

// newMockSource is the NVML source over go-nvml's mock with 8 H100s (no GPU here).
func newMockSource(b *testing.B) *nvml.Source {
	src := nvml.New(nvml.Config{Lib: gpumock.New(8), Interval: time.Second, Timeout: 5 * time.Second, RetryInterval: time.Second})
	b.Cleanup(src.Close)
	src.Sample(context.Background())
	return src
}

// BenchmarkCollect8GPUs: one collection cycle of 8 mock GPUs (every NVML call the exporter makes).
func BenchmarkCollect8GPUs(b *testing.B) {
	src := newMockSource(b)
	b.ReportAllocs()
	for b.Loop() {
		src.Sample(context.Background())
	}
}

// BenchmarkScrape8GPUs: one /metrics scrape of 8 mock GPUs through the real
// pipeline, watched as the exporter's attach watches it: cached (nothing
// changed since the last scrape) and changed (a sample was published since).
func BenchmarkScrape8GPUs(b *testing.B) {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	src := newMockSource(b)
	o := pipeline.NewOptions(flag.NewFlagSet("bench", flag.ContinueOnError), "gpu-exporter", 9505, "GPU_EXPORTER_PORT")
	p, err := pipeline.New(context.Background(), o, ":9505", slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(context.Background())
	if err := instruments.RegisterGPU(p.Meter, src); err != nil {
		b.Fatal(err)
	}
	p.Watch(src)
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
				p.Handler().ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code)
				}
			}
		})
	}
}
