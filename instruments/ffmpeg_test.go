package instruments

import (
	"context"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
)

// knownHub is a hub in a known state: one finished encode, one running
// (fed as stderr status lines), some garbage and a refused request.
func knownHub(t *testing.T) *ffmpeg.Hub {
	t.Helper()
	now := time.Unix(1_800_000_000, 500_000_000)
	cfg := ffmpeg.DefaultConfig
	cfg.Clock = func() time.Time { return now }
	hub := ffmpeg.NewHub(cfg)

	done, err := hub.Open("job41")
	if err != nil {
		t.Fatal(err)
	}
	if err := done.Consume(strings.NewReader("frame=250\nfps=25.00\nbitrate= 512.3kbits/s\ntotal_size=655360\n" +
		"out_time_us=10000000\ndup_frames=0\ndrop_frames=1\nspeed=1.00x\nprogress=end\n")); err != nil {
		t.Fatal(err)
	}
	done.Close()

	live, err := hub.Open("job42")
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Consume(strings.NewReader("Stream mapping:\n" +
		"frame=  120 fps= 30 q=28.0 size=     256kB time=00:00:04.00 bitrate= 524.3kbits/s dup=2 drop=0 speed=0.99x\r" +
		"frame=  150 fps= 30 q=28.0 size=N/A time=00:00:05.00 bitrate=N/A dup=2 drop=0 speed=1.0x\r")); err != nil {
		t.Fatal(err)
	}
	// live stays open: the encode is still running.

	ingest := &ffmpeg.Ingest{Hub: hub, Log: slog.New(slog.DiscardHandler)}
	ingest.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/ingest", nil))
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

// TestFFmpegThroughPipeline: the pipeline serves the same text as the bare bridge.
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
	golden(t, "testdata/ffmpeg.golden", rec.Body.String())
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
