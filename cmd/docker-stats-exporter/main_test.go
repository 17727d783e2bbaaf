package main

// End to end against a real Docker Engine API: Debian's podman serving it on
// a unix socket, with busybox containers.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/fakeengine"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/podmantest"
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
	// Until a sample's window covers steady spinning: one busy core.
	var s map[string]float64
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		s = e.Scrape(t)
		cpu := s["docker_container_cpu_percent"+burner]
		if cpu > 150 {
			t.Fatalf("burner CPU %v%%, want about 100 (one busy core)", cpu)
		}
		return cpu >= 50
	})
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
	// Figures from the containers' cgroups (this host's podman), and /health says so.
	if s[`docker_container_figures_path{container="idler",path="cgroup"}`] != 1 || s[`docker_container_figures_path{container="idler",path="stats"}`] != 0 {
		t.Errorf("idler's figures path: %v", s)
	}
	if _, body := e.Get(t, "/health"); !strings.Contains(body, "2 running containers' figures from their cgroups (cgroup): burner, idler") {
		t.Errorf("/health: %s", body)
	}
	peer.CheckMetrics(t, e.ScrapeText(t))

	// The same containers by stats calls, when asked.
	byStats := exportertest.Start(t, binary, nil, []string{"DOCKER_HOST=" + pm.DockerHost}, "--docker.interval", "500ms", "--docker.cgroups=false")
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		s := byStats.Scrape(t)
		_, mem := s[`docker_container_memory_bytes{container="idler"}`]
		return mem && s[`docker_container_figures_path{container="idler",path="stats"}`] == 1
	})
	if _, body := byStats.Get(t, "/health"); !strings.Contains(body, "from a stats call each per interval (stats)") || !strings.Contains(body, "--docker.cgroups=false") {
		t.Errorf("/health: %s", body)
	}

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

// TestParityAgainstPodman: the cAdvisor-like figures with a real Engine
// API. CPU seconds are checked against the container's own cgroup
// accounting, read from the host's /sys/fs/cgroup between two readings of
// which the exporter's must lie; health goes unhealthy through a failing
// healthcheck; an exited container serves its exit code; the engine's own
// process is found by its socket.
//
// podman 4.3 (Debian 12) fills neither throttling_data nor packet counts
// in its Docker API stats (zeros, even while the cgroup counts throttled
// periods): by the cgroup path the exporter serves the cgroup's figures;
// by the stats path (--docker.cgroups=false) the test checks it leaves
// them out rather than serve those zeros, and checks the values whenever
// podman does fill them.
// The docker-shaped figures are covered against internal/testkit/fakeengine in
// sources/docker.
func TestParityAgainstPodman(t *testing.T) {
	pm := podmantest.Start(t)
	// 0.01 CPU (1 ms per 100 ms period), not 0.5: on a loaded machine a busy
	// loop may get less than half a core, and is then never throttled.
	pm.Run(t, "limited", "while :; do :; done", "--cpus", "0.01")
	// podman runs healthchecks from systemd timers; without systemd the
	// test runs them itself.
	pm.Run(t, "sick", "sleep 3600", "--health-cmd", "false", "--health-interval", "1s", "--health-retries", "1")
	pm.Run(t, "quitter", "exit 3")
	e := exportertest.Start(t, binary, nil, []string{"DOCKER_HOST=" + pm.DockerHost}, "--docker.interval", "300ms")

	scrape := func() map[string]float64 { return e.Scrape(t) }
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		s := scrape()
		return s[`docker_container_health_status{container="sick",status="starting"}`] == 1 &&
			s[`docker_container_exit_code{container="quitter"}`] == 3 && s[`docker_container_state{container="quitter",state="exited"}`] == 1
	})
	if out, err := pm.Try("healthcheck", "run", "sick"); err == nil || !strings.Contains(out, "unhealthy") {
		t.Fatalf("podman healthcheck run: %v %q, want it to fail unhealthy", err, out)
	}
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		s := scrape()
		return s[`docker_container_health_status{container="sick",status="unhealthy"}`] == 1 &&
			s[`docker_container_health_status{container="sick",status="starting"}`] == 0
	})

	// CPU seconds: cgroup before ≤ exporter ≤ cgroup after.
	cgroup := cgroupOf(t, pm, "limited")
	before := cgroup.usage(t)
	var cpu float64
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		cpu = scrape()[`docker_container_cpu_usage_seconds_total{container="limited"}`]
		return cpu >= before
	})
	if after := cgroup.usage(t); cpu > after {
		t.Errorf("CPU seconds %v, want between the cgroup's %v and %v", cpu, before, after)
	}

	// Throttling: the cgroup throttles. By the cgroup path the exporter
	// serves the cgroup's own count, and the packets of the container's
	// network namespace.
	exportertest.WaitFor(t, 60*time.Second, func() bool { return cgroup.throttled(t) > 0 })
	var s map[string]float64
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		s = scrape()
		return s[`docker_container_cpu_throttled_periods_total{container="limited"}`] > 0
	})
	if periods := s[`docker_container_cpu_throttled_periods_total{container="limited"}`]; periods > float64(cgroup.throttled(t)) {
		t.Errorf("throttled periods %v, want at most the cgroup's %v", periods, cgroup.throttled(t))
	}
	if rx, bytes := s[`docker_container_network_packets_total{container="limited",direction="rx"}`], s[`docker_container_network_rx_bytes{container="limited"}`]; bytes > 0 && rx == 0 {
		t.Errorf("rx: %v bytes in %v packets by the cgroup path", bytes, rx)
	}
	// By the stats path, it serves what the API says, leaving out podman's zeros.
	byStats := exportertest.Start(t, binary, nil, []string{"DOCKER_HOST=" + pm.DockerHost}, "--docker.interval", "300ms", "--docker.cgroups=false")
	var viaStats map[string]float64
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		viaStats = byStats.Scrape(t)
		_, ok := viaStats[`docker_container_cpu_usage_seconds_total{container="limited"}`]
		return ok
	})
	stats := apiStats(t, pm, "limited")
	periods, served := viaStats[`docker_container_cpu_throttled_periods_total{container="limited"}`]
	if stats.CPUStats.ThrottlingData.Periods == 0 {
		if served {
			t.Errorf("throttled periods %v served although the API reports no CFS periods (podman's zeros)", periods)
		}
	} else if !served || periods > float64(cgroup.throttled(t)) {
		t.Errorf("throttled periods %v (%v), want served and at most the cgroup's", periods, served)
	}
	for _, n := range stats.Networks {
		if _, ok := viaStats[`docker_container_network_packets_total{container="limited",direction="rx"}`]; n.RxBytes > 0 && n.RxPackets == 0 && ok {
			t.Error("rx packets served although the API counts bytes in no packets")
		}
	}

	if v := s[`docker_container_restarts_total{container="quitter"}`]; v != 0 {
		t.Errorf("exited container's restarts %v, want podman's 0", v)
	}
	if _, ok := s[`docker_container_restarts_total{container="quitter"}`]; !ok {
		t.Error("an exited container's restart count is not served")
	}
	startNs, err := strconv.ParseInt(pm.Podman(t, "inspect", "--format", "{{.State.StartedAt.UnixNano}}", "limited"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if got := s[`docker_container_start_time_seconds{container="limited"}`]; math.Abs(got-float64(startNs)/1e9) > 1e-3 {
		t.Errorf("start time %v, podman says %v", got, float64(startNs)/1e9)
	}
	sum := 0.0
	for k, v := range s {
		if strings.HasPrefix(k, "docker_container_cpu_percent{") {
			sum += v
		}
	}
	if total, ok := s["docker_containers_total_cpu_percent{}"]; !ok || math.Abs(total-sum) > 1e-9*max(1, sum) {
		t.Errorf("total CPU %v (%v), want the sum of the containers' %v", total, ok, sum)
	}
	// The podman service holds the socket, and runs as this user.
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		v, ok := scrape()["docker_engine_cpu_percent{}"]
		return ok && v >= 0
	})
	peer.CheckMetrics(t, e.ScrapeText(t))
}

