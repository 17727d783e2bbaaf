package pushpath

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// What the collector's telemetry endpoint says, as v0.165 writes it: some
// counters with _total, some without, over several labels.
const telemetryText = `# TYPE otelcol_receiver_accepted_metric_points counter
otelcol_receiver_accepted_metric_points{receiver="otlp",transport="grpc"} 100
otelcol_receiver_accepted_metric_points{receiver="otlp",transport="http"} 20
# TYPE otelcol_receiver_refused_metric_points_total counter
otelcol_receiver_refused_metric_points_total{receiver="otlp",transport="grpc"} 3
# TYPE otelcol_exporter_queue_size gauge
otelcol_exporter_queue_size{exporter="otlp_http/victoriametrics"} 7
`

func TestTelemetrySumsOverLabelsWithoutTotal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(telemetryText)) }))
	defer srv.Close()
	c := &Collector{telemetry: srv.URL}
	got, err := c.Telemetry(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"otelcol_receiver_accepted_metric_points": 120,
		"otelcol_receiver_refused_metric_points":  3,
		"otelcol_exporter_queue_size":             7,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], want, got)
		}
	}
}

func TestUsageOfThisProcess(t *testing.T) {
	before, err := UsageOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(t.TempDir()+"/64k", make([]byte, 1<<16), 0o644); err != nil {
		t.Fatal(err)
	}
	after, err := UsageOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.WrittenBytes-before.WrittenBytes < 1<<16 || after.RSSBytes <= 0 || after.CPUSeconds < 0 {
		t.Errorf("usage before %+v, after %+v: want 64 KiB more written and some memory", before, after)
	}
}

func TestTailKeepsTheEnd(t *testing.T) {
	tl := &tail{max: 8}
	tl.Write([]byte("0123456"))
	tl.Write([]byte("789abc"))
	if got := tl.String(); got != "56789abc" {
		t.Errorf("tail = %q", got)
	}
}

func TestReadFlagsSkipsComments(t *testing.T) {
	path := t.TempDir() + "/flags"
	os.WriteFile(path, []byte("# a comment\n-one\n\n  -two=2  \n"), 0o644)
	got, err := readFlags(path)
	if err != nil || strings.Join(got, " ") != "-one -two=2" {
		t.Errorf("readFlags = %q, %v", got, err)
	}
}
