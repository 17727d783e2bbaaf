package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
)

// clearOTELEnv keeps the developer's own OTEL_* settings out of the tests.
func clearOTELEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "OTEL_") {
			t.Setenv(name, "")
		}
	}
}

// newTestPipeline builds a pipeline with one gauge and one counter.
func newTestPipeline(t *testing.T, logs io.Writer) *Pipeline {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	o := NewOptions(fs, "test-exporter", 9999, "TEST_EXPORTER_PORT")
	p, err := New(context.Background(), o, "127.0.0.1:9999", slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	addTestInstruments(t, p)
	return p
}

// newTestPipelines builds n pipelines of one process (one Process), as
// worker-exporter's ports are, each with newTestPipeline's instruments.
func newTestPipelines(t *testing.T, n int) []*Pipeline {
	t.Helper()
	shared, err := Config{}.Process(context.Background(), "test-exporter", "h:1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shared.Close(context.Background()) })
	var ps []*Pipeline
	for range n {
		p, err := shared.Pipeline("test-exporter", 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		addTestInstruments(t, p)
		ps = append(ps, p)
	}
	return ps
}

func addTestInstruments(t *testing.T, p *Pipeline) {
	t.Helper()
	_, err := p.Meter.Float64ObservableGauge("test_power_watts", metric.WithUnit("W"), metric.WithDescription("A gauge."),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			o.Observe(42.5, metric.WithAttributes(attribute.String("zone", "package")))
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Meter.Float64ObservableCounter("test_energy_joules_total", metric.WithUnit("J"), metric.WithDescription("A counter."),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			o.Observe(1234.5, metric.WithAttributes(attribute.String("zone", "package")))
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return rec.Body.String()
}

func TestPrometheusExposition(t *testing.T) {
	clearOTELEnv(t)
	p := newTestPipeline(t, io.Discard)
	want := `# HELP test_energy_joules_total A counter.
# TYPE test_energy_joules_total counter
test_energy_joules_total{zone="package"} 1234.5
# HELP test_power_watts A gauge.
# TYPE test_power_watts gauge
test_power_watts{zone="package"} 42.5
`
	if got := ownPart(scrape(t, p.Handler())); got != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", got, want)
	}
}

func TestNoEndpointNoPush(t *testing.T) {
	clearOTELEnv(t)
	var logs exportertest.Buffer
	p := newTestPipeline(t, &logs)
	if p.pushing {
		t.Error("pushing without an endpoint")
	}
	if n := strings.Count(logs.String(), "OTLP push off"); n != 1 {
		t.Errorf("said %d times that push is off, want once:\n%s", n, logs.String())
	}

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_SDK_DISABLED", "true")
	if p := newTestPipeline(t, io.Discard); p.pushing {
		t.Error("pushing with OTEL_SDK_DISABLED=true")
	}
}

func TestBadProtocol(t *testing.T) {
	clearOTELEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
	o := NewOptions(flag.NewFlagSet("t", flag.ContinueOnError), "x", 1, "X_PORT")
	if _, err := New(context.Background(), o, ":1", slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "carrier-pigeon") {
		t.Errorf("err %v, want one naming the protocol", err)
	}
}

// TestOTLPPush: both protocols deliver the very series and values a scrape
// shows, under a resource that tells workers apart.
func TestOTLPPush(t *testing.T) {
	for _, tc := range []struct {
		protocol string
		start    func(testing.TB) (*otlptest.Receiver, string)
	}{
		{"", otlptest.StartGRPC}, // grpc is the default
		{"grpc", otlptest.StartGRPC},
		{"http/protobuf", otlptest.StartHTTP},
	} {
		t.Run("protocol="+tc.protocol, func(t *testing.T) {
			clearOTELEnv(t)
			recv, endpoint := tc.start(t)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tc.protocol)
			t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "50")
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,worker.pool=gpu")
			p := newTestPipeline(t, io.Discard)
			if !p.pushing {
				t.Fatal("not pushing with an endpoint set")
			}
			waitFor(t, func() bool { return len(recv.Points()) == 2 })

			scraped, err := otlptest.ParseProm(ownPart(scrape(t, p.Handler()))) // process_* and go_* are not pushed
			if err != nil {
				t.Fatal(err)
			}
			pushed := recv.Points()
			for k, v := range scraped {
				if pushed[k] != v {
					t.Errorf("%s: scraped %v, pushed %v (pushed: %v)", k, v, pushed[k], pushed)
				}
			}
			res := recv.Resource()
			host, _ := os.Hostname()
			for k, v := range map[string]string{
				"service.name":                "test-exporter",
				"service.instance.id":         net.JoinHostPort(host, "9999"),
				"host.name":                   host,
				"deployment.environment.name": "test",
				"worker.pool":                 "gpu",
			} {
				if res[k] != v {
					t.Errorf("resource %s = %q, want %q (all: %v)", k, res[k], v, res)
				}
			}
		})
	}
}

// TestOTLPHeadersAndMetricsEndpoint: OTEL_EXPORTER_OTLP_HEADERS reach the
// collector, and the metrics-specific endpoint variable is enough to push.
func TestOTLPHeadersAndMetricsEndpoint(t *testing.T) {
	clearOTELEnv(t)
	recv, endpoint := otlptest.StartHTTP(t)
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint+"/v1/metrics")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken,x-tenant=fleet-7")
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "50")
	newTestPipeline(t, io.Discard)
	waitFor(t, func() bool { return recv.Exports() > 0 })
	if got := recv.Header("Authorization"); got != "Bearer t0ken" {
		t.Errorf("Authorization %q", got)
	}
	if got := recv.Header("X-Tenant"); got != "fleet-7" {
		t.Errorf("X-Tenant %q", got)
	}
}

