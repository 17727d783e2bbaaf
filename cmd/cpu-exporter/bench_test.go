package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
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
	p, src, _ := cpuPipeline(b)
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

// cpuPipeline is the cpu-exporter's pipeline over the two-socket fixture
// tree (no RAPL here), wired as the exporter's attach wires it, one sample
// taken; it closes when the benchmark ends.
func cpuPipeline(b *testing.B) (*pipeline.Pipeline, *rapl.Source, string) {
	b.Helper()
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	root := raplfixture.Build(b, b.TempDir(), raplfixture.TwoSockets)
	log := slog.New(slog.DiscardHandler)
	o := pipeline.NewOptions(flag.NewFlagSet("bench", flag.ContinueOnError), "cpu-exporter", 9500, "CPU_EXPORTER_PORT")
	p, err := pipeline.New(context.Background(), o, ":9500", log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close(context.Background()) })
	src := rapl.New(rapl.Config{FS: os.DirFS(root), Root: root, Interval: time.Second, Log: log})
	src.Sample()
	if err := instruments.RegisterRAPL(p.Meter, src); err != nil {
		b.Fatal(err)
	}
	if err := instruments.RegisterSelf(p.Meter, "cpu", src.Stats); err != nil {
		b.Fatal(err)
	}
	p.Watch(src)
	return p, src, root
}

// BenchmarkScrapeMiss: the miss path, as Prometheus meets it in production
// (a scrape every 5 to 15 s, RAPL sampled every second): every scrape
// follows a new sample, so every scrape renders. Each scrape here comes
// after a fresh RAPL sample (src.Sample reads the fixture's zones, as
// node_exporter reads them on each scrape), over loopback HTTP with gzip,
// one client, one scrape at a time, through the handler wired as the
// exporter wires it. node_exporter (Debian's prometheus-node-exporter, only
// its rapl collector, the same tree) is scraped by the same client the same
// way in the same run: compare the two scrapes/s figures.
func BenchmarkScrapeMiss(b *testing.B) {
	node, err := exec.LookPath("prometheus-node-exporter")
	if err != nil {
		b.Skipf("no node_exporter to compare with (apt-get install -y prometheus-node-exporter): %v", err)
	}
	p, src, root := cpuPipeline(b)
	ours := httptest.NewServer(p.Handler())
	defer ours.Close()

	addr := "127.0.0.1:" + exportertest.FreePort(b)
	cmd := exec.Command(node, "--collector.disable-defaults", "--collector.rapl", "--path.sysfs="+root, "--web.listen-address="+addr)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	client := &http.Client{}
	scrape := func(b *testing.B, url string) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n == 0 {
			b.Fatalf("%s: %d, %d bytes", url, resp.StatusCode, n)
		}
	}
	exportertest.WaitFor(b, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	for _, bc := range []struct {
		name   string
		url    string
		before func()
	}{
		{"cpu-exporter", ours.URL + "/metrics", src.Sample},
		{"node_exporter", "http://" + addr + "/metrics", func() {}}, // reads sysfs on every scrape
	} {
		b.Run(bc.name, func(b *testing.B) {
			scrape(b, bc.url) // the connection, outside the timing
			b.ResetTimer()
			for b.Loop() {
				bc.before()
				scrape(b, bc.url)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "scrapes/s")
		})
	}
}
