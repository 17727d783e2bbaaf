// Package e2e proves the push path and the scrape path end to end with real
// binaries on loopback: the exporters, the collector built by `make
// collector`, VictoriaMetrics built by `make victoriametrics`, and a real
// ffmpeg encode, podman's Docker Engine API with a running container. RAPL
// is a fixture tree (no RAPL here) and the GPU exporter has no driver here,
// so it contributes its availability series only.
package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/podmantest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
)

var bins string

func TestMain(m *testing.M) {
	exportertest.SkipUnderShort("end-to-end tests of the built binaries")
	dir, cleanup := exportertest.BuildPackages("..", "./cmd/...")
	bins = dir
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// process is a peer started by the test.
type process struct {
	cmd  *exec.Cmd
	logs *exportertest.Buffer
}

func startProcess(t *testing.T, env []string, bin string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), logs: &exportertest.Buffer{}}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), tail(p.logs.String(), 3000))
		}
	})
	return p
}

func (p *process) stop() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
}

// victoriaMetrics starts VictoriaMetrics with the example flags and returns its base URL.
func victoriaMetrics(t *testing.T, extra ...string) string {
	t.Helper()
	vm := peer.RequireFile(t, "../bin/victoria-metrics", "make victoriametrics")
	addr := "127.0.0.1:" + exportertest.FreePort(t)
	args := append(exampleFlags(t), "-httpListenAddr="+addr, "-storageDataPath="+t.TempDir(),
		"-search.latencyOffset=1s", "-search.disableCache", "-loggerLevel=WARN")
	startProcess(t, nil, vm, append(args, extra...)...)
	waitHTTP(t, "http://"+addr+"/health")
	return "http://" + addr
}

// exampleFlags reads examples/victoriametrics/flags: what users are told to run.
func exampleFlags(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../examples/victoriametrics/flags")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var flags []string
	for s := bufio.NewScanner(f); s.Scan(); {
		if line := strings.TrimSpace(s.Text()); line != "" && !strings.HasPrefix(line, "#") {
			flags = append(flags, line)
		}
	}
	return flags
}

// series is one series VictoriaMetrics returned.
type series struct {
	Labels map[string]string
	Value  float64
}

func query(t *testing.T, vm, q string) []series {
	t.Helper()
	resp, err := http.Get(vm + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	var ss []series
	for _, r := range out.Data.Result {
		var v float64
		fmt.Sscan(r.Value[1].(string), &v)
		ss = append(ss, series{r.Metric, v})
	}
	return ss
}

// keyLabels are the labels that identify our series, whatever path they took.
var keyLabels = []string{"package", "zone", "gpu", "stream", "container"}

// byKey indexes series by name and key labels.
func byKey(ss []series) map[string]float64 {
	out := map[string]float64{}
	for _, s := range ss {
		k := s.Labels["__name__"] + "{"
		for _, l := range keyLabels {
			if v, ok := s.Labels[l]; ok {
				k += l + "=" + v + ","
			}
		}
		out[k+"}"] = s.Value
	}
	return out
}

const ours = `{__name__=~"(rapl|ffmpeg|nvidia_gpu|docker)_.*"}`

// worker is one set of exporters.
type worker struct {
	cpu, ffmpeg, gpu, docker *process
	addrs                    map[string]string // job → HOST:PORT
}

func startWorker(t *testing.T, sysfs string, env []string) *worker {
	t.Helper()
	w := &worker{addrs: map[string]string{}}
	start := func(job, bin string, args ...string) *process {
		addr := "127.0.0.1:" + exportertest.FreePort(t)
		p := startProcess(t, env, filepath.Join(bins, bin), append([]string{"--web.listen-address", addr}, args...)...)
		waitHTTP(t, "http://"+addr+"/health")
		w.addrs[job] = addr
		return p
	}
	w.cpu = start("worker-cpu-exporter", "cpu-exporter", "--path.sysfs", sysfs, "--rapl.interval", "200ms")
	w.ffmpeg = start("worker-ffmpeg-exporter", "ffmpeg-exporter")
	w.gpu = start("worker-gpu-exporter", "gpu-exporter", "--nvml.retry-interval", "1h")
	w.docker = start("worker-docker-stats", "docker-stats-exporter", "--docker.interval", "500ms")
	return w
}

// encode runs a real 3 s ffmpeg encode pushing -progress to addr. It may
// run on any goroutine: it reports its failure instead of failing the test.
func encode(ffmpeg, addr string) error {
	out, err := exec.Command(ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi",
		"-i", "testsrc=size=160x120:rate=25", "-t", "3", "-c:v", "mpeg4", "-f", "null", "-",
		"-progress", "http://"+addr+"/ingest/e2e").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ffmpeg: %v\n%s", err, out)
	}
	return nil
}

