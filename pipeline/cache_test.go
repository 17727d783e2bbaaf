package pipeline

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
)

// genSource is a source as the cache sees it: a generation, and a value
// the test's gauge reads.
type genSource struct {
	gen   atomic.Uint64
	value atomic.Int64
}

func (s *genSource) Generation() uint64 { return s.gen.Load() }

// publish sets the value and then moves the generation, as sampling.Latest does.
func (s *genSource) publish(v int64) { s.value.Store(v); s.gen.Add(1) }

// cachedPipeline is a pipeline whose one gauge, cache_test_value, reads
// src; renders counts the gauge's callbacks, that is the renders.
func cachedPipeline(t *testing.T, src *genSource, renders *atomic.Int64) *Pipeline {
	t.Helper()
	clearOTELEnv(t) // no push: the callbacks run for scrapes only
	o := NewOptions(flag.NewFlagSet("test", flag.ContinueOnError), "test-exporter", 9999, "TEST_EXPORTER_PORT")
	p, err := New(context.Background(), o, "127.0.0.1:9999", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	_, err = p.Meter.Int64ObservableGauge("cache_test_value", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
		renders.Add(1)
		o.Observe(src.value.Load())
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// get scrapes h with the given request headers (name, value, ...).
func get(t testing.TB, h http.Handler, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return rec
}

// ownPart is a text exposition less the process_* and go_* families that
// every scrape renders afresh (TestRuntimeMetrics): what the cache keeps.
func ownPart(body string) string {
	var b strings.Builder
	for line := range strings.Lines(body) {
		name := strings.TrimPrefix(strings.TrimPrefix(line, "# HELP "), "# TYPE ")
		if !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			b.WriteString(line)
		}
	}
	return b.String()
}

func valueLine(v int64) string { return fmt.Sprintf("cache_test_value %d\n", v) }

// TestCacheRendersOnlyOnChange: scrapes between publishes are the same
// bytes and run no callback; the first scrape after a publish shows it.
func TestCacheRendersOnlyOnChange(t *testing.T) {
	var src genSource
	var renders atomic.Int64
	p := cachedPipeline(t, &src, &renders)
	p.Watch(&src)
	src.publish(1)

	first := ownPart(get(t, p.Handler()).Body.String())
	if !strings.Contains(first, valueLine(1)) {
		t.Fatalf("first scrape:\n%s", first)
	}
	for range 5 {
		if got := ownPart(get(t, p.Handler()).Body.String()); got != first {
			t.Fatalf("a scrape between publishes changed:\n%s\nwas:\n%s", got, first)
		}
	}
	if n := renders.Load(); n != 1 {
		t.Errorf("%d renders for 6 scrapes of one snapshot, want 1", n)
	}

	src.publish(2)
	if got := get(t, p.Handler()).Body.String(); !strings.Contains(got, valueLine(2)) {
		t.Errorf("scrape after a publish:\n%s", got)
	}
	if n := renders.Load(); n != 2 {
		t.Errorf("%d renders, want 2", n)
	}
}

// TestCacheWithoutWatchRendersEveryScrape: a pipeline that watches no
// source (as these tests' own pipelines) cannot know when its instruments
// change, so it renders every scrape.
func TestCacheWithoutWatchRendersEveryScrape(t *testing.T) {
	var src genSource
	var renders atomic.Int64
	p := cachedPipeline(t, &src, &renders)
	for i := range int64(3) {
		src.value.Store(i) // no generation: nothing watched anyway
		if got := get(t, p.Handler()).Body.String(); !strings.Contains(got, valueLine(i)) {
			t.Errorf("scrape %d:\n%s", i, got)
		}
	}
	if n := renders.Load(); n != 3 {
		t.Errorf("%d renders for 3 scrapes, want 3", n)
	}
}

// TestCacheVariants: each negotiated format and encoding is rendered as
// promhttp would negotiate it, kept apart from the others, and refreshed
// by a publish like the others.
func TestCacheVariants(t *testing.T) {
	var src genSource
	var renders atomic.Int64
	p := cachedPipeline(t, &src, &renders)
	p.Watch(&src)
	const openMetrics = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
	const proto = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
	cases := []struct {
		name, accept, encoding string
		gzip                   bool
	}{
		{"text", "", "", false},
		{"text gzip", "", "gzip", true},
		{"Go client", "", "gzip, deflate, br", true},
		{"gzip refused", "", "gzip;q=0", false},
		{"OpenMetrics scraper", openMetrics, "gzip", true},
		{"protobuf", proto, "", false},
	}
	for _, v := range []int64{7, 8} {
		src.publish(v)
		for _, tc := range cases {
			rec := get(t, p.Handler(), "Accept", tc.accept, "Accept-Encoding", tc.encoding)
			h := http.Header{"Accept": {tc.accept}}
			if got, want := rec.Header().Get("Content-Type"), string(expfmt.Negotiate(h)); got != want {
				t.Errorf("%s: Content-Type %q, want %q", tc.name, got, want)
			}
			body := rec.Body.Bytes()
			if got := rec.Header().Get("Content-Encoding") == "gzip"; got != tc.gzip {
				t.Errorf("%s: gzip %v, want %v", tc.name, got, tc.gzip)
			}
			if tc.gzip {
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if body, err = io.ReadAll(zr); err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
			}
			if got := rec.Header().Get("Content-Length"); got != fmt.Sprint(rec.Body.Len()) {
				t.Errorf("%s: Content-Length %s for %d bytes", tc.name, got, rec.Body.Len())
			}
			dec := &expfmt.SampleDecoder{Dec: expfmt.NewDecoder(bytes.NewReader(body), expfmt.Negotiate(h)), Opts: &expfmt.DecodeOptions{}}
			found := false
			for {
				var samples model.Vector
				if err := dec.Decode(&samples); err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatalf("%s: %v", tc.name, err)
					}
					break
				}
				for _, s := range samples {
					if s.Metric[model.MetricNameLabel] == "cache_test_value" {
						found = s.Value == model.SampleValue(v)
					}
				}
			}
			if !found {
				t.Errorf("%s: cache_test_value %d not in\n%s", tc.name, v, body)
			}
		}
	}
	// 3 variants (text, text gzip, protobuf: the OpenMetrics scraper is
	// offered text, as promhttp offers it) rendered once per publish.
	if n := renders.Load(); n != 2*3 {
		t.Errorf("%d renders, want %d", n, 2*3)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"":                       false,
		"gzip":                   true,
		"GZIP":                   true,
		"x-gzip":                 true,
		"gzip, deflate, br":      true,
		"br, gzip;q=0.8":         true,
		"gzip;q=0":               false,
		"gzip; q=0.000":          false,
		"gzip;q=abc":             false,
		"identity":               false,
		"*":                      true,
		"*;q=0":                  false,
		"*;q=0, identity":        false,
		"gzip;q=0.5, identity":   false,
		"gzip, identity;q=0.5":   true,
		"identity;q=0, *;q=0.1":  true,
		"deflate, *;q=0, gzip":   true,
		"gzip;q=2":               false,
		"  gzip  ;  q=1  , br  ": true,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}

// TestCacheRendersOnceForConcurrentScrapes: scrapes that arrive while a
// render is in flight wait for it rather than render again.
func TestCacheRendersOnceForConcurrentScrapes(t *testing.T) {
	var src genSource
	var renders atomic.Int64
	p := cachedPipeline(t, &src, &renders)
	p.Watch(&src)
	src.publish(1)

	entered, release := holdFirstGather(t, p)
	waiting := countWaits(t)

	const scrapes = 8
	bodies := make([]string, scrapes)
	var wg sync.WaitGroup
	wg.Go(func() { bodies[0] = ownPart(get(t, p.Handler()).Body.String()) })
	<-entered
	for i := 1; i < scrapes; i++ {
		wg.Go(func() { bodies[i] = ownPart(get(t, p.Handler()).Body.String()) })
	}
	exportertest.WaitFor(t, 10*time.Second, func() bool { return waiting.Load() == scrapes-1 })
	close(release)
	wg.Wait()
	if n := renders.Load(); n != 1 {
		t.Errorf("%d renders for %d concurrent scrapes, want 1", n, scrapes)
	}
	for i, b := range bodies {
		if b != bodies[0] || !strings.Contains(b, valueLine(1)) {
			t.Errorf("scrape %d:\n%s", i, b)
		}
	}
}

// holdFirstGather registers a gauge whose first callback holds the gather
// it runs in until release is closed; entered is closed once it holds.
func holdFirstGather(t *testing.T, p *Pipeline) (entered, release chan struct{}) {
	t.Helper()
	entered, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	_, err := p.Meter.Int64ObservableGauge("cache_test_slow", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
		once.Do(func() { close(entered); <-release })
		o.Observe(1)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return entered, release
}

// countWaits counts the scrapes that wait for a render or a gather in
// flight, for the rest of the test.
func countWaits(t *testing.T) *atomic.Int64 {
	var n atomic.Int64
	testWaiting = func() { n.Add(1) }
	t.Cleanup(func() { testWaiting = nil })
	return &n
}

// countGathers counts the gathers from p's bridge, as each begins.
func countGathers(p *Pipeline) *atomic.Int64 {
	var n atomic.Int64
	bridge := p.metrics.gatherer
	p.metrics.gatherer = prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { n.Add(1); return bridge.Gather() })
	return &n
}

// TestVariantsShareOneGather: after a publish, scrapes in four formats
// (each its own kept variant) render at once and share one gather; a
// scrape that arrives after the next publish, while that gather is still
// in flight, does not join it and shows the new value.
func TestVariantsShareOneGather(t *testing.T) {
	var src genSource
	var renders atomic.Int64
	p := cachedPipeline(t, &src, &renders)
	p.Watch(&src)
	src.publish(1)

	entered, release := holdFirstGather(t, p)
	waiting, gathers := countWaits(t), countGathers(p)

	variants := [][]string{
		{"Accept", "text/plain;version=0.0.4"},
		{"Accept", "text/plain;version=0.0.4", "Accept-Encoding", "gzip"},
		{"Accept", protobufText},
		{"Accept", protobufText, "Accept-Encoding", "gzip"},
	}
	bodies := make([]string, len(variants))
	var wg sync.WaitGroup
	wg.Go(func() { bodies[0] = plainBody(t, get(t, p.Handler(), variants[0]...)) })
	<-entered
	for i := 1; i < len(variants); i++ {
		wg.Go(func() { bodies[i] = plainBody(t, get(t, p.Handler(), variants[i]...)) })
	}
	exportertest.WaitFor(t, 10*time.Second, func() bool { return waiting.Load() == int64(len(variants)-1) })
	if n := gathers.Load(); n != 1 {
		t.Errorf("%d gathers for %d formats rendered at once, want 1", n, len(variants))
	}
	src.publish(2)
	var after string
	wg.Go(func() {
		after = plainBody(t, get(t, p.Handler(), "Accept", "text/plain;version=0.0.4;escaping=values"))
	})
	exportertest.WaitFor(t, 10*time.Second, func() bool { return gathers.Load() == 2 }) // its own, not the one in flight
	close(release)
	wg.Wait()
	if n := waiting.Load(); n != int64(len(variants)-1) {
		t.Errorf("%d scrapes joined the gather in flight, want the %d of its generation", n, len(variants)-1)
	}
	// One gather: the four show one value (read after the release, so 1
	// or 2), each in its own format.
	var values []string
	for _, b := range bodies {
		values = append(values, testValue(b))
	}
	if len(slices.Compact(slices.Clone(values))) != 1 || values[0] == "" {
		t.Errorf("the formats rendered from one gather show %q", values)
	}
	if v := testValue(after); v != "2" {
		t.Errorf("the scrape after the next publish shows %q, want 2:\n%s", v, after)
	}
}

const protobufText = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"

// testValue is cache_test_value's value in a text or protobuf-text body.
func testValue(body string) string {
	for _, re := range []*regexp.Regexp{regexp.MustCompile(`(?m)^cache_test_value (\d+)$`), regexp.MustCompile(`name:\s+"cache_test_value"[^}]*?value:\s+(\d+)`)} {
		if m := re.FindStringSubmatch(body); m != nil {
			return m[1]
		}
	}
	return ""
}

// plainBody is rec's body, gunzipped when it is gzipped.
func plainBody(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if rec.Header().Get("Content-Encoding") != "gzip" {
		return rec.Body.String()
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCacheRacingPublishes: scrapes racing publishes (run with -race):
// every scrape shows at least the value published before it began, and
// every body is one whole render.
func TestCacheRacingPublishes(t *testing.T) {
	var src genSource
	var renders atomic.Int64
	p := cachedPipeline(t, &src, &renders)
	p.Watch(&src)
	var published atomic.Int64 // the latest value whose publish has returned
	src.publish(0)

	const publishes = 200
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() }) // also when t.Fatal ends the test early
	errs := make(chan error, 4)
	scraped := make(chan struct{}) // one receive per finished scrape: publishes interleave with scrapes
	for i := range 4 {
		// Each its own variant: their renders join one another's gathers.
		accept := []string{"", "text/plain;version=0.0.4;escaping=values", "text/plain;version=0.0.4;escaping=dots", "text/plain;version=0.0.4;escaping=allow-utf-8"}[i]
		wg.Go(func() {
			for {
				before := published.Load()
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
				req.Header.Set("Accept", accept)
				p.Handler().ServeHTTP(rec, req)
				var got int64 = -1
				for line := range strings.SplitSeq(rec.Body.String(), "\n") {
					if v, ok := strings.CutPrefix(line, "cache_test_value "); ok {
						fmt.Sscan(v, &got)
					}
				}
				if !strings.HasSuffix(rec.Body.String(), "\n") || got < before {
					errs <- fmt.Errorf("scrape begun after publish %d shows %d:\n%s", before, got, rec.Body)
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
	for v := int64(1); v <= publishes; v++ {
		src.publish(v)
		published.Store(v)
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
	if got := get(t, p.Handler()).Body.String(); !strings.Contains(got, valueLine(publishes)) {
		t.Errorf("last scrape:\n%s", got)
	}
}

// expiringSource changes by the clock at until without a generation bump.
type expiringSource struct {
	genSource
	until time.Time
}

func (s *expiringSource) ChangesIn() (time.Duration, bool) {
	d := time.Until(s.until)
	return d, d > 0
}

// TestGatherNotJoinedPastItsClockChange: while a gather for an Expiring
// source is in flight, a render of another variant joins it before the
// source's next change by the clock, and gathers afresh after it.
func TestGatherNotJoinedPastItsClockChange(t *testing.T) {
	const changesIn = 3 * time.Second // time enough to join before it, on a loaded machine
	src := &expiringSource{until: time.Now().Add(changesIn)}
	var renders atomic.Int64
	p := cachedPipeline(t, &src.genSource, &renders)
	p.Watch(src)
	src.publish(1)
	entered, release := holdFirstGather(t, p)
	waiting, gathers := countWaits(t), countGathers(p)

	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	wg.Go(func() { get(t, p.Handler(), "Accept", "text/plain;version=0.0.4") })
	<-entered
	wg.Go(func() { get(t, p.Handler(), "Accept", protobufText) }) // before the change: joins
	exportertest.WaitFor(t, changesIn, func() bool { return waiting.Load() == 1 })
	time.Sleep(time.Until(src.until)) // the change by the clock
	wg.Go(func() { get(t, p.Handler(), "Accept", "text/plain;version=0.0.4;escaping=values") })
	exportertest.WaitFor(t, 10*time.Second, func() bool { return gathers.Load() == 2 })
	if n := waiting.Load(); n != 1 {
		t.Errorf("%d renders joined the gather in flight, want the one before the change", n)
	}
}

// TestCacheExpiresAtTheNextChangeByTheClock: a render of an Expiring
// source is not served past the moment the source said it changes.
func TestCacheExpiresAtTheNextChangeByTheClock(t *testing.T) {
	src := &expiringSource{until: time.Now().Add(200 * time.Millisecond)}
	var renders atomic.Int64
	p := cachedPipeline(t, &src.genSource, &renders)
	_, err := p.Meter.Int64ObservableGauge("cache_test_active", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
		active := int64(0)
		if time.Now().Before(src.until) {
			active = 1
		}
		o.Observe(active)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	p.Watch(src)
	for {
		began := time.Now()
		body := get(t, p.Handler()).Body.String()
		if !began.Before(src.until) {
			if !strings.Contains(body, "cache_test_active 0\n") {
				t.Fatalf("scrape begun %v after the change shows:\n%s", began.Sub(src.until), body)
			}
			return
		}
		if time.Since(src.until) > 5*time.Second {
			t.Fatal("no scrape after the change") // cannot happen: the loop scrapes until then
		}
	}
}

// TestCacheGatherErrors: a failed gather is answered 500 and not kept;
// the next scrape tries again.
func TestCacheGatherErrors(t *testing.T) {
	registry := prometheus.NewRegistry()
	var broken atomic.Bool
	broken.Store(true)
	if err := registry.Register(collectorFunc(func(ch chan<- prometheus.Metric) {
		d := prometheus.NewDesc("cache_test_flaky", "A metric that fails to collect, then works.", nil, nil)
		if broken.Load() {
			ch <- prometheus.NewInvalidMetric(d, errors.New("sensor unplugged"))
			return
		}
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, 1)
	})); err != nil {
		t.Fatal(err)
	}
	c := newMetricsCache(registry, slog.New(slog.DiscardHandler))
	var src genSource
	c.watch(&src)
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "sensor unplugged") {
		t.Errorf("broken collector: %d %s", rec.Code, rec.Body)
	}
	broken.Store(false) // no generation moves: an error is not kept
	if got := get(t, c).Body.String(); !strings.Contains(got, "cache_test_flaky 1\n") {
		t.Errorf("after the fix:\n%s", got)
	}
}

// TestCacheNameFilter: /metrics?name[]=x serves x alone, as promhttp does.
func TestCacheNameFilter(t *testing.T) {
	var src genSource
	var renders atomic.Int64
	p := cachedPipeline(t, &src, &renders)
	p.Watch(&src)
	if _, err := p.Meter.Int64ObservableGauge("cache_test_other", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
		o.Observe(3)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics?name[]=cache_test_other", nil))
	if body := rec.Body.String(); !strings.Contains(body, "cache_test_other 3\n") || strings.Contains(body, "cache_test_value") {
		t.Errorf("filtered scrape:\n%s", body)
	}
}

type collectorFunc func(ch chan<- prometheus.Metric)

func (f collectorFunc) Describe(chan<- *prometheus.Desc)    {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

// BenchmarkRender10000Series: a scrape that renders again (a watched
// generation moved since the last one) of 10 gauges over 1,000 streams,
// the ffmpeg port's size with 1,000 live streams, as text and as gzip;
// and the same through promhttp's handler, which served /metrics before
// the cache.
func BenchmarkRender10000Series(b *testing.B) {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	o := NewOptions(flag.NewFlagSet("bench", flag.ContinueOnError), "bench-exporter", 9999, "BENCH_EXPORTER_PORT")
	p, err := New(context.Background(), o, "127.0.0.1:9999", slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(context.Background())
	streams := make([]metric.ObserveOption, 1000)
	for i := range streams {
		streams[i] = metric.WithAttributes(attribute.String("stream", fmt.Sprintf("job-%04d", i)))
	}
	var gauges []metric.Observable
	for i := range 10 {
		g, err := p.Meter.Float64ObservableGauge(fmt.Sprintf("bench_value_%d", i), metric.WithDescription("A gauge per stream."))
		if err != nil {
			b.Fatal(err)
		}
		gauges = append(gauges, g)
	}
	if _, err := p.Meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for i, s := range streams {
			for j, g := range gauges {
				o.ObserveFloat64(g.(metric.Float64Observable), float64(i*j)+0.5, s)
			}
		}
		return nil
	}, gauges...); err != nil {
		b.Fatal(err)
	}
	var src genSource
	p.Watch(&src)
	for _, h := range []struct {
		name    string
		handler http.Handler
	}{
		{"cache-miss", p.Handler()},
		{"promhttp", p.metrics.filtered}, // the handler before the cache, for comparison
	} {
		for _, enc := range []string{"identity", "gzip"} {
			b.Run(h.name+"/"+enc, func(b *testing.B) {
				req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
				req.Header.Set("Accept-Encoding", enc)
				b.ReportAllocs()
				var size int
				for b.Loop() {
					src.gen.Add(1)
					rec := httptest.NewRecorder()
					h.handler.ServeHTTP(rec, req)
					size = rec.Body.Len()
				}
				b.ReportMetric(float64(size), "bytes")
			})
		}
	}
}

// TestCacheEmptyExposition: a pipeline with nothing to show yet serves
// nothing of its own (the process and Go series only), 200, from the cache
// like any other.
func TestCacheEmptyExposition(t *testing.T) {
	c := newMetricsCache(prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	var src genSource
	c.watch(&src)
	for range 2 {
		if rec := get(t, c); ownPart(rec.Body.String()) != "" || !strings.Contains(rec.Body.String(), "process_start_time_seconds") {
			t.Errorf("body %q, want the process and Go series alone", rec.Body)
		}
	}
}

// TestCacheKeepsFewVariants: a client cycling through every format and
// encoding is answered each time, but only maxVariants bodies are kept.
func TestCacheKeepsFewVariants(t *testing.T) {
	var src genSource
	var renders atomic.Int64
	p := cachedPipeline(t, &src, &renders)
	p.Watch(&src)
	src.publish(5)
	for _, escaping := range []string{"underscores", "dots", "values", "allow-utf-8"} {
		for _, encoding := range []string{"identity", "gzip"} {
			rec := get(t, p.Handler(), "Accept", "text/plain;version=0.0.4;escaping="+escaping, "Accept-Encoding", encoding)
			body := rec.Body.Bytes()
			if encoding == "gzip" {
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			if !strings.Contains(string(body), valueLine(5)) {
				t.Errorf("%s, %s:\n%s", escaping, encoding, body)
			}
		}
	}
	p.metrics.mu.RLock()
	kept := len(p.metrics.variants)
	p.metrics.mu.RUnlock()
	if kept != maxVariants {
		t.Errorf("%d variants kept, want %d", kept, maxVariants)
	}
}

// TestCacheScraperFormatsAlwaysKept: clients that ask first, right after
// start, for unusual formats (other escapings, protobuf, gzip or not) take
// every place kept for others, yet Prometheus's and VictoriaMetrics' own
// formats are still rendered once per change and shared.
func TestCacheScraperFormatsAlwaysKept(t *testing.T) {
	var src genSource
	var renders atomic.Int64
	p := cachedPipeline(t, &src, &renders)
	p.Watch(&src)
	src.publish(9)
	for _, escaping := range []string{"dots", "values"} {
		for _, encoding := range []string{"identity", "gzip"} {
			get(t, p.Handler(), "Accept", "text/plain;version=0.0.4;escaping="+escaping, "Accept-Encoding", encoding)
		}
	}
	p.metrics.mu.RLock()
	full := len(p.metrics.variants) == maxVariants
	p.metrics.mu.RUnlock()
	if !full {
		t.Fatal("the unusual formats did not fill the places for others")
	}
	for _, accept := range scraperAccepts {
		for _, encoding := range []string{"gzip", ""} {
			renders.Store(0)
			for range 3 {
				get(t, p.Handler(), "Accept", accept, "Accept-Encoding", encoding)
			}
			if n := renders.Load(); n > 1 {
				t.Errorf("Accept %.40q..., Accept-Encoding %q: %d renders for 3 scrapes of one snapshot, want 1 at most", accept, encoding, n)
			}
		}
	}
}

// blockingCollector counts the Collect calls in flight, and the most at
// once, each held until a token arrives on release.
type blockingCollector struct {
	inflight, most atomic.Int64
	release        chan struct{}
}

func (b *blockingCollector) Describe(chan<- *prometheus.Desc) {}

func (b *blockingCollector) Collect(ch chan<- prometheus.Metric) {
	n := b.inflight.Add(1)
	for m := b.most.Load(); n > m && !b.most.CompareAndSwap(m, n); m = b.most.Load() {
	}
	<-b.release
	b.inflight.Add(-1)
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("cache_test_blocking", "A gauge.", nil, nil), prometheus.GaugeValue, 1)
}

// TestUncachedRendersBounded: many scrapes at once that no cache can
// answer (filtered by name[], or in formats with no place left to keep
// them) render maxUncached at a time, not all at once, and every one is
// answered.
func TestUncachedRendersBounded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target string
		accept func(i int) string
	}{
		{"name[]", "/metrics?name[]=cache_test_blocking", func(int) string { return "" }},
		{"unkept formats", "/metrics", func(i int) string {
			return fmt.Sprintf("text/plain;version=0.0.4;escaping=%s", []string{"dots", "values"}[i%2])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			b := &blockingCollector{release: make(chan struct{})}
			reg.MustRegister(b)
			c := newMetricsCache(reg, slog.New(slog.DiscardHandler))
			if tc.name == "unkept formats" {
				c.mu.Lock()
				for i := range maxVariants { // every place for others taken
					vk := variantKey{format: expfmt.NewFormat(expfmt.TypeProtoText), gzip: i%2 == 0}
					vk.format = expfmt.Format(fmt.Sprintf("%s; x=%d", vk.format, i))
					c.variants[vk] = newVariant(vk)
				}
				c.mu.Unlock()
			}
			const scrapes = 12
			codes := make([]int, scrapes)
			var wg sync.WaitGroup
			for i := range scrapes {
				wg.Go(func() {
					req := httptest.NewRequest(http.MethodGet, tc.target, nil)
					req.Header.Set("Accept", tc.accept(i))
					rec := httptest.NewRecorder()
					c.ServeHTTP(rec, req)
					codes[i] = rec.Code
				})
			}
			for range scrapes {
				exportertest.WaitFor(t, 10*time.Second, func() bool { return b.inflight.Load() > 0 })
				b.release <- struct{}{}
			}
			wg.Wait()
			if most := b.most.Load(); most > maxUncached {
				t.Errorf("%d uncached renders at once, want %d at most", most, maxUncached)
			}
			for i, code := range codes {
				if code != http.StatusOK {
					t.Errorf("scrape %d: %d", i, code)
				}
			}
		})
	}
}
