package fleet

import (
	"context"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
)

func TestMachineIsARealisticWorkerThatAdvances(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	m := &Machine{Index: 7, Start: now, Now: func() time.Time { return now }}
	rapl0, gpu0, ff0, dock0 := m.RAPL(), m.GPU(), m.FFmpeg(), m.Docker()
	if len(rapl0.Zones) != 2*Sockets || len(gpu0.GPUs) != GPUs || len(ff0.Streams) != Streams || len(dock0.Containers) != Containers {
		t.Fatalf("zones %d, GPUs %d, streams %d, containers %d; want %d, %d, %d, %d",
			len(rapl0.Zones), len(gpu0.GPUs), len(ff0.Streams), len(dock0.Containers), 2*Sockets, GPUs, Streams, Containers)
	}
	for _, g := range gpu0.GPUs {
		if len(g.Processes) != Streams/GPUs || len(g.EncoderSessions) != Streams/GPUs {
			t.Errorf("gpu %d: %d processes, %d sessions; want the %d encodes it carries", g.Index, len(g.Processes), len(g.EncoderSessions), Streams/GPUs)
		}
	}
	now = now.Add(15 * time.Second)
	rapl1, gpu1, ff1, dock1 := m.RAPL(), m.GPU(), m.FFmpeg(), m.Docker()
	for i := range rapl0.Zones {
		if rapl1.Zones[i].EnergyJoules <= rapl0.Zones[i].EnergyJoules {
			t.Errorf("RAPL zone %v: energy did not advance over 15 s", rapl1.Zones[i])
		}
	}
	if gpu1.GPUs[0].Values[nvml.EnergyJoules] <= gpu0.GPUs[0].Values[nvml.EnergyJoules] || !gpu1.GPUs[0].LastSample.After(gpu0.GPUs[0].LastSample) {
		t.Error("GPU energy or sample time did not advance over 15 s")
	}
	if got := ff1.Streams[0].Values[ffmpeg.Frames] - ff0.Streams[0].Values[ffmpeg.Frames]; got != 15*30 {
		t.Errorf("a 30 fps stream encoded %v frames in 15 s", got)
	}
	if dock1.Containers[0].CPUSeconds <= dock0.Containers[0].CPUSeconds {
		t.Error("container CPU time did not advance over 15 s")
	}
	if other := (&Machine{Index: 8, Start: m.Start, Now: m.Now}).GPU(); other.GPUs[0].UUID == gpu1.GPUs[0].UUID {
		t.Error("two machines have the same GPU UUID")
	}
}

// resourceReceiver is an OTLP/gRPC metrics server that keeps, per
// host.name, the resource last pushed and the series seen.
type resourceReceiver struct {
	colmetrics.UnimplementedMetricsServiceServer
	mu        sync.Mutex
	resources map[string]map[string]string           // host.name → resource
	series    map[string]map[string]map[float64]bool // host.name → series → values seen
}

func startResourceReceiver(t *testing.T) (*resourceReceiver, string) {
	r := &resourceReceiver{resources: map[string]map[string]string{}, series: map[string]map[string]map[float64]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	colmetrics.RegisterMetricsServiceServer(srv, r)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return r, "http://" + ln.Addr().String()
}

func (r *resourceReceiver) Export(_ context.Context, req *colmetrics.ExportMetricsServiceRequest) (*colmetrics.ExportMetricsServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rm := range req.ResourceMetrics {
		res := map[string]string{}
		for _, kv := range rm.GetResource().GetAttributes() {
			res[kv.Key] = kv.GetValue().GetStringValue()
		}
		host := res["host.name"]
		r.resources[host] = res
		if r.series[host] == nil {
			r.series[host] = map[string]map[float64]bool{}
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				points := m.GetGauge().GetDataPoints()
				if s := m.GetSum(); s != nil {
					points = s.DataPoints
				}
				for _, dp := range points {
					key := otlptest.Key(m.Name, attrs(dp))
					if r.series[host][key] == nil {
						r.series[host][key] = map[float64]bool{}
					}
					r.series[host][key][dp.GetAsDouble()] = true
				}
			}
		}
	}
	return &colmetrics.ExportMetricsServiceResponse{}, nil
}

func attrs(dp *metricspb.NumberDataPoint) map[string]string {
	out := map[string]string{}
	for _, kv := range dp.Attributes {
		out[kv.Key] = kv.GetValue().GetStringValue()
	}
	return out
}

