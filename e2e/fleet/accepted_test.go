package fleet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // the workers may compress their exports

	"github.com/ffmpeg-rtmp/worker-exporters/tools/pushpath"
)

// push is the points of one worker's port at one collection: a worker's
// host name and the points' timestamp in ms, as VictoriaMetrics stores it.
type push struct {
	host string
	ms   int64
}

// acceptedCounter is an OTLP/gRPC metrics endpoint in front of the gateway.
// It passes every export on and, for each one the gateway answers OK,
// counts its data points by push: exactly the points the gateway accepted,
// which its own counter cannot tell once it is killed.
type acceptedCounter struct {
	colmetrics.UnimplementedMetricsServiceServer
	gateway  colmetrics.MetricsServiceClient
	endpoint string

	mu       sync.Mutex
	accepted map[push]int
	refused  int64  // points the gateway answered with a partial success
	other    string // a data type VictoriaMetrics stores as several samples a point
}

func startAcceptedCounter(t *testing.T, gatewayGRPC string) *acceptedCounter {
	t.Helper()
	conn, err := grpc.NewClient(gatewayGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &acceptedCounter{gateway: colmetrics.NewMetricsServiceClient(conn), endpoint: "http://" + ln.Addr().String(), accepted: map[push]int{}}
	srv := grpc.NewServer()
	colmetrics.RegisterMetricsServiceServer(srv, a)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Stop(); conn.Close() })
	return a
}

func (a *acceptedCounter) Export(ctx context.Context, req *colmetrics.ExportMetricsServiceRequest) (*colmetrics.ExportMetricsServiceResponse, error) {
	resp, err := a.gateway.Export(ctx, req)
	if err != nil {
		return nil, err // the gateway's status, as the worker would have had it
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ps := resp.GetPartialSuccess(); ps.GetRejectedDataPoints() > 0 {
		a.refused += ps.GetRejectedDataPoints()
		return resp, nil
	}
	for _, rm := range req.GetResourceMetrics() {
		host := ""
		for _, kv := range rm.GetResource().GetAttributes() {
			if kv.GetKey() == "host.name" {
				host = kv.GetValue().GetStringValue()
			}
		}
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				var points []*metricspb.NumberDataPoint
				switch d := m.GetData().(type) {
				case *metricspb.Metric_Gauge:
					points = d.Gauge.GetDataPoints()
				case *metricspb.Metric_Sum:
					points = d.Sum.GetDataPoints()
				default:
					a.other = fmt.Sprintf("%s (%T)", m.GetName(), d)
				}
				for _, p := range points {
					a.accepted[push{host, int64(p.GetTimeUnixNano() / 1e6)}]++
				}
			}
		}
	}
	return resp, nil
}

// Accepted returns the points accepted so far, by push.
func (a *acceptedCounter) Accepted(t *testing.T) map[push]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refused > 0 || a.other != "" {
		t.Fatalf("the gateway refused %d points in partial successes; data other than gauges and sums: %s", a.refused, a.other)
	}
	out := make(map[push]int, len(a.accepted))
	for k, v := range a.accepted {
		out[k] = v
	}
	return out
}

// stored counts the samples VictoriaMetrics holds of the simulated
// workers, by push, and how many are a second sample of one series at
// one timestamp.
func stored(t *testing.T, vm *pushpath.VictoriaMetrics, since time.Time) (byPush map[push]int, dups int) {
	t.Helper()
	raw, err := vm.Export(t.Context(), ours, since.Add(-time.Minute), time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	byPush = map[push]int{}
	for _, r := range raw {
		seen := make(map[int64]bool, len(r.Timestamps))
		for _, ts := range r.Timestamps {
			byPush[push{r.Metric["host_name"], ts}]++
			if seen[ts] && r.Metric["__name__"] != "worker_exporter_build_info" { // every port pushes that one alike
				dups++
			}
			seen[ts] = true
		}
	}
	return byPush, dups
}

// missing is how many accepted points are not stored, and in how many pushes.
func missing(accepted, stored map[push]int) (points, pushes int) {
	for p, n := range accepted {
		if s := stored[p]; s < n {
			points += n - s
			pushes++
		}
	}
	return points, pushes
}

// relay is a fixed address in front of VictoriaMetrics, which listens
// where it can each time it starts: the gateway keeps one URL, as it keeps
// a DNS name in production, across VictoriaMetrics' restarts. While
// VictoriaMetrics is stopped, connections to the relay are refused the
// way a stopped server's are: closed at once.
type relay struct {
	ln net.Listener
	mu sync.Mutex
	to string
	wg sync.WaitGroup
	cs map[net.Conn]bool
}

func startRelay(t *testing.T, vmURL string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, cs: map[net.Conn]bool{}}
	r.point(vmURL)
	r.wg.Go(r.serve)
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for c := range r.cs {
			c.Close()
		}
		r.cs = nil
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// URL is the relay's, for VICTORIAMETRICS_URL.
func (r *relay) URL() string { return "http://" + r.ln.Addr().String() }

// point sends new connections to the VictoriaMetrics at vmURL.
func (r *relay) point(vmURL string) {
	u, _ := url.Parse(vmURL)
	r.mu.Lock()
	r.to = u.Host
	r.mu.Unlock()
}

func (r *relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Go(func() { r.pipe(c) })
	}
}

func (r *relay) pipe(c net.Conn) {
	r.mu.Lock()
	to := r.to
	r.mu.Unlock()
	up, err := net.DialTimeout("tcp", to, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !r.track(c, up) {
		return
	}
	defer r.untrack(c, up)
	var copying sync.WaitGroup
	copying.Go(func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() })
	io.Copy(c, up)
	c.Close()
	up.Close()
	copying.Wait()
}

// track registers a pair of connections to close at cleanup; false (and
// both closed) when cleanup has begun.
func (r *relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cs == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		r.cs[c] = true
	}
	return true
}

func (r *relay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		delete(r.cs, c)
	}
}