// cgroupCPU is a container's cgroup CPU accounting on cgroup v1 or v2.
type cgroupCPU struct{ v1cpu, v1acct, v2 string }

func cgroupOf(t *testing.T, pm *podmantest.Podman, name string) cgroupCPU {
	t.Helper()
	path := pm.Podman(t, "inspect", "--format", "{{.State.CgroupPath}}", name)
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return cgroupCPU{v2: filepath.Join("/sys/fs/cgroup", path)}
	}
	return cgroupCPU{v1cpu: filepath.Join("/sys/fs/cgroup/cpu", path), v1acct: filepath.Join("/sys/fs/cgroup/cpuacct", path)}
}

// usage is CPU seconds used: cpuacct.usage (ns) on v1, usage_usec on v2.
func (c cgroupCPU) usage(t *testing.T) float64 {
	if c.v2 != "" {
		return float64(cpuStat(t, c.v2, "usage_usec")) / 1e6
	}
	raw, err := os.ReadFile(filepath.Join(c.v1acct, "cpuacct.usage"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return float64(ns) / 1e9
}

// throttled is the periods the quota throttled: nr_throttled, on v1 and v2.
func (c cgroupCPU) throttled(t *testing.T) uint64 {
	return cpuStat(t, cmp.Or(c.v2, c.v1cpu), "nr_throttled")
}

func cpuStat(t *testing.T, dir, key string) uint64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in %s/cpu.stat", key, dir)
	return 0
}

// apiStats is the Engine API's one-shot stats of a container, as the
// exporter reads them.
func apiStats(t *testing.T, pm *podmantest.Podman, name string) container.StatsResponse {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(pm.DockerHost), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.ContainerStatsOneShot(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestMaxContainersServedWhole: 300 containers at --docker.max-containers
// 300 are served whole (the pipeline's series limit comes from the bound:
// the SDK's default of 2,000 would fold 2,100 state series into
// otel_metric_overflow), and one more is left out, counted and named on
// /health. A fake Engine API: 301 containers on demand.
func TestMaxContainersServedWhole(t *testing.T) {
	fake := fakeengine.Start(t)
	var cs []*fakeengine.Container
	for i := range 301 {
		cs = append(cs, &fakeengine.Container{ID: fmt.Sprintf("c%03d", i), Name: fmt.Sprintf("job-%03d", i), Image: "ffmpeg", State: "exited", Created: int64(i)})
	}
	fake.Set(cs...)
	e := exportertest.Start(t, binary, nil, []string{"DOCKER_HOST=" + fake.DockerHost()}, "--docker.interval", "1s", "--docker.max-containers", "300")
	var text string
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		text = e.ScrapeText(t)
		return strings.Contains(text, "\ndocker_containers_skipped 1\n")
	})
	if strings.Contains(text, "otel_metric_overflow") {
		t.Error("series folded into the SDK's overflow series")
	}
	if n := strings.Count(text, "\ndocker_container_state{"); n != 300*7 {
		t.Errorf("%d state series, want 2100", n)
	}
	if strings.Contains(text, `container="job-300"`) {
		t.Error("the newest container is served past the bound")
	}
	exportertest.WaitFor(t, 30*time.Second, func() bool { // once the first collection is over
		code, body := e.Get(t, "/health")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "1 containers left out")
	})
}