// seen returns, per host.name, the resource and the series with how many
// distinct values each took.
func (r *resourceReceiver) seen() (map[string]map[string]string, map[string]map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, series := map[string]map[string]string{}, map[string]map[string]int{}
	for host, attrs := range r.resources {
		res[host] = attrs
		series[host] = map[string]int{}
		for k, values := range r.series[host] {
			series[host][k] = len(values)
		}
	}
	return res, series
}

// The OTLP receiver here is a stand-in for the collector, which the
// end-to-end tests (e2e/fleet) put in its place.
func TestWorkersPushTheirOwnResourceAndSeries(t *testing.T) {
	rcv, endpoint := startResourceReceiver(t)
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
	f := New(Push{Endpoint: endpoint, Interval: 200 * time.Millisecond}, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { f.Close(context.Background()) })
	if err := f.Grow(t.Context(), 3); err != nil {
		t.Fatal(err)
	}
	workers := f.Workers()
	want := map[string]int{}
	for _, w := range workers {
		n, err := w.Series()
		if err != nil {
			t.Fatal(err)
		}
		want[w.Name] = n
	}
	energy := otlptest.Key("rapl_energy_joules_total", map[string]string{"package": "0", "zone": "package"})
	// Every worker has pushed all its series, twice at least: its energy took two values.
	deadline := time.Now().Add(30 * time.Second)
	resources, series := rcv.seen()
	for ; !pushedAll(series, want, energy); resources, series = rcv.seen() {
		if time.Now().After(deadline) {
			got := map[string]int{}
			for name := range series {
				got[name] = len(series[name])
			}
			t.Fatalf("series pushed per worker: %v; want %v, each with two values of %s", got, want, energy)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(resources) != len(workers) {
		t.Errorf("pushes came from %d resources, want one per worker (%d): %v", len(resources), len(workers), resources)
	}
	for _, w := range workers {
		res := resources[w.Name]
		if res["service.name"] != ServiceName || res["service.instance.id"] != w.Name || res["deployment.environment"] != "test" {
			t.Errorf("worker %s pushed resource %v", w.Name, res)
		}
		if n := len(series[w.Name]); n < 400 {
			t.Errorf("worker %s pushed %d series; a realistic worker has several hundred", w.Name, n)
		}
	}
	if got := os.Getenv("OTEL_RESOURCE_ATTRIBUTES"); got != "deployment.environment=test" {
		t.Errorf("OTEL_RESOURCE_ATTRIBUTES left as %q", got)
	}
	if n, last := f.Problems(); n != 0 {
		t.Errorf("%d problems logged, the last: %s", n, last)
	}
}

func pushedAll(series map[string]map[string]int, want map[string]int, energy string) bool {
	for name, n := range want {
		if len(series[name]) != n || series[name][energy] < 2 {
			return false
		}
	}
	return true
}

func TestExportOutagesAreCounted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there
	t.Setenv("OTEL_METRIC_EXPORT_TIMEOUT", "500")
	f := New(Push{Endpoint: endpoint, Interval: 100 * time.Millisecond}, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { f.Close(context.Background()) })
	if err := f.Grow(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	exportertest.WaitFor(t, 30*time.Second, func() bool { n, _ := f.Problems(); return n >= 2 })
	if _, last := f.Problems(); last == "" {
		t.Error("the last problem has no message")
	}
}

// TestWorkersLeaveTheEnvironmentAlone: each worker's pipeline configuration
// is a struct passed down, not the process's environment set for a while:
// starting workers never shows another endpoint, interval or host to the
// process (or to a worker being built beside it).
func TestWorkersLeaveTheEnvironmentAlone(t *testing.T) {
	_, endpoint := startResourceReceiver(t)
	for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_RESOURCE_ATTRIBUTES"} {
		t.Setenv(name, "")
	}
	var seen atomic.Pointer[string]
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_RESOURCE_ATTRIBUTES"} {
				if v := os.Getenv(name); v != "" {
					s := name + "=" + v
					seen.Store(&s)
				}
			}
			runtime.Gosched()
		}
	}()
	f := New(Push{Endpoint: endpoint, Interval: 500 * time.Millisecond}, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { f.Close(context.Background()) })
	err := f.Grow(t.Context(), 20)
	close(stop)
	<-watched
	if err != nil {
		t.Fatal(err)
	}
	if s := seen.Load(); s != nil {
		t.Errorf("starting workers set %s in the process's environment", *s)
	}
}
