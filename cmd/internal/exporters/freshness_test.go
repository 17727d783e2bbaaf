package exporters

// /metrics keeps its render while every attached source's generation
// stays put. These tests prove, source by source, that a scrape after a
// change shows it: the sources are the real ones, driven by hand (Sample,
// ingest), through attach and the real pipeline handler. RAPL reads a
// sysfs fixture tree (no RAPL here); docker talks to internal/testkit/fakeengine, a
// daemon whose containers the test removes at will (what matters here is
// our snapshot and cache, not the daemon).

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/fakeengine"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/docker"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
)

// open parses args as src's flags and those of the readers it needs, as
// the runner does, and builds it over fresh readers.
func open(t testing.TB, src Source, args ...string) (OpenedSource, error) {
	t.Helper()
	fs := flag.NewFlagSet(src.Binary, flag.ContinueOnError)
	readers := NewReaders()
	Register(fs, readers, src)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := readers.serving(slog.New(slog.DiscardHandler), []Port{{Source: src}}); err != nil {
		return OpenedSource{}, err
	}
	return src.Open(readers, slog.New(slog.DiscardHandler))
}

// attached opens src with args as its flags and attaches it to a fresh
// pipeline, without running it: the test publishes by hand.
func attached(t *testing.T, src Source, args ...string) (*pipeline.Pipeline, OpenedSource) {
	t.Helper()
	for _, kv := range os.Environ() { // no OTLP push: scrapes alone run the callbacks
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "OTEL_") {
			t.Setenv(name, "")
		}
	}
	log := slog.New(slog.DiscardHandler)
	b, err := open(t, src, args...)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := pipeline.NewProcess(context.Background(), src.Binary, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	p, err := shared.Pipeline(src.Binary, b.SeriesLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	if err := attach(p, src.Name, b); err != nil {
		t.Fatal(err)
	}
	return p, b
}

// scrape returns /metrics as series keyed by otlptest.Key.
func scrape(t testing.TB, p *pipeline.Pipeline) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	series, err := otlptest.ParseProm(rec.Body.String())
	if err != nil {
		t.Fatalf("%v in\n%s", err, rec.Body)
	}
	return series
}

func energyKey(pkg, zone string) string {
	return otlptest.Key("rapl_energy_joules_total", map[string]string{"package": pkg, "zone": zone})
}

