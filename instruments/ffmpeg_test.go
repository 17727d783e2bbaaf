package instruments

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
)

// knownHub is a hub in a known state: one finished encode with two
// outputs (-progress only: its log counts are unknown), one running (fed
// as stderr: status lines, an error, a warning, a value that cannot be
// real), and requests refused for their method and for a busy stream.
func knownHub(t *testing.T) *ffmpeg.Hub {
	t.Helper()
	now := time.Unix(1_800_000_000, 500_000_000)
	cfg := ffmpeg.DefaultConfig
	cfg.Clock = func() time.Time { return now }
	hub := ffmpeg.NewHub(cfg)
	consume := func(c *ffmpeg.Conn, text string) {
		t.Helper()
		if err := c.Consume(strings.NewReader(text)); err != nil {
			t.Fatal(err)
		}
	}

	done, err := hub.Open("job41")
	if err != nil {
		t.Fatal(err)
	}
	consume(done, "frame=125\nstream_0_0_q=23.0\nstream_1_0_q=4.5\nout_time_us=5000000\nprogress=continue\n")
	now = now.Add(5 * time.Second)
	consume(done, "frame=250\nfps=25.00\nstream_0_0_q=-1.0\nstream_1_0_q=2.0\nbitrate= 512.3kbits/s\ntotal_size=655360\n"+
		"out_time_us=10000000\ndup_frames=0\ndrop_frames=1\nspeed=1.00x\nprogress=end\n")
	done.Close()

	live, err := hub.Open("job42")
	if err != nil {
		t.Fatal(err)
	}
	consume(live, "Stream mapping:\n[h264 @ 0x55d0c8a0] [error] error while decoding MB 19 1, bytestream 2550\n"+
		"frame=  120 fps= 30 q=28.0 size=     256kB time=00:00:04.00 bitrate= 524.3kbits/s dup=2 drop=0 speed=0.99x\r")
	now = now.Add(2 * time.Second) // 2 s of wall for 1 s of media: 1 s behind
	consume(live, "[mpegts @ 0x55d0c8b0] [warning] Packet corrupt (stream = 0, dts = 356400).\n"+
		"frame=  150 fps= 30 q=28.0 size=1e308kB time=00:00:05.00 bitrate=N/A dup=2 drop=0 speed=0.5x\r")
	// live stays open: the encode is still running.

	ingest := &ffmpeg.Ingest{Hub: hub, Log: slog.New(slog.DiscardHandler)}
	ingest.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/ingest", nil))
	rec := httptest.NewRecorder()
	ingest.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ingest?stream=job42", strings.NewReader("frame=1\n")))
	if rec.Code != http.StatusConflict {
		t.Fatalf("second client of job42: %d, want 409", rec.Code)
	}
	return hub
}

// TestFFmpegGolden: the whole /metrics text for a known input.
func TestFFmpegGolden(t *testing.T) {
	hub := knownHub(t)
	got := scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterFFmpeg(mp.Meter("test"), hub) })
	golden(t, "testdata/ffmpeg.golden", got)
	peer.CheckMetrics(t, got)
	snapshot := func() *ffmpeg.Snapshot {
		s := hub.Snapshot()
		return &s
	}
	checkReordered(t, ffmpegTable, snapshot, func(t *testing.T, got string) { golden(t, "testdata/ffmpeg.golden", got) })
}

// TestFFmpegThroughPipeline: the pipeline serves the same text as the bare
// bridge, beside the process's own process_* and go_* series, which every
// port serves and which change by the clock.
func TestFFmpegThroughPipeline(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "OTEL_") {
			t.Setenv(name, "")
		}
	}
	p, err := pipeline.New(context.Background(), pipeline.NewOptions(flagSet(), "ffmpeg-exporter", 9506, "FFMPEG_EXPORTER_PORT"), ":9506", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if err := RegisterFFmpeg(p.Meter, knownHub(t)); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	var ours, runtime strings.Builder
	for line := range strings.Lines(rec.Body.String()) {
		name := strings.TrimPrefix(strings.TrimPrefix(line, "# HELP "), "# TYPE ")
		if strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "go_") {
			runtime.WriteString(line)
		} else {
			ours.WriteString(line)
		}
	}
	if !strings.Contains(runtime.String(), "process_resident_memory_bytes") || !strings.Contains(runtime.String(), "go_goroutines") {
		t.Errorf("no process_* and go_* series beside ours:\n%s", rec.Body)
	}
	if *update {
		return // the bare bridge's test writes the golden file
	}
	golden(t, "testdata/ffmpeg.golden", ours.String())
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("/metrics differs from %s (go test ./instruments -update rewrites it):\n%s", path, got)
	}
}

