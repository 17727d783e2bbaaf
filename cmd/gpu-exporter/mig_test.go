//go:build cgo

package main

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/ffmpeg-rtmp/worker-exporters/cmd/internal/exporters"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/gpumock"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
)

// TestMIGOnHealth: a GPU in MIG mode (go-nvml's mock: no GPU here) keeps
// /health at 200 and says there what its series do not cover; /metrics has
// what NVML gives for it and nothing it does not.
func TestMIGOnHealth(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	m := gpumock.New(2)
	d := m.Devices[0].(*server.Device)
	d.SetMigMode(gonvml.DEVICE_MIG_ENABLE)
	d.GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) { return gonvml.Utilization{}, gonvml.ERROR_NOT_SUPPORTED }
	d.GetEncoderStatsFunc = func() (int, uint32, uint32, gonvml.Return) { return 0, 0, 0, gonvml.ERROR_NOT_SUPPORTED }
	d.GetProcessUtilizationFunc = func(uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
		return nil, gonvml.ERROR_NOT_SUPPORTED
	}
	src := nvml.New(nvml.Config{Lib: m, Interval: time.Second, Timeout: 5 * time.Second, RetryInterval: time.Second})
	t.Cleanup(src.Close)
	src.Sample(context.Background())

	o := pipeline.NewOptions(flag.NewFlagSet("test", flag.ContinueOnError), "gpu-exporter", 9505, "GPU_EXPORTER_PORT")
	p, err := pipeline.New(context.Background(), o, ":9505", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	if err := exporters.RegisterGPU(p, src); err != nil {
		t.Fatal(err)
	}
	p.AddHealth("gpu", src.Health)

	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	code, body := get("/health")
	var h pipeline.Health
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatal(err)
	}
	gpu := h.Sources["gpu"]
	if code != http.StatusOK || h.Status != "ok" || gpu.Status != "ok" {
		t.Errorf("health %d %s, want 200 and ok: MIG mode is no failure", code, body)
	}
	if len(gpu.Notes) != 1 || !strings.Contains(gpu.Notes[0], "gpu 0 is in MIG mode") || !strings.Contains(gpu.Notes[0], "GetProcessUtilization") {
		t.Errorf("notes %q, want gpu 0's MIG mode and what it lacks", gpu.Notes)
	}

	_, text := get("/metrics")
	for _, absent := range []string{`nvidia_gpu_utilization_percent{gpu="0"}`, `nvidia_gpu_encoder_sessions{gpu="0"}`} {
		if strings.Contains(text, absent) {
			t.Errorf("%s reported for a GPU in MIG mode", absent)
		}
	}
	if strings.Contains(text, `engine="sm",gpu="0"`) {
		t.Error("per-process utilisation reported for a GPU in MIG mode")
	}
	for _, present := range []string{`nvidia_gpu_power_draw_watts{gpu="0"} 100`, `nvidia_gpu_utilization_percent{gpu="1"} 11`, `engine="sm",gpu="1",pid="1001"} 31`} {
		if !strings.Contains(text, present) {
			t.Errorf("missing %s", present)
		}
	}
	peer.CheckMetrics(t, text)
}
