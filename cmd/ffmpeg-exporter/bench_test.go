package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
)

// BenchmarkIngest1000Streams holds 1,000 live chunked ingest POSTs open
// against the exporter's real HTTP server and reports the server's memory
// per stream, then measures a /metrics scrape (gzip, as Prometheus asks)
// with them all live: at rest, where the scrape is served from the cache,
// and changing, where a stream reported since the last scrape (1,000
// streams reporting every 0.5 s move the hub 2,000 times a second), so
// every scrape renders the 10,000 series again. Allocations are the whole
// process's, server included. The clients are raw TCP connections, so
// their own cost stays out of the figure.
func BenchmarkIngest1000Streams(b *testing.B) {
	const streams = 1000
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	log := slog.New(slog.DiscardHandler)
	o := pipeline.NewOptions(flag.NewFlagSet("bench", flag.ContinueOnError), "ffmpeg-exporter", 9506, "FFMPEG_EXPORTER_PORT")
	p, err := pipeline.New(context.Background(), o, ":9506", log)
	if err != nil {
		b.Fatal(err)
	}
	hub := ffmpeg.NewHub(ffmpeg.DefaultConfig)
	if err := instruments.RegisterFFmpeg(p.Meter, hub); err != nil {
		b.Fatal(err)
	}
	p.Watch(hub) // as attach does
	p.HandleStream("/ingest/{stream}", "", &ffmpeg.Ingest{Hub: hub, Log: log}, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { p.Serve(ctx, ln, o.Web()); close(served) }()
	defer func() { cancel(); <-served }()

	before := liveBytes()
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	block := "frame=240\nfps=30.00\nbitrate=1048.6kbits/s\ntotal_size=1048576\nout_time_us=8000000\ndup_frames=0\ndrop_frames=0\nspeed=1.01x\nprogress=continue\n"
	for i := range streams {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /ingest/s%d HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", i, len(block), block)
	}
	for deadline := time.Now().Add(time.Minute); len(hub.Snapshot().Streams) < streams || !allReported(hub); {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d streams reported within a minute", len(hub.Snapshot().Streams), streams)
		}
		time.Sleep(10 * time.Millisecond)
	}
	perStream := float64(liveBytes()-before) / streams

	client := &http.Client{Transport: &http.Transport{}} // asks for gzip, and inflates the answer
	url := "http://" + ln.Addr().String() + "/metrics"
	for _, bc := range []struct {
		name   string
		before func() // each scrape
	}{
		{"at-rest", func() {}},
		{"changing", hub.Changed},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var size int64
			b.ReportAllocs()
			for b.Loop() {
				bc.before()
				resp, err := client.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				size, _ = io.Copy(io.Discard, bufio.NewReader(resp.Body))
				resp.Body.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/scrape")
			b.ReportMetric(float64(size), "scrape-bytes")
			b.ReportMetric(perStream, "bytes/stream")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// allReported: every stream has had its block, and so its series (a stream
// silent for --stream.silence is still live, only reported inactive).
func allReported(hub *ffmpeg.Hub) bool {
	for _, s := range hub.Snapshot().Streams {
		if !s.Has(ffmpeg.Frames) {
			return false
		}
	}
	return true
}

// liveBytes is the heap in use plus goroutine stacks after a GC.
func liveBytes() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
