// Package otlptest is an in-process OTLP metrics receiver (gRPC and
// HTTP/protobuf) for tests, and a reader of Prometheus text, so a test can
// check that the push path and a scrape carry the same series and values.
package otlptest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Receiver keeps the latest value of every series it was sent.
type Receiver struct {
	colmetrics.UnimplementedMetricsServiceServer

	mu         sync.Mutex
	points     map[string]float64
	resource   map[string]string
	exports    int
	countsOnly bool
	header     http.Header // of the latest HTTP export
}

// Header returns a header of the latest OTLP/HTTP export.
func (r *Receiver) Header(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.header.Get(name)
}

// CountOnly makes the receiver count exports and keep no points, for long
// runs whose series come and go (the points map would only grow).
func (r *Receiver) CountOnly() {
	r.mu.Lock()
	r.countsOnly = true
	r.points = map[string]float64{}
	r.mu.Unlock()
}

func newReceiver() *Receiver {
	return &Receiver{points: map[string]float64{}, resource: map[string]string{}}
}

// StartGRPC serves OTLP/gRPC on loopback; the endpoint is http://HOST:PORT.
func StartGRPC(t testing.TB) (*Receiver, string) {
	r := newReceiver()
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

// StartHTTP serves OTLP/HTTP protobuf on loopback at /v1/metrics; the
// endpoint is http://HOST:PORT.
func StartHTTP(t testing.TB) (*Receiver, string) {
	r := newReceiver()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		var msg colmetrics.ExportMetricsServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &msg)
		}
		if req.URL.Path != "/v1/metrics" || err != nil {
			http.Error(w, fmt.Sprintf("path %s: %v", req.URL.Path, err), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.header = req.Header.Clone()
		r.mu.Unlock()
		r.Export(req.Context(), &msg)
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&colmetrics.ExportMetricsServiceResponse{})
		w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return r, srv.URL
}

// Export records a request (the gRPC method; the HTTP handler calls it too).
func (r *Receiver) Export(_ context.Context, req *colmetrics.ExportMetricsServiceRequest) (*colmetrics.ExportMetricsServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exports++
	if r.countsOnly {
		return &colmetrics.ExportMetricsServiceResponse{}, nil
	}
	for _, rm := range req.ResourceMetrics {
		for _, kv := range rm.GetResource().GetAttributes() {
			r.resource[kv.Key] = kv.GetValue().GetStringValue()
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				for _, dp := range numberPoints(m) {
					r.points[Key(m.Name, attrMap(dp.Attributes))] = value(dp)
				}
			}
		}
	}
	return &colmetrics.ExportMetricsServiceResponse{}, nil
}

func numberPoints(m *metricspb.Metric) []*metricspb.NumberDataPoint {
	if g := m.GetGauge(); g != nil {
		return g.DataPoints
	}
	if s := m.GetSum(); s != nil {
		return s.DataPoints
	}
	return nil
}

func value(dp *metricspb.NumberDataPoint) float64 {
	if v, ok := dp.Value.(*metricspb.NumberDataPoint_AsInt); ok {
		return float64(v.AsInt)
	}
	return dp.GetAsDouble()
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.GetValue().GetStringValue()
	}
	return m
}

// Points returns the latest value of each series, keyed by Key.
func (r *Receiver) Points() map[string]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]float64, len(r.points))
	for k, v := range r.points {
		out[k] = v
	}
	return out
}

// Resource returns the resource attributes last received.
func (r *Receiver) Resource() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]string, len(r.resource))
	for k, v := range r.resource {
		out[k] = v
	}
	return out
}

// Exports counts the export requests received.
func (r *Receiver) Exports() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.exports
}

// Key names a series as name{k="v",...} with the labels sorted.
func Key(name string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, labels[k])
	}
	b.WriteByte('}')
	return b.String()
}

// ParseProm reads Prometheus text into series keyed by Key, for comparing
// a scrape with a push. The process_* and go_* series every port serves
// (client_golang's process and Go collectors) are left out: they are
// served, never pushed.
func ParseProm(text string) (map[string]float64, error) {
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for name, fam := range families {
		if strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "go_") {
			continue
		}
		for _, m := range fam.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			var v float64
			switch {
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Counter != nil:
				v = m.Counter.GetValue()
			default:
				v = m.Untyped.GetValue()
			}
			out[Key(name, labels)] = v
		}
	}
	return out, nil
}