// TestThreePaths: exporters → OTLP gRPC → collector → VictoriaMetrics;
// exporters → OTLP HTTP → VictoriaMetrics; VictoriaMetrics scraping the
// exporters with the example scrape config. All three store the same names,
// key labels and values. Then the collector goes down and comes back.
func TestThreePaths(t *testing.T) {
	collectorBin := peer.RequireFile(t, "../bin/otelcol-worker", "make collector")
	sysfs := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	pm := podmantest.Start(t)
	pm.Run(t, "e2e-idler", "sleep 3600", "--network", "none") // no network: no CNI work shared with other tests
	dockerHost := "DOCKER_HOST=" + pm.DockerHost

	vmCollector := victoriaMetrics(t)
	vmDirect := victoriaMetrics(t)

	collectorEnv := []string{
		"OTLP_GRPC_ENDPOINT=127.0.0.1:" + exportertest.FreePort(t),
		"OTLP_HTTP_ENDPOINT=127.0.0.1:" + exportertest.FreePort(t),
		"HEALTH_CHECK_ENDPOINT=127.0.0.1:" + exportertest.FreePort(t),
		"COLLECTOR_TELEMETRY_HOST=127.0.0.1", "COLLECTOR_TELEMETRY_PORT=" + exportertest.FreePort(t),
		"VICTORIAMETRICS_URL=" + vmCollector,
		"COLLECTOR_QUEUE_DIR=" + t.TempDir(),
	}
	startCollector := func() *process {
		p := startProcess(t, collectorEnv, collectorBin, "--config", "../otel-collector/config.yaml")
		waitHTTP(t, "http://"+strings.TrimPrefix(collectorEnv[2], "HEALTH_CHECK_ENDPOINT=")+"/")
		return p
	}
	collector := startCollector()

	// Exports that cannot finish in 1.5 s fail (and are logged); by default
	// the exporter's own retries would ride out an outage this short unseen.
	push := []string{"OTEL_METRIC_EXPORT_INTERVAL=1000", "OTEL_METRIC_EXPORT_TIMEOUT=1500", dockerHost}
	viaCollector := startWorker(t, sysfs, append(push, "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+strings.TrimPrefix(collectorEnv[0], "OTLP_GRPC_ENDPOINT=")))
	direct := startWorker(t, sysfs, append(push, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="+vmDirect+"/opentelemetry/v1/metrics"))

	// The example scrape config, pointed at the first worker, scraping every second.
	scrapeCfg := strings.NewReplacer("scrape_interval: 5s", "scrape_interval: 1s", "scrape_interval: 10s", "scrape_interval: 1s",
		"scrape_interval: 15s", "scrape_interval: 1s").Replace(readFile(t, "../examples/scrape/victoriametrics.yml"))
	for job, port := range map[string]string{"worker-cpu-exporter": "9510", "worker-gpu-exporter": "9511",
		"worker-ffmpeg-exporter": "9506", "worker-docker-stats": "9501"} {
		scrapeCfg = strings.Replace(scrapeCfg, "['worker-node-1:"+port+"', 'worker-node-2:"+port+"']", "['"+viaCollector.addrs[job]+"']", 1)
	}
	cfgFile := filepath.Join(t.TempDir(), "scrape.yml")
	os.WriteFile(cfgFile, []byte(scrapeCfg), 0o644)
	vmScrape := victoriaMetrics(t, "-promscrape.config="+cfgFile)

	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	encoded := make(chan error, 2)
	for _, w := range []*worker{viaCollector, direct} {
		go func() { encoded <- encode(ffmpeg, w.addrs["worker-ffmpeg-exporter"]) }()
	}
	for range 2 {
		if err := <-encoded; err != nil {
			t.Fatal(err)
		}
	}

	// Everything is quiet now: wait until each path holds the final frame count.
	final := `ffmpeg_total_frames{stream="e2e"}`
	for name, vm := range map[string]string{"via collector": vmCollector, "direct": vmDirect, "scraped": vmScrape} {
		deadline := time.Now().Add(30 * time.Second)
		for ss := query(t, vm, final); len(ss) != 1 || ss[0].Value != 75; ss = query(t, vm, final) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s = %v; ffmpeg series there: %v", name, final, ss, query(t, vm, `{__name__=~"ffmpeg.*"}`))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Then until every path holds the settled values: the pushed series are
	// the scraped ones, and the encode's final state has arrived everywhere.
	var scraped, pushed, directly map[string]float64
	settled := func() bool {
		scraped, pushed, directly = byKey(query(t, vmScrape, ours)), byKey(query(t, vmCollector, ours)), byKey(query(t, vmDirect, ours))
		inactive := `ffmpeg_stream_active{stream=e2e,}`
		if len(scraped) < 20 || scraped[inactive] != 0 || pushed[inactive] != 0 || directly[inactive] != 0 {
			return false
		}
		for k := range pushed {
			if _, ok := scraped[k]; !ok && !linkedToProcess(k) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(30 * time.Second)
	for !settled() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if len(scraped) < 20 {
		t.Fatalf("only %d series scraped: %v", len(scraped), keys(scraped))
	}
	// Same names and key labels on every path; the same values through the
	// collector as scraped (the same processes). The direct path runs its
	// own exporters on the same inputs: compare what those inputs fix.
	deterministic := []string{"rapl_energy_joules_total", "rapl_max_energy_range_joules", "rapl_zones_discovered", "rapl_available",
		"ffmpeg_total_frames", "ffmpeg_stream_active", "ffmpeg_dropped_frames", "ffmpeg_out_time_seconds", "nvidia_gpu_nvml_available",
		"docker_container_state", "docker_container_restarts_total", "docker_container_pids", "docker_daemon_up", "docker_container_memory_limit_bytes"}
	// A live container's CPU and memory move between a push and a scrape:
	// those agree within one sample's change.
	tolerance := map[string]float64{"docker_container_cpu_percent": 2, "docker_container_memory_bytes": 1 << 20}
	for k, v := range scraped {
		if strings.HasPrefix(k, "ffmpeg_stream_last_update") || strings.HasPrefix(k, "ffmpeg_ingest_lines_total") ||
			strings.HasPrefix(k, "worker_exporter_") {
			continue // time of arrival and line counts of two different encodes
		}
		if strings.HasPrefix(k, "docker_engine_cpu_percent") || strings.HasPrefix(k, "docker_containers_total_cpu_percent") {
			continue // the engine and every container, busy with other tests meanwhile: live between a push and a scrape
		}
		if linkedToProcess(k) {
			continue
		}
		name := k[:strings.IndexByte(k, '{')]
		if got, ok := pushed[k]; !ok || math.Abs(got-v) > tolerance[name] {
			t.Errorf("%s: scraped %v, via collector %v (%v)", k, v, got, ok)
		}
		got, ok := directly[k]
		if !ok {
			t.Errorf("%s: missing on the direct OTLP path", k)
			continue
		}
		for _, d := range deterministic {
			if strings.HasPrefix(k, d+"{") && math.Abs(got-v) > 1e-9 {
				t.Errorf("%s: scraped %v, pushed directly %v", k, v, got)
			}
		}
	}
	if _, ok := scraped[`docker_container_memory_bytes{container=e2e-idler,}`]; !ok {
		t.Errorf("the podman container's memory was not scraped: %v", keys(scraped))
	}
	for k := range pushed {
		if _, ok := scraped[k]; !ok && !linkedToProcess(k) {
			t.Errorf("%s arrived through the collector but is not scraped", k)
		}
	}
	// A dozen resource attributes did not become labels; the three that tell workers apart did.
	for _, s := range query(t, vmCollector, `rapl_zones_discovered`) {
		for _, l := range []string{"service_name", "service_instance_id", "host_name"} {
			if s.Labels[l] == "" {
				t.Errorf("pushed series lacks %s: %v", l, s.Labels)
			}
		}
		for l := range s.Labels {
			if strings.HasPrefix(l, "telemetry_sdk") || strings.HasPrefix(l, "otel_scope") {
				t.Errorf("pushed series carries %s: %v", l, s.Labels)
			}
		}
	}

	// Faults: the collector goes away for several export intervals.
	energy := `rapl_energy_joules_total{package="0",zone="package"}`
	stopAdvance := advanceEnergy(sysfs)
	defer func() {
		if err := stopAdvance(); err != nil {
			t.Error(err)
		}
	}()
	collector.stop()
	before := query(t, vmCollector, energy)[0].Value
	// Several export intervals (1 s) go by, and fail: the fixture gains 50 J
	// a second, so 200 J more on the exporter's own scrape is about 4 s.
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		code, body := exportertest.Get(t, "http://"+viaCollector.addrs["worker-cpu-exporter"]+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("scrape during the outage: %d", code)
		}
		series, err := otlptest.ParseProm(body)
		return err == nil && series[energy] > before+200
	})
	collector = startCollector()
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		ss := query(t, vmCollector, energy)
		return len(ss) == 1 && ss[0].Value > before+20
	})
	for _, w := range []*worker{viaCollector} {
		logs := w.cpu.logs.String()
		if n := strings.Count(logs, "OTLP export failing"); n != 1 {
			t.Errorf("outage logged %d times over several failed exports, want once:\n%s", n, tail(logs, 2000))
		}
		exportertest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(w.cpu.logs.String(), "OTLP export recovered") })
	}
	if r := query(t, vmCollector, `resets(`+energy+`[5m])`); len(r) != 1 || r[0].Value != 0 {
		t.Errorf("the energy counter reset across the outage: %v", r)
	}
	_ = collector
}

// linkedToProcess: a series of energy per encode, served while the stream's
// ffmpeg process lives. When the encode exits it goes: the scrape path marks
// it stale at once, while OTLP carries no staleness, so VictoriaMetrics
// answers the last push for its lookback window. The paths differ there by
// design, not by a fault.
func linkedToProcess(key string) bool {
	for _, m := range instruments.Energy {
		if strings.HasPrefix(key, m.Name+"{") {
			return true
		}
	}
	return false
}

// advanceEnergy raises package 0's counter by 10 J every 200 ms until the
// returned stop is called; stop reports a write that failed.
func advanceEnergy(sysfs string) (stop func() error) {
	done, failed := make(chan struct{}), make(chan error, 1)
	go func() {
		defer close(failed)
		uj := uint64(raplfixture.TwoSockets[0].EnergyUJ)
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
				uj += 10_000_000
				if err := raplfixture.WriteEnergy(sysfs, "intel-rapl:0", uj); err != nil {
					failed <- err
					return
				}
			}
		}
	}()
	return func() error { close(done); return <-failed }
}

func keys(m map[string]float64) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
