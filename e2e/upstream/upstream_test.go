// Package upstream proves that what users of the upstream project
// (github.com/psantana5/ffmpeg-rtmp) run against its exporters works against
// ours: the PromQL of its analysis script (https://github.com/psantana5/ffmpeg-rtmp/blob/main/shared/scripts/analyze_results.py)
// and of its RAPL alerts (power-monitoring/prometheus-alerts.yml), asked of a
// real Prometheus (Debian's) that scrapes worker-exporter every second. The
// same Prometheus loads our alert rules, so it also proves that the alerts
// for a source that stopped reading fire for a worker without RAPL or a
// Docker daemon, and not for a healthy one.
//
// Real peers: Prometheus, podman's Docker Engine API with one running
// container, the built worker-exporter. RAPL is a fixture tree whose counters
// advance as hardware drawing constant power would (there is no RAPL here).
package upstream

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/podmantest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
)

var workerExporter string

func TestMain(m *testing.M) {
	exportertest.SkipUnderShort("end-to-end tests against a real Prometheus")
	dir, cleanup := exportertest.BuildPackages("../..", "./cmd/worker-exporter")
	workerExporter = filepath.Join(dir, "worker-exporter")
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// The upstream analysis script's queries, as it builds them: energy at the
// scenario's end (instant queries over the scenario's length), power and
// Docker CPU over the scenario (range queries, 5 s step).
const (
	packagePower   = `sum(rapl_power_watts{zone=~"package.*"})`
	dramPower      = `sum(rapl_power_watts{zone=~".*dram.*"})`
	packageEnergy  = `sum(increase(rapl_energy_joules_total{zone=~"package.*"}[%ds]))`
	dramEnergy     = `sum(increase(rapl_energy_joules_total{zone=~".*dram.*"}[%ds]))`
	engineCPU      = `docker_engine_cpu_percent`
	containersCPU  = `docker_containers_total_cpu_percent`
	scriptStep     = "5s"
	scenarioLength = 15 // seconds
)

// The upstream RAPL alerts' expressions (its GPU ones are on dcgm-exporter's
// DCGM_FI_DEV_POWER_USAGE, which we do not serve).
var upstreamAlerts = map[string]string{
	"HighCpuPackagePower":         packagePower + ` > 80`,
	"HighCpuPackagePowerCritical": packagePower + ` > 120`,
}

// The fixture's power per zone. Both packages draw enough for both upstream
// alerts to fire. DRAM draws far more than real DRAM does, so that a package
// sum that took it in (upstream's subzones package_0_dram, ... matched
// zone=~"package.*") could not pass for noise.
var (
	watts = map[string]float64{
		"intel-rapl:0": 100, "intel-rapl:0:0": 60,
		"intel-rapl:1": 90, "intel-rapl:1:0": 50,
	}
	packageWatts = watts["intel-rapl:0"] + watts["intel-rapl:1"]
	dramWatts    = watts["intel-rapl:0:0"] + watts["intel-rapl:1:0"]
)

// TestUpstreamQueriesAndSourceAlerts runs one Prometheus over two workers:
// a healthy one (the RAPL fixture, podman) and a broken one (an empty sysfs,
// a Docker socket nothing listens on).
func TestUpstreamQueriesAndSourceAlerts(t *testing.T) {
	prometheus := peer.Require(t, "prometheus", "apt-get install -y prometheus")

	sysfs := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	raplfixture.NewMeter(t, sysfs, raplfixture.TwoSockets, watts).Start(20 * time.Millisecond)
	pm := podmantest.Start(t)
	pm.Run(t, "upstream-idler", "sleep 3600", "--network", "none")

	healthy := startWorker(t, "DOCKER_HOST="+pm.DockerHost, "--path.sysfs", sysfs)
	broken := startWorker(t, "DOCKER_HOST=unix://"+filepath.Join(t.TempDir(), "no-daemon.sock"), "--path.sysfs", t.TempDir())

	// Our rules with every `for:` cut to 2 s, so that a test of seconds sees
	// them fire; the expressions are the shipped ones.
	rules, err := os.ReadFile("../../examples/alerts/worker-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`(?m)^(\s+for: )\S+`).ReplaceAll(rules, []byte("${1}2s"))
	p := startPrometheus(t, prometheus, rules, map[string][]string{
		"worker-cpu-exporter": {healthy.cpu, broken.cpu},
		"worker-docker-stats": {healthy.docker, broken.docker},
	})

	// The scenario starts once every series the script reads is stored
	// (engine CPU needs two samples of podman's process), and ends
	// scenarioLength seconds later, once a scrape after its end is stored.
	waitUntil(t, 30*time.Second, func() string {
		var missing []string
		for _, q := range []string{`rapl_power_watts`, engineCPU, containersCPU} {
			if len(p.query(t, q, time.Now()).Result) == 0 {
				missing = append(missing, q)
			}
		}
		return strings.Join(missing, ", ")
	})
	start := time.Now().Truncate(time.Second).Add(time.Second) // the script's int(start)
	end := start.Add(scenarioLength * time.Second)
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		r := p.query(t, `timestamp(rapl_zones_discovered{instance="`+healthy.cpu+`"})`, time.Now())
		return len(r.Result) == 1 && r.value(t) > float64(end.Unix())
	})

	t.Run("analysis script", func(t *testing.T) {
		for _, q := range []string{packagePower, dramPower, engineCPU, containersCPU} {
			if values := p.queryRange(t, q, start, end, scriptStep).values(t); len(values) < 2 {
				t.Errorf("%s over the scenario: %d values, want one every %s", q, len(values), scriptStep)
			}
		}
		// The mean power the script reports is the energy over the scenario
		// by its length. The fixture's counters advance on a goroutine that a
		// loaded machine delays, so the power of one window is noisy; the
		// energy over the whole scenario is not.
		for q, want := range map[string]float64{packageEnergy: packageWatts, dramEnergy: dramWatts} {
			q = fmt.Sprintf(q, scenarioLength)
			got := p.query(t, q, end).values(t)
			if len(got) != 1 || math.Abs(got[0]/scenarioLength-want) > 0.25*want {
				t.Errorf("%s at the scenario's end = %v J over %d s, the fixture draws %.0f W", q, got, scenarioLength, want)
			}
		}
	})

	t.Run("package counted once", func(t *testing.T) {
		// upstream's zone=~"package.*" matches our two package zones, nothing else.
		var matched []string
		for _, s := range p.query(t, `rapl_power_watts{zone=~"package.*"}`, end).Result {
			matched = append(matched, s.Metric["package"]+"/"+s.Metric["zone"])
		}
		sort.Strings(matched)
		if strings.Join(matched, " ") != "0/package 1/package" {
			t.Errorf(`zone=~"package.*" matches %v, want the two packages only`, matched)
		}
		for upstreamQ, ours := range map[string]string{
			packagePower: `sum(rapl_power_watts{zone="package"})`,
			fmt.Sprintf(packageEnergy, scenarioLength): fmt.Sprintf(`sum(increase(rapl_energy_joules_total{zone="package"}[%ds]))`, scenarioLength),
		} {
			got, want := p.queryRange(t, upstreamQ, start, end, "1s").values(t), p.queryRange(t, ours, start, end, "1s").values(t)
			if len(got) == 0 || !slices.Equal(got, want) {
				t.Errorf("%s over the scenario = %v, the sum of our package zones (%s) = %v", upstreamQ, got, ours, want)
			}
		}
	})

	t.Run("upstream alerts", func(t *testing.T) {
		// Each fires during the scenario: its mean power is well above both
		// thresholds, so some window's is too.
		for name, expr := range upstreamAlerts {
			if got := p.queryRange(t, expr, start, end, "1s").values(t); len(got) == 0 {
				t.Errorf("%s (%s) never fired while the fixture drew %.0f W of package power", name, expr, packageWatts)
			}
		}
	})

	t.Run("source alerts", func(t *testing.T) {
		// Firing for the broken worker's sources ...
		want := map[string]string{
			"RAPLUnavailable":                       broken.cpu,
			"DockerDaemonDown":                      broken.docker,
			"WorkerExporterCollectionErrors/cpu":    broken.cpu,
			"WorkerExporterCollectionErrors/docker": broken.docker,
		}
		var alerts []alert
		waitUntil(t, 30*time.Second, func() string {
			alerts = p.alerts(t)
			var missing []string
			for key, instance := range want {
				if !slices.ContainsFunc(alerts, func(a alert) bool {
					return a.key() == key && a.Labels["instance"] == instance && a.State == "firing"
				}) {
					missing = append(missing, key+" firing for "+instance)
				}
			}
			if len(missing) > 0 {
				return fmt.Sprintf("%v; alerts now: %v", missing, alerts)
			}
			return ""
		})
		// ... and, in the same evaluations, neither pending nor firing for the
		// healthy one's. (Not its docker collection errors: a podman call
		// that times out on a loaded machine is one, and rightly counted.)
		healthyQuiet := map[string]string{
			"RAPLUnavailable":                    healthy.cpu,
			"DockerDaemonDown":                   healthy.docker,
			"WorkerExporterCollectionErrors/cpu": healthy.cpu,
		}
		for _, a := range alerts {
			if instance, tested := healthyQuiet[a.key()]; tested && a.Labels["instance"] == instance {
				t.Errorf("%s is %s for the healthy worker: %v", a.Labels["alertname"], a.State, a.Labels)
			}
		}
	})
}