func TestServiceNameFromEnv(t *testing.T) {
	clearOTELEnv(t)
	recv, endpoint := otlptest.StartGRPC(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "50")
	t.Setenv("OTEL_SERVICE_NAME", "edge-worker-7")
	newTestPipeline(t, io.Discard)
	waitFor(t, func() bool { return recv.Exports() > 0 })
	if got := recv.Resource()["service.name"]; got != "edge-worker-7" {
		t.Errorf("service.name %q, want OTEL_SERVICE_NAME's edge-worker-7", got)
	}
}

// TestCollectorDownAndBack: scrapes never wait on a dead collector, the
// outage is logged once, and pushing resumes by itself when it returns.
func TestCollectorDownAndBack(t *testing.T) {
	clearOTELEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there yet

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "20")
	t.Setenv("OTEL_METRIC_EXPORT_TIMEOUT", "100")
	var logs exportertest.Buffer
	p := newTestPipeline(t, &logs)

	waitFor(t, func() bool { return strings.Contains(logs.String(), "OTLP export failing") })
	for range 20 {
		done := make(chan struct{})
		go func() { scrape(t, p.Handler()); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("a scrape waited on the dead collector")
		}
	}
	time.Sleep(200 * time.Millisecond) // several more failed intervals
	if n := strings.Count(logs.String(), "OTLP export failing"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, logs.String())
	}

	// The collector comes up on the same address.
	recv := &otlptestServer{}
	srv := recv.start(t, addr)
	defer srv.Close()
	waitFor(t, func() bool { return strings.Contains(logs.String(), "OTLP export recovered") })
	waitFor(t, func() bool { return recv.requests() > 0 })
}

// otlptestServer accepts OTLP/HTTP on a fixed address, counting requests.
type otlptestServer struct {
	mu sync.Mutex
	n  int
}

func (s *otlptestServer) start(t *testing.T, addr string) *http.Server {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.n++
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	})}
	go srv.Serve(ln)
	return srv
}

func (s *otlptestServer) requests() int { s.mu.Lock(); defer s.mu.Unlock(); return s.n }

// serve runs p on a loopback port until cancel; served yields Serve's result.
func serve(t *testing.T, p *Pipeline) (addr string, cancel func(), served <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- p.Serve(ctx, ln, defaultWeb) }()
	return ln.Addr().String(), cancel, result
}