func flagSet() *flag.FlagSet { return flag.NewFlagSet("test", flag.ContinueOnError) }

// TestFFmpegSeriesLimit: with the SDK's cardinality limit at
// FFmpegSeriesLimit(3000), 2,500 streams, then 3,000 (the bound), each with
// MaxOutputs outputs and both log levels, are all served with no overflow
// series; a 3,001st stream is refused with 429, counted, and changes nothing. With the
// SDK's default limit the same 2,500 streams fold into an overflow series,
// and one less than FFmpegSeriesLimit is not enough.
func TestFFmpegSeriesLimit(t *testing.T) {
	const maxStreams = 3000
	cfg := ffmpeg.DefaultConfig
	cfg.MaxStreams = maxStreams
	hub := ffmpeg.NewHub(cfg)
	var block strings.Builder
	block.WriteString("[h264 @ 0x1] [error] error while decoding MB 1 1, bytestream 5\n[mpegts @ 0x2] [warning] Packet corrupt\n")
	for i := range ffmpeg.MaxOutputs {
		fmt.Fprintf(&block, "stream_0_%d_q=%d.0\n", i, i)
	}
	block.WriteString(progressBlockForLimit)
	feed := func(from, to int) {
		for i := from; i < to; i++ {
			c, err := hub.Open(fmt.Sprintf("s%04d", i))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Consume(strings.NewReader(block.String())); err != nil {
				t.Fatal(err)
			}
			// c stays open: every stream is live.
		}
	}
	// collect returns the series of each metric and the metrics with an overflow series.
	collect := func(limit int) (map[string]int, []string) {
		t.Helper()
		reader := metric.NewManualReader()
		opts := []metric.Option{metric.WithReader(reader)}
		if limit != 0 {
			opts = append(opts, metric.WithCardinalityLimit(limit))
		}
		provider := metric.NewMeterProvider(opts...)
		defer provider.Shutdown(context.Background())
		if err := RegisterFFmpeg(provider.Meter("test"), hub); err != nil {
			t.Fatal(err)
		}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		series := map[string]int{}
		var overflow []string
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				var sets []attribute.Set
				switch d := m.Data.(type) {
				case metricdata.Gauge[float64]:
					for _, p := range d.DataPoints {
						sets = append(sets, p.Attributes)
					}
				case metricdata.Sum[float64]:
					for _, p := range d.DataPoints {
						sets = append(sets, p.Attributes)
					}
				default:
					t.Fatalf("%s: unexpected data %T", m.Name, m.Data)
				}
				series[m.Name] = len(sets)
				for _, set := range sets {
					if set.HasValue("otel.metric.overflow") {
						overflow = append(overflow, m.Name)
					}
				}
			}
		}
		return series, overflow
	}
	served := func(streams int) {
		t.Helper()
		series, overflow := collect(FFmpegSeriesLimit(maxStreams))
		if len(overflow) > 0 {
			t.Errorf("%d streams: overflow series in %v", streams, overflow)
		}
		for name, want := range map[string]int{
			FFmpegFPS.Name: streams, FFmpegLag.Name: streams, FFmpegQuantizer.Name: streams * ffmpeg.MaxOutputs,
			FFmpegLogs.Name: streams * int(ffmpeg.NumLevels),
		} {
			if series[name] != want {
				t.Errorf("%d streams: %s has %d series, want %d", streams, name, series[name], want)
			}
		}
	}

	feed(0, 2500)
	if _, overflow := collect(0); len(overflow) == 0 {
		t.Error("2,500 streams under the SDK's default limit show no overflow: this test would not see one")
	}
	served(2500)

	feed(2500, maxStreams)
	rec := httptest.NewRecorder()
	ingest := &ffmpeg.Ingest{Hub: hub, Log: slog.New(slog.DiscardHandler)}
	ingest.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ingest?stream=one-past", strings.NewReader("frame=1\n")))
	if rec.Code != http.StatusTooManyRequests || hub.Snapshot().Rejected[ffmpeg.RejectTooMany] != 1 {
		t.Errorf("stream %d of %d: %d, counted %d; want 429, counted once", maxStreams+1, maxStreams, rec.Code, hub.Snapshot().Rejected[ffmpeg.RejectTooMany])
	}
	served(maxStreams)
	if _, overflow := collect(FFmpegSeriesLimit(maxStreams) - 1); len(overflow) == 0 {
		t.Error("one less than FFmpegSeriesLimit served every series: the limit is not the least that does")
	}
}

const progressBlockForLimit = "frame=240\nfps=30.00\nbitrate=1048.6kbits/s\ntotal_size=1048576\nout_time_us=8000000\n" +
	"dup_frames=0\ndrop_frames=0\nspeed=1.01x\nprogress=continue\n"