// TestFreshRAPLSample: a new RAPL sample, and with it a new self-metric
// value, shows on the next scrape.
func TestFreshRAPLSample(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	p, b := attached(t, CPU(), "--path.sysfs", root)
	src := b.Source.(*RAPLReader)
	src.Sample()
	if got := scrape(t, p)[energyKey("0", "package")]; got != 10 {
		t.Fatalf("package 0 energy %v J, want 10", got)
	}

	raplfixture.SetEnergy(t, root, "intel-rapl:0", 10_000_001) // the counter advances by 1 µJ
	src.Sample()
	if got := scrape(t, p)[energyKey("0", "package")]; got != 10.000001 {
		t.Errorf("after a new sample: package 0 energy %v J, want 10.000001", got)
	}

	errorsKey := otlptest.Key("worker_exporter_collection_errors_total", map[string]string{"source": "cpu"})
	if got := scrape(t, p)[errorsKey]; got != 0 {
		t.Fatalf("collection errors %v before any failed", got)
	}
	if err := os.WriteFile(raplfixture.Dir(root, "intel-rapl:1")+"/energy_uj", []byte("unreadable\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src.Sample()
	if got := scrape(t, p)[errorsKey]; got != 1 {
		t.Errorf("after a failed sample: collection errors %v, want 1", got)
	}
}

// TestFreshScrapesRacingRAPLSamples (run with -race): scrapers race a
// stream of samples. Every scrape shows at least the sample published
// before it began, and each body is one whole render: every zone at the
// same sample.
func TestFreshScrapesRacingRAPLSamples(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	p, b := attached(t, CPU(), "--path.sysfs", root)
	src := b.Source.(*RAPLReader)
	src.Sample()

	// Sample k sets every zone to its starting energy + k µJ.
	zones := raplfixture.TwoSockets
	keys := []string{energyKey("0", "package"), energyKey("0", "dram"), energyKey("1", "package"), energyKey("1", "dram")}
	sampleOf := func(series map[string]float64) (int64, error) {
		k := int64(-1)
		for i, z := range zones {
			v, ok := series[keys[i]]
			if !ok {
				return 0, fmt.Errorf("%s missing", keys[i])
			}
			zk := int64(math.Round(v*1e6)) - int64(z.EnergyUJ)
			if k >= 0 && zk != k {
				return 0, fmt.Errorf("zones at different samples (%d and %d): a torn render", k, zk)
			}
			k = zk
		}
		return k, nil
	}

	var published atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	errs := make(chan error, 4)
	scraped := make(chan struct{}) // publishes interleave with scrapes
	for range 4 {
		wg.Go(func() {
			for {
				before := published.Load()
				rec := httptest.NewRecorder()
				p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
				series, err := otlptest.ParseProm(rec.Body.String())
				var k int64
				if err == nil {
					k, err = sampleOf(series)
				}
				if err == nil && k < before {
					err = fmt.Errorf("scrape begun after sample %d shows sample %d", before, k)
				}
				if err != nil {
					errs <- fmt.Errorf("%v:\n%s", err, rec.Body)
					return
				}
				select {
				case scraped <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	for k := int64(1); k <= 100; k++ {
		for _, z := range zones {
			raplfixture.SetEnergy(t, root, z.ID, z.EnergyUJ+uint64(k))
		}
		src.Sample()
		published.Store(k)
		for range 3 {
			select {
			case <-scraped:
			case err := <-errs:
				t.Fatal(err)
			}
		}
	}
	stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

const progressBlock = "frame=240\nfps=30.00\nbitrate=1048.6kbits/s\ntotal_size=1048576\nout_time_us=8000000\ndup_frames=0\ndrop_frames=0\nspeed=1.01x\nprogress=continue\n"

func streamKey(name, stream string) string {
	return otlptest.Key(name, map[string]string{"stream": stream})
}

func linesKey(result string) string {
	return otlptest.Key("ffmpeg_ingest_lines_total", map[string]string{"result": result})
}

// hubOf is the ffmpeg port's hub, with energy per encode or without.
func hubOf(t *testing.T, b OpenedSource) *ffmpeg.Hub {
	t.Helper()
	src := b.Source
	if w, ok := src.(*withEnergy); ok {
		src = w.Source
	}
	hub, ok := src.(*ffmpeg.Hub)
	if !ok {
		t.Fatalf("ffmpeg source %T, want the hub", b.Source)
	}
	return hub
}

func post(t *testing.T, p *pipeline.Pipeline, method, path, body string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	return rec.Code
}

// TestFreshIngest: a new ingest report, a refused request, and each line
// of a connection still open all show on the next scrape.
func TestFreshIngest(t *testing.T) {
	p, b := attached(t, FFmpeg())
	hub := hubOf(t, b)

	if code := post(t, p, http.MethodPost, "/ingest/job1", progressBlock); code != http.StatusNoContent {
		t.Fatalf("ingest: %d", code)
	}
	if got := scrape(t, p)[streamKey("ffmpeg_total_frames", "job1")]; got != 240 {
		t.Fatalf("frames %v, want 240", got)
	}
	if code := post(t, p, http.MethodPost, "/ingest/job1", strings.Replace(progressBlock, "frame=240", "frame=480", 1)); code != http.StatusNoContent {
		t.Fatalf("ingest: %d", code)
	}
	if got := scrape(t, p)[streamKey("ffmpeg_total_frames", "job1")]; got != 480 {
		t.Errorf("after a new report: frames %v, want 480", got)
	}

	rejectedKey := otlptest.Key("ffmpeg_ingest_rejected_requests_total", map[string]string{"reason": "method"})
	if got := scrape(t, p)[rejectedKey]; got != 0 {
		t.Fatalf("rejected %v before any refusal", got)
	}
	if code := post(t, p, http.MethodGet, "/ingest/job1", ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /ingest: %d", code)
	}
	if got := scrape(t, p)[rejectedKey]; got != 1 {
		t.Errorf("after a refused request: rejected %v, want 1", got)
	}

	// A connection that stays open: each line is counted as it comes.
	conn, err := hub.Open("job2")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := scrape(t, p)
	conn.Line([]byte("[libx264 @ 0x5581] frame I:1 Avg QP:20.00 size: 12345"))
	if got := scrape(t, p)[linesKey("ignored")]; got != before[linesKey("ignored")]+1 {
		t.Errorf("after an ignored line: ignored lines %v, want %v", got, before[linesKey("ignored")]+1)
	}
	conn.Line([]byte("frame=12"))
	if got := scrape(t, p)[linesKey("parsed")]; got != before[linesKey("parsed")]+1 {
		t.Errorf("after a line of a block still open: parsed lines %v, want %v", got, before[linesKey("parsed")]+1)
	}
}

// TestFreshStreamSilence: a stream that goes silent is shown inactive by
// every scrape from the moment it is, though nothing was ingested (the
// hub's generation does not move: its prune loop is not running here).
func TestFreshStreamSilence(t *testing.T) {
	const silence = time.Second
	p, b := attached(t, FFmpeg(), "--stream.silence", silence.String()) // energy per encode on, as by default
	hub := hubOf(t, b)
	conn, err := hub.Open("job")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for line := range strings.Lines(progressBlock) {
		conn.Line([]byte(strings.TrimSuffix(line, "\n")))
	}
	silentFrom := time.Now().Add(silence) // the block arrived before now
	key := streamKey("ffmpeg_stream_active", "job")
	seenActive := false
	exportertest.WaitFor(t, silence+10*time.Second, func() bool {
		began := time.Now()
		active := scrape(t, p)[key]
		seenActive = seenActive || active == 1
		if began.Before(silentFrom) {
			return false
		}
		if active != 0 {
			t.Fatalf("a scrape begun %v after the stream went silent shows it active", began.Sub(silentFrom))
		}
		return true
	})
	if !seenActive {
		t.Error("the stream was never shown active: nothing was cached to go stale")
	}
}

// TestFreshRemovedContainer: a container removed from the daemon is gone
// from the next scrape after the sample that saw it go.
func TestFreshRemovedContainer(t *testing.T) {
	e := fakeengine.Start(t)
	running := func(id, name string) *fakeengine.Container {
		return &fakeengine.Container{ID: id, Name: name, Image: "ffmpeg", State: "running",
			Stats: container.StatsResponse{Read: time.Now(), MemoryStats: container.MemoryStats{Usage: 1 << 20}}}
	}
	e.Set(running("c1", "enc-1"), running("c2", "enc-2"))
	t.Setenv("DOCKER_HOST", e.DockerHost())
	p, b := attached(t, Docker())
	src := b.Source.(alongside).Source.(*docker.Source)

	info := func(series map[string]float64, name string) bool {
		for k := range series {
			if strings.HasPrefix(k, "docker_container_info{") && strings.Contains(k, `container="`+name+`"`) {
				return true
			}
		}
		return false
	}
	src.Sample(context.Background())
	if s := scrape(t, p); !info(s, "enc-1") || !info(s, "enc-2") {
		t.Fatalf("both containers should show: %v", s)
	}
	e.Set(running("c1", "enc-1"))
	src.Sample(context.Background())
	if s := scrape(t, p); !info(s, "enc-1") || info(s, "enc-2") {
		t.Errorf("after enc-2 was removed: %v", s)
	}
}
