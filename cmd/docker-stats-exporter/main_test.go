package main

// End to end against a real Docker Engine API: Debian's podman serving it on
// a unix socket, with busybox containers.

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/fakeengine"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/podmantest"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
)

var binary string

func TestMain(m *testing.M) { exportertest.Main(m, "docker-stats-exporter", &binary) }

func TestAgainstPodman(t *testing.T) {
	pm := podmantest.Start(t)
	pm.Run(t, "burner", "while :; do :; done", "--label", "com.example.job=job42")
	pm.Run(t, "idler", "sleep 3600")
	e := exportertest.Start(t, binary, nil, []string{"DOCKER_HOST=" + pm.DockerHost},
		"--docker.interval", "500ms", "--docker.labels", "com.example.job")

	burner := `{container="burner",container_label_com_example_job="job42"}`
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		s := e.Scrape(t)
		_, ok := s[`docker_container_cpu_percent{container="idler"}`]
		return s["docker_container_cpu_percent"+burner] > 0 && ok
	})
	// Let a few samples pass so the CPU window covers steady spinning.
	time.Sleep(1500 * time.Millisecond)
	s := e.Scrape(t)
	if cpu := s["docker_container_cpu_percent"+burner]; cpu < 50 || cpu > 150 {
		t.Errorf("burner CPU %v%%, want about 100 (one busy core)", cpu)
	}
	if cpu := s[`docker_container_cpu_percent{container="idler"}`]; cpu > 10 {
		t.Errorf("idler CPU %v%%, want near 0", cpu)
	}
	for _, name := range []string{"docker_container_memory_bytes", "docker_container_network_rx_bytes", "docker_container_network_tx_bytes"} {
		if v, ok := s[name+`{container="idler"}`]; !ok || v <= 0 {
			t.Errorf("%s for idler: %v (%v)", name, v, ok)
		}
	}
	if s[`docker_container_state{container="idler",state="running"}`] != 1 || s["docker_daemon_up{}"] != 1 {
		t.Errorf("state or daemon_up wrong: %v", s)
	}
	peer.CheckMetrics(t, e.ScrapeText(t))

	pm.Podman(t, "rm", "--force", "--time", "0", "idler")
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		return !strings.Contains(e.ScrapeText(t), `container="idler"`)
	})
	if _, ok := e.Scrape(t)["docker_container_memory_bytes"+burner]; !ok {
		t.Error("burner's series went with idler's")
	}
}

// TestDaemonDown: no daemon at DOCKER_HOST; the exporter serves, /health
// says why, and it picks the daemon up when it appears.
func TestDaemonDown(t *testing.T) {
	fake := fakeengine.Start(t)
	fake.Down()
	e := exportertest.Start(t, binary, nil, []string{"DOCKER_HOST=" + fake.DockerHost()}, "--docker.interval", "100ms")
	code, body := e.Get(t, "/health")
	var h pipeline.Health
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatal(err)
	}
	if code != http.StatusServiceUnavailable || !strings.Contains(h.Sources["docker"].Error, "docker daemon at unix://") {
		t.Errorf("health %d %s", code, body)
	}
	if e.Scrape(t)["docker_daemon_up{}"] != 0 {
		t.Error("daemon_up not 0")
	}
	fake.Up(t)
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		code, _ := e.Get(t, "/health")
		return code == http.StatusOK
	})
}