// worker is a worker-exporter serving its cpu and docker sources.
type worker struct{ cpu, docker string } // HOST:PORT

func startWorker(t *testing.T, dockerHost string, args ...string) worker {
	t.Helper()
	w := worker{cpu: "127.0.0.1:" + exportertest.FreePort(t), docker: "127.0.0.1:" + exportertest.FreePort(t)}
	args = append([]string{"--web.listen-host", "127.0.0.1", "--gpu.port", "0", "--ffmpeg.port", "0",
		"--cpu.port", strings.TrimPrefix(w.cpu, "127.0.0.1:"), "--docker.port", strings.TrimPrefix(w.docker, "127.0.0.1:"),
		"--docker.interval", "1s"}, args...)
	startProcess(t, []string{dockerHost, "OTEL_SDK_DISABLED=true"}, workerExporter, args...)
	for _, addr := range []string{w.cpu, w.docker} {
		waitHTTP(t, "http://"+addr+"/health")
	}
	return w
}

// prom is a Prometheus started by the test.
type prom struct{ url string }

// startPrometheus runs Prometheus with rules, scraping each job's targets
// and evaluating the rules every second.
func startPrometheus(t *testing.T, bin string, rules []byte, jobs map[string][]string) *prom {
	t.Helper()
	dir := t.TempDir()
	cfg := "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nscrape_configs:\n"
	for job, targets := range jobs {
		cfg += fmt.Sprintf("  - job_name: %s\n    static_configs:\n      - targets: ['%s']\n", job, strings.Join(targets, "', '"))
	}
	for name, content := range map[string][]byte{"prometheus.yml": []byte(cfg), "rules.yml": rules} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	addr := "127.0.0.1:" + exportertest.FreePort(t)
	startProcess(t, nil, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	p := &prom{url: "http://" + addr}
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// result is the data of a query's answer: a vector or a matrix.
type result struct {
	Result []struct {
		Metric map[string]string
		Value  []any   // instant: [time, "value"]
		Values [][]any // range: [[time, "value"], ...]
	}
}

func (p *prom) query(t *testing.T, q string, at time.Time) result {
	t.Helper()
	return p.get(t, "/api/v1/query", url.Values{"query": {q}, "time": {strconv.FormatInt(at.Unix(), 10)}})
}

func (p *prom) queryRange(t *testing.T, q string, start, end time.Time, step string) result {
	t.Helper()
	return p.get(t, "/api/v1/query_range", url.Values{"query": {q}, "step": {step},
		"start": {strconv.FormatInt(start.Unix(), 10)}, "end": {strconv.FormatInt(end.Unix(), 10)}})
}

func (p *prom) get(t *testing.T, path string, params url.Values) result {
	t.Helper()
	var out struct {
		Status, Error string
		Data          result
	}
	p.getJSON(t, path+"?"+params.Encode(), &out)
	if out.Status != "success" {
		t.Fatalf("%s %v: %s %s", path, params, out.Status, out.Error)
	}
	return out.Data
}

func (p *prom) getJSON(t *testing.T, path string, out any) {
	t.Helper()
	resp, err := http.Get(p.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// values returns every sample of every series, failing the test on one
// that is not a finite number.
func (r result) values(t *testing.T) []float64 {
	t.Helper()
	var out []float64
	for _, s := range r.Result {
		samples := s.Values
		if s.Value != nil {
			samples = append(samples, s.Value)
		}
		for _, v := range samples {
			out = append(out, sampleValue(t, s.Metric, v))
		}
	}
	return out
}

func (r result) value(t *testing.T) float64 { t.Helper(); return r.values(t)[0] }

func sampleValue(t *testing.T, metric map[string]string, sample []any) float64 {
	t.Helper()
	s, _ := sample[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		t.Fatalf("%v: sample %v is not a finite number", metric, sample)
	}
	return v
}

// alert is one entry of /api/v1/alerts.
type alert struct {
	Labels map[string]string
	State  string
}

// key names the alert, and the source for one per source.
func (a alert) key() string {
	if s, ok := a.Labels["source"]; ok {
		return a.Labels["alertname"] + "/" + s
	}
	return a.Labels["alertname"]
}

func (p *prom) alerts(t *testing.T) []alert {
	t.Helper()
	var out struct{ Data struct{ Alerts []alert } }
	p.getJSON(t, "/api/v1/alerts", &out)
	return out.Data.Alerts
}

// startProcess runs bin until the test ends, logging its output if the test fails.
func startProcess(t *testing.T, env []string, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	logs := &exportertest.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s %s log:\n%s", filepath.Base(bin), strings.Join(args, " "), logs.String())
		}
	})
}

// waitUntil polls missing until it returns "", failing the test with what
// it last returned after d.
func waitUntil(t *testing.T, d time.Duration, missing func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := missing()
		if m == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still missing: %s", d, m)
		}
		time.Sleep(100 * time.Millisecond)
	}
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
