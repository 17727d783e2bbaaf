package pipeline

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
)

func TestConfigFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want Config
		err  bool
	}{
		{"nothing", nil, Config{Protocol: "grpc"}, false},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://gw:4317", "OTEL_METRIC_EXPORT_INTERVAL": "15000", "OTEL_METRIC_EXPORT_TIMEOUT": "5000"},
			Config{Endpoint: "http://gw:4317", Protocol: "grpc", Interval: 15 * time.Second, Timeout: 5 * time.Second}, false},
		{"http base URL", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gw:4318/otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			Config{Endpoint: "https://gw:4318/otlp/v1/metrics", Protocol: "http/protobuf"}, false},
		{"http metrics URL as is", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gw:4318", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://m:4318/in", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"},
			Config{Endpoint: "https://m:4318/in", Protocol: "http/protobuf"}, false},
		{"disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://gw:4317", "OTEL_SDK_DISABLED": "true"}, Config{}, false},
		{"bad protocol", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://gw:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "udp"}, Config{}, true},
		{"bad interval", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://gw:4317", "OTEL_METRIC_EXPORT_INTERVAL": "15s"}, Config{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearOTELEnv(t)
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "worker.pool=gpu")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			got, err := ConfigFromEnv()
			if (err != nil) != tc.err {
				t.Fatalf("err %v, want an error: %v", err, tc.err)
			}
			if tc.err {
				return
			}
			if got.Endpoint != tc.want.Endpoint || got.Protocol != tc.want.Protocol || got.Interval != tc.want.Interval || got.Timeout != tc.want.Timeout {
				t.Errorf("%+v, want %+v", got, tc.want)
			}
			if got.Endpoint == "" && got.Off == "" {
				t.Error("no push, and no reason to log")
			}
			if set := attribute.NewSet(got.Resource...); !set.HasValue("worker.pool") {
				t.Errorf("resource %v lacks OTEL_RESOURCE_ATTRIBUTES", got.Resource)
			}
		})
	}
}

// TestConfigsSideBySide: two processes' worth of pipelines in one (as the
// fleet simulator runs), each given its own Config, push to their own
// collector as their own host, the environment saying nothing.
func TestConfigsSideBySide(t *testing.T) {
	clearOTELEnv(t)
	var recvs []*otlptest.Receiver
	for _, host := range []string{"worker-a", "worker-b"} {
		recv, endpoint := otlptest.StartGRPC(t)
		recvs = append(recvs, recv)
		cfg := Config{Endpoint: endpoint, Protocol: "grpc", Interval: 50 * time.Millisecond,
			Resource: []attribute.KeyValue{attribute.String("host.name", host)}}
		shared, err := cfg.Process(context.Background(), "test-exporter", host, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		p, err := shared.Pipeline("test-exporter", 0)
		if err != nil {
			t.Fatal(err)
		}
		addTestInstruments(t, p)
		t.Cleanup(func() { p.Close(context.Background()); shared.Close(context.Background()) })
	}
	for i, host := range []string{"worker-a", "worker-b"} {
		waitFor(t, func() bool { return len(recvs[i].Points()) == 2 })
		if got := recvs[i].Resource()["host.name"]; got != host {
			t.Errorf("collector %d got host.name %q, want %q", i, got, host)
		}
	}
}
