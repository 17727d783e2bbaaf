package main

// The built gpu-exporter on this host, which has no NVIDIA driver: it must
// serve, explain on /health, and keep retrying. The readings themselves are
// tested against go-nvml's mock in sources/nvml and instruments.

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
)

var binary string

func TestMain(m *testing.M) { exportertest.Main(m, "gpu-exporter", &binary) }

func TestServesWithoutDriver(t *testing.T) {
	p := exportertest.Start(t, binary, nil, nil, "--nvml.retry-interval", "100ms")
	code, body := p.Get(t, "/health")
	var h pipeline.Health
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatal(err)
	}
	if code == http.StatusOK {
		t.Skip("this host has an NVIDIA driver")
	}
	if h.Status != "error" || !strings.Contains(h.Sources["gpu"].Error, "libnvidia-ml.so.1") {
		t.Errorf("health %d %s", code, body)
	}
	text := p.ScrapeText(t)
	if !strings.Contains(text, "nvidia_gpu_nvml_available 0") {
		t.Errorf("scrape:\n%s", text)
	}
	peer.CheckMetrics(t, text)
	if n := strings.Count(p.Logs.String(), "NVIDIA GPUs not fully readable"); n != 1 {
		t.Errorf("missing driver logged %d times while retrying, want once:\n%s", n, p.Logs.String())
	}
}

// TestBuildsWithoutCgo: CGO_ENABLED=0 builds everything, and that
// gpu-exporter says it has no NVML support.
func TestBuildsWithoutCgo(t *testing.T) {
	bin := t.TempDir() + "/gpu-exporter-nocgo"
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	all := exec.Command("go", "build", "./...")
	all.Dir = "../.."
	all.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := all.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./...: %v\n%s", err, out)
	}
	p := exportertest.Start(t, bin, nil, nil)
	if _, body := p.Get(t, "/health"); !strings.Contains(body, "without cgo") {
		t.Errorf("health %s, want it to say there is no NVML support", body)
	}
}
