package pipeline

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// samples decodes a /metrics answer (gzipped or not, any format) into
// values by series name, the last value of a name winning.
func samples(t testing.TB, header http.Header, body []byte) map[string]float64 {
	t.Helper()
	if header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body)) // reads every member, as Prometheus does
		if err != nil {
			t.Fatal(err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	dec := &expfmt.SampleDecoder{Dec: expfmt.NewDecoder(bytes.NewReader(body), expfmt.Format(header.Get("Content-Type"))), Opts: &expfmt.DecodeOptions{}}
	out := map[string]float64{}
	for {
		var v model.Vector
		if err := dec.Decode(&v); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("%s: %v", header.Get("Content-Type"), err)
			}
			return out
		}
		for _, s := range v {
			out[string(s.Metric[model.MetricNameLabel])] = float64(s.Value)
		}
	}
}

// TestRuntimeMetrics: every variant of /metrics serves client_golang's
// process_* and go_* series beside the cached body, and serves them fresh:
// between two scrapes of one cached render, the Go heap allocated by the
// first scrape shows in the second.
func TestRuntimeMetrics(t *testing.T) {
	var src genSource
	var renders atomic.Int64
	p := cachedPipeline(t, &src, &renders)
	p.Watch(&src)
	src.publish(3)
	const proto = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
	for _, tc := range []struct{ name, accept, encoding string }{
		{"text", "", ""},
		{"text gzip", "", "gzip"},
		{"protobuf", proto, ""},
		{"protobuf gzip", proto, "gzip"},
	} {
		renders.Store(0)
		var allocs []float64
		for range 2 {
			rec := get(t, p.Handler(), "Accept", tc.accept, "Accept-Encoding", tc.encoding)
			got := samples(t, rec.Header(), rec.Body.Bytes())
			for _, name := range []string{"cache_test_value", "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "go_goroutines", "go_memstats_alloc_bytes_total"} {
				if _, ok := got[name]; !ok {
					t.Errorf("%s: no %s in the scrape", tc.name, name)
				}
			}
			allocs = append(allocs, got["go_memstats_alloc_bytes_total"])
		}
		if renders.Load() != 1 {
			t.Errorf("%s: %d renders for two scrapes of one snapshot, want 1", tc.name, renders.Load())
		}
		if allocs[1] <= allocs[0] {
			t.Errorf("%s: go_memstats_alloc_bytes_total %v then %v: the Go series were kept with the cached body", tc.name, allocs[0], allocs[1])
		}
	}
}

// BenchmarkRuntimeMetrics is what the process and Go series cost a scrape:
// they are gathered and encoded afresh every time, cached body or not.
func BenchmarkRuntimeMetrics(b *testing.B) {
	c := newMetricsCache(prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	for _, gz := range []bool{false, true} {
		name := "text"
		if gz {
			name = "text_gzip"
		}
		b.Run(name, func(b *testing.B) {
			v := newVariant(variantKey{format: expfmt.NewFormat(expfmt.TypeTextPlain), gzip: gz})
			b.ReportAllocs()
			var size int
			for b.Loop() {
				buf := c.renderRuntime(v)
				size = buf.Len()
				runtimeBuffers.Put(buf)
			}
			b.ReportMetric(float64(size), "bytes/scrape")
		})
	}
}
