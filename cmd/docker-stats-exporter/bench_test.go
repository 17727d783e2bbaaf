package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/fakeengine"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/docker"
)

// BenchmarkCollect100SlowContainers: 100 containers behind a fake Engine
// API whose stats calls take 1 s each. Reports the time of a full
// collection cycle at the default concurrency, and the latency of /metrics
// scrapes taken while that cycle runs.
func BenchmarkCollect100SlowContainers(b *testing.B) {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	e := fakeengine.Start(b)
	var cs []*fakeengine.Container
	for i := range 100 {
		cs = append(cs, &fakeengine.Container{ID: fmt.Sprintf("c%03d", i), Name: fmt.Sprintf("enc-%03d", i), Image: "ffmpeg", State: "running",
			StatsDelay: time.Second, Stats: container.StatsResponse{Read: time.Now(), MemoryStats: container.MemoryStats{Usage: 1 << 20}}})
	}
	e.Set(cs...)
	cli, err := docker.NewClient(docker.DefaultMaxResponseBytes, client.WithHost(e.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	cfg := docker.Config{Client: cli, Interval: 5 * time.Second, Timeout: 5 * time.Second, Concurrency: 16, MaxContainers: 1000} // the flags' defaults
	src := docker.New(cfg)
	o := pipeline.NewOptions(flag.NewFlagSet("bench", flag.ContinueOnError), "docker-stats-exporter", 9501, "DOCKER_STATS_PORT")
	p, err := pipeline.New(context.Background(), o, ":9501", slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(context.Background())
	if err := instruments.RegisterDocker(p.Meter, src); err != nil {
		b.Fatal(err)
	}
	p.Watch(src)                     // as the exporter's attach does
	src.Sample(context.Background()) // a first cycle, so scrapes have 100 containers to encode

	var cycle time.Duration
	var scrapes []time.Duration
	for b.Loop() {
		done := make(chan time.Duration)
		go func() {
			start := time.Now()
			src.Sample(context.Background())
			done <- time.Since(start)
		}()
		scrapes = scrapes[:0]
	scraping:
		for {
			select {
			case cycle = <-done:
				break scraping
			default:
			}
			start := time.Now()
			rec := httptest.NewRecorder()
			p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			scrapes = append(scrapes, time.Since(start))
			time.Sleep(10 * time.Millisecond)
		}
	}
	sort.Slice(scrapes, func(i, j int) bool { return scrapes[i] < scrapes[j] })
	b.ReportMetric(cycle.Seconds(), "s/cycle")
	b.ReportMetric(float64(len(scrapes)), "scrapes-during-cycle")
	b.ReportMetric(float64(scrapes[len(scrapes)/2].Microseconds())/1000, "ms-p50/scrape")
	b.ReportMetric(float64(scrapes[len(scrapes)*99/100].Microseconds())/1000, "ms-p99/scrape")
	b.ReportMetric(0, "ns/op")
}