// TestServeShutdownFlushes: cancelling Serve drains HTTP and pushes a last
// export, even though the export interval is far off.
func TestServeShutdownFlushes(t *testing.T) {
	clearOTELEnv(t)
	recv, endpoint := otlptest.StartGRPC(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
	addr, cancel, served := serve(t, newTestPipeline(t, io.Discard))

	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if recv.Exports() != 0 {
		t.Fatal("exported before the interval")
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(shutdownTimeout + time.Second):
		t.Fatal("Serve did not return within the shutdown bound")
	}
	if recv.Exports() == 0 || len(recv.Points()) != 2 {
		t.Errorf("no final export on shutdown: %d exports, points %v", recv.Exports(), recv.Points())
	}
	if _, err := http.Get("http://" + addr + "/health"); err == nil {
		t.Error("still serving after shutdown")
	}
}

func TestShutdownBoundedWithDeadCollector(t *testing.T) {
	clearOTELEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
	_, cancel, served := serve(t, newTestPipeline(t, io.Discard))
	cancel()
	select {
	case <-served:
	case <-time.After(shutdownTimeout + 2*time.Second):
		t.Fatal("shutdown hung on a dead collector")
	}
}

// TestSeriesLimit: a pipeline built with a series limit serves that many
// series of one instrument, where the SDK's default (2,000) would fold
// the rest into one overflow series.
func TestSeriesLimit(t *testing.T) {
	clearOTELEnv(t)
	shared, err := Config{}.Process(context.Background(), "test-exporter", "h:1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	const streams = 3000
	series := func(limit int) (n int, overflow bool) {
		p, err := shared.Pipeline("test", limit)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		_, err = p.Meter.Int64ObservableGauge("test_frames", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			for i := range streams {
				o.Observe(int64(i), metric.WithAttributes(attribute.Int("stream", i)))
			}
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(scrape(t, p.Handler()), "\n") {
			if strings.HasPrefix(line, "test_frames{") {
				n++
				overflow = overflow || strings.Contains(line, `otel_metric_overflow="true"`)
			}
		}
		return n, overflow
	}
	if n, overflow := series(5000); n != streams || overflow {
		t.Errorf("limit 5000: %d series (overflow %v), want all %d", n, overflow, streams)
	}
	if n, overflow := series(0); n >= streams || !overflow {
		t.Errorf("default limit: %d series (overflow %v), want the SDK to fold past 2000", n, overflow)
	}
}

func TestHealth(t *testing.T) {
	clearOTELEnv(t)
	p := newTestPipeline(t, io.Discard)
	get := func() (int, Health) {
		rec := httptest.NewRecorder()
		p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
		var h Health
		if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
			t.Fatalf("health body %q: %v", rec.Body.String(), err)
		}
		return rec.Code, h
	}
	if code, h := get(); code != 200 || h.Status != "ok" {
		t.Errorf("no sources: %d %+v", code, h)
	}
	var fail error
	p.AddHealth("good", func() error { return nil })
	p.AddHealth("cpu", func() error { return fail })
	if code, h := get(); code != 200 || h.Status != "ok" || h.Sources["cpu"].Status != "ok" {
		t.Errorf("healthy: %d %+v", code, h)
	}
	fail = errors.New("energy_uj: permission denied")
	code, h := get()
	if code != http.StatusServiceUnavailable || h.Status != "error" ||
		h.Sources["cpu"].Error != "energy_uj: permission denied" || h.Sources["good"].Status != "ok" {
		t.Errorf("failing: %d %+v", code, h)
	}

	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if body := rec.Body.String(); !strings.Contains(body, `href="metrics"`) || !strings.Contains(body, `href="health"`) {
		t.Errorf("landing page lacks links:\n%s", body)
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"", nil, ":9506"},
		{"9600", nil, ":9600"},
		{"9600", []string{"--port", "9700"}, ":9700"},
		{"9600", []string{"--port", "9700", "--web.listen-address", "127.0.0.1:9800"}, "127.0.0.1:9800"},
	} {
		t.Setenv("TEST_PORT", tc.env)
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		o := NewOptions(fs, "t", 9506, "TEST_PORT")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if got, err := o.Address(); err != nil || got != tc.want {
			t.Errorf("env %q args %v: %q %v, want %q", tc.env, tc.args, got, err, tc.want)
		}
	}
	t.Setenv("TEST_PORT", "ninety")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	o := NewOptions(fs, "t", 9506, "TEST_PORT")
	if _, err := o.Address(); err == nil || !strings.Contains(err.Error(), "TEST_PORT") {
		t.Errorf("bad env: %v", err)
	}
	for _, args := range [][]string{{"--log.level", "loud"}, {"--log.format", "xml"}} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		o := NewOptions(fs, "t", 1, "TEST_PORT")
		fs.Parse(args)
		if _, err := o.Logger(io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	exportertest.WaitFor(t, 10*time.Second, cond)
}
