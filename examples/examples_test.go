// Package examples holds the deployment kit: systemd units, scrape configs,
// VictoriaMetrics flags, a Kubernetes DaemonSet, a compose file, the
// bare-metal start script, a Grafana dashboard and alert rules. This test
// checks each one with the tool its users would run.
package examples

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
)

// contract is the deployment guide's: binary → port and port variable.
var contract = map[string]struct {
	port int
	env  string
}{
	"cpu-exporter":          {9510, "CPU_EXPORTER_PORT"},
	"gpu-exporter":          {9511, "GPU_EXPORTER_PORT"},
	"ffmpeg-exporter":       {9506, "FFMPEG_EXPORTER_PORT"},
	"docker-stats-exporter": {9501, "DOCKER_STATS_PORT"},
}

// buildAll builds every binary into a temporary directory.
func buildAll(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/...")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// TestSystemdUnits: systemd-analyze verify accepts every unit, with
// ExecStart pointed at freshly built binaries; each uses today's resource
// directives and the guide's port.
func TestSystemdUnits(t *testing.T) {
	analyze := peer.Require(t, "systemd-analyze", "apt-get install -y systemd")
	bins := buildAll(t)
	units, _ := filepath.Glob("systemd/*.service")
	if len(units) != len(contract)+1 {
		t.Fatalf("%d units, want one per exporter and one for worker-exporter", len(units))
	}
	dir := t.TempDir()
	for _, u := range units {
		raw, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := string(raw)
		if strings.Contains(text, "bin/worker-exporter") {
			for _, flag := range []string{"--cpu.port 9510", "--gpu.port 9511", "--ffmpeg.port 9506", "--docker.port 9501"} {
				if !strings.Contains(text, flag) {
					t.Errorf("%s: worker-exporter not on the guide's port: %s missing", u, flag)
				}
			}
		} else if m := regexp.MustCompile(`ExecStart=/opt/ffmpeg-rtmp/worker/bin/([a-z-]+) --port (\d+)`).FindStringSubmatch(text); m == nil {
			t.Errorf("%s: no ExecStart of a worker binary", u)
			continue
		} else if c := contract[m[1]]; m[2] != strconv.Itoa(c.port) || !strings.Contains(text, fmt.Sprintf(`Environment="%s=%d"`, c.env, c.port)) {
			t.Errorf("%s: port or %s differs from the guide's %d", u, c.env, c.port)
		}
		for _, want := range []string{"User=ffmpeg-worker", "NoNewPrivileges=true", "MemoryMax=", "CPUQuota="} {
			if !strings.Contains(text, want) {
				t.Errorf("%s lacks %s", u, want)
			}
		}
		if regexp.MustCompile(`(?m)^MemoryLimit=`).MatchString(text) {
			t.Errorf("%s uses the deprecated MemoryLimit=", u)
		}
		text = strings.ReplaceAll(text, "/opt/ffmpeg-rtmp/worker/bin/", bins+"/")
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(u)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Count(mustRead(t, "systemd/ffmpeg-cpu-exporter.service"), "CAP_DAC_READ_SEARCH") < 2 {
		t.Error("cpu-exporter unit does not grant (and bound) CAP_DAC_READ_SEARCH")
	}
	verified, _ := filepath.Glob(filepath.Join(dir, "*.service"))
	out, err := exec.Command(analyze, append([]string{"verify"}, verified...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestScrapeConfigs(t *testing.T) {
	promtool := peer.Require(t, "promtool", "apt-get install -y prometheus")
	cmd := exec.Command(promtool, "check", "config", "prometheus.yml")
	cmd.Dir = "scrape"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check config: %v\n%s", err, out)
	}
	vm := peer.RequireFile(t, "../bin/victoria-metrics", "make victoriametrics")
	if out, err := exec.Command(vm, "-promscrape.config=scrape/victoriametrics.yml", "-promscrape.config.dryRun", "-loggerLevel=ERROR").CombinedOutput(); err != nil {
		t.Errorf("victoria-metrics -promscrape.config.dryRun: %v\n%s", err, out)
	}
	// The guide's jobs, ports and intervals.
	var cfg struct {
		ScrapeConfigs []struct {
			JobName        string `yaml:"job_name"`
			ScrapeInterval string `yaml:"scrape_interval"`
			StaticConfigs  []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	for _, f := range []string{"scrape/victoriametrics.yml", "scrape/prometheus.yml"} {
		if err := yaml.Unmarshal([]byte(mustRead(t, f)), &cfg); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, j := range cfg.ScrapeConfigs {
			got[j.JobName] = j.ScrapeInterval + " " + strings.Join(j.StaticConfigs[0].Targets, ",")
		}
		want := map[string]string{
			"worker-cpu-exporter":    "5s worker-node-1:9510,worker-node-2:9510",
			"worker-gpu-exporter":    "5s worker-node-1:9511,worker-node-2:9511",
			"worker-ffmpeg-exporter": "10s worker-node-1:9506,worker-node-2:9506",
			"worker-docker-stats":    "15s worker-node-1:9501,worker-node-2:9501",
		}
		for job, w := range want {
			if got[job] != w {
				t.Errorf("%s job %s: %q, want the guide's %q", f, job, got[job], w)
			}
		}
	}
}

func TestAlertRules(t *testing.T) {
	promtool := peer.Require(t, "promtool", "apt-get install -y prometheus")
	for _, args := range [][]string{{"check", "rules", "worker-alerts.yml"}, {"test", "rules", "worker-alerts.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "alerts"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	checkNames(t, mustRead(t, "alerts/worker-alerts.yml"))
}

// grafanaRange gives Grafana's range variables a value, so that promtool
// can check a query that uses them (the leaderboard's, over the
// dashboard's range).
var grafanaRange = strings.NewReplacer("$__range_s", "3600", "$__range", "1h")

// TestDashboard: valid JSON, every query valid PromQL (promtool checks it as
// a recording rule), and every metric it names is one we export.
func TestDashboard(t *testing.T) {
	promtool := peer.Require(t, "promtool", "apt-get install -y prometheus")
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal([]byte(mustRead(t, "grafana/worker-dashboard.json")), &dash); err != nil {
		t.Fatal(err)
	}
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			rules = append(rules, rule{fmt.Sprintf("dashboard_query_%d", len(rules)), grafanaRange.Replace(tg.Expr)})
			exprs = append(exprs, tg.Expr)
		}
	}
	if len(dash.Panels) < 7 {
		t.Errorf("%d panels", len(dash.Panels))
	}
	out, _ := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	f := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	os.WriteFile(f, out, 0o644)
	if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Errorf("dashboard queries are not valid PromQL: %v\n%s", err, out)
	}
	joined := strings.Join(exprs, "\n")
	checkNames(t, joined)
	for _, need := range []string{"rapl_power_watts", "nvidia_gpu_power_draw_watts", "rapl_energy_joules_total", "ffmpeg_total_frames",
		"nvidia_gpu_encoder_utilization_percent", "ffmpeg_fps", "ffmpeg_speed", "docker_container_cpu_percent", "docker_container_memory_bytes",
		"ffmpeg_encode_energy_joules_total", "ffmpeg_encode_output_pixels_total", "ffmpeg_encode_frames_total", "ffmpeg_encode_seconds_total"} {
		if !strings.Contains(joined, need) {
			t.Errorf("dashboard does not show %s", need)
		}
	}
}

// checkNames fails on any exporter metric name in text the catalogue lacks.
func checkNames(t *testing.T, text string) {
	t.Helper()
	known := map[string]bool{}
	for _, g := range instruments.Catalogue() {
		for _, m := range g.Metrics {
			known[m.Name] = true
		}
	}
	for _, name := range regexp.MustCompile(`\b(?:rapl|nvidia_gpu|ffmpeg|docker_container|docker_daemon)_[a-z_]+`).FindAllString(text, -1) {
		if !known[name] {
			t.Errorf("%s is not a metric we export", name)
		}
	}
}

// TestKubernetesAndCompose: both run worker-exporter (the image's
// entrypoint) with every source on the guide's port, as flag and as container
// (or published) port. e2e/image runs the compose file against the image and
// checks that the DaemonSet asks for the same.
func TestKubernetesAndCompose(t *testing.T) {
	source := map[string]string{"cpu-exporter": "cpu", "gpu-exporter": "gpu", "ffmpeg-exporter": "ffmpeg", "docker-stats-exporter": "docker"}
	check := func(where string, args []string, ports []string) {
		for bin, c := range contract {
			flag, port := fmt.Sprintf("--%s.port=%d", source[bin], c.port), strconv.Itoa(c.port)
			if !slices.Contains(args, flag) || !slices.Contains(ports, port) {
				t.Errorf("%s: args %v ports %v: want %s and port %s for %s", where, args, ports, flag, port, bin)
			}
		}
	}
	var ds struct {
		Kind string
		Spec struct {
			Template struct {
				Spec struct {
					HostNetwork bool `yaml:"hostNetwork"`
					Containers  []struct {
						Command, Args []string
						Ports         []struct {
							ContainerPort int `yaml:"containerPort"`
						}
					}
				}
			}
		}
	}
	if err := yaml.Unmarshal([]byte(mustRead(t, "kubernetes/daemonset.yaml")), &ds); err != nil {
		t.Fatal(err)
	}
	if ds.Kind != "DaemonSet" || !ds.Spec.Template.Spec.HostNetwork || len(ds.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("kind %s hostNetwork %v: want a DaemonSet of one container on the host network", ds.Kind, ds.Spec.Template.Spec.HostNetwork)
	}
	c := ds.Spec.Template.Spec.Containers[0]
	var ports []string
	for _, p := range c.Ports {
		ports = append(ports, strconv.Itoa(p.ContainerPort))
	}
	if len(c.Command) > 0 {
		t.Errorf("DaemonSet command %v: the image's entrypoint is worker-exporter", c.Command)
	}
	check("DaemonSet", c.Args, ports)

	var compose struct {
		Services map[string]struct {
			Command     []string
			Ports       []string
			NetworkMode string `yaml:"network_mode"`
		}
	}
	if err := yaml.Unmarshal([]byte(mustRead(t, "compose/compose.yaml")), &compose); err != nil {
		t.Fatal(err)
	}
	if len(compose.Services) != 1 {
		t.Errorf("compose: %d services, want one (worker-exporter)", len(compose.Services))
	}
	for name, s := range compose.Services {
		ports = nil
		if s.NetworkMode == "host" { // as the DaemonSet: the flags' ports are the host's
			if len(s.Ports) > 0 {
				t.Errorf("compose %s: ports %v on the host network, where compose ignores them", name, s.Ports)
			}
			for bin := range contract {
				ports = append(ports, strconv.Itoa(contract[bin].port))
			}
		}
		for _, p := range s.Ports {
			host, ctr, _ := strings.Cut(p, ":")
			if host != ctr {
				t.Errorf("compose %s: port %s is not published on the guide's port", name, p)
			}
			ports = append(ports, ctr)
		}
		check("compose "+name, s.Command, ports)
	}
}

// TestStartScript runs the bare-metal script on freshly built binaries:
// each exporter answers on its port (free ones, through the guide's port
// variables, so as not to meet other tests on the guide's own, which are
// the script's defaults); then, with one port taken, the script fails
// naming that exporter and its log, and stops the others.
func TestStartScript(t *testing.T) {
	script := mustRead(t, "bare-metal/start-exporters.sh")
	for _, bin := range []string{"cpu-exporter", "ffmpeg-exporter", "docker-stats-exporter", "gpu-exporter"} {
		c := contract[bin]
		if want := fmt.Sprintf(`start %s "${%s:-%d}"`, bin, c.env, c.port); !strings.Contains(script, want) {
			t.Errorf("start-exporters.sh does not start %s on the guide's port: no %s", bin, want)
		}
	}
	bins := buildAll(t)
	worker := t.TempDir()
	if err := os.Symlink(bins, filepath.Join(worker, "bin")); err != nil {
		t.Fatal(err)
	}
	ports := map[string]string{}
	for _, bin := range []string{"cpu-exporter", "ffmpeg-exporter", "docker-stats-exporter"} {
		ports[bin] = exportertest.FreePort(t)
	}
	run := func(logs string) (string, []int, error) {
		cmd := exec.Command("bash", "bare-metal/start-exporters.sh")
		cmd.Env = append(os.Environ(), "WORKER_DIR="+worker, "LOG_DIR="+logs)
		for bin, port := range ports {
			cmd.Env = append(cmd.Env, contract[bin].env+"="+port)
		}
		out, err := cmd.CombinedOutput()
		files, _ := filepath.Glob(filepath.Join(logs, "*.pid"))
		var pids []int
		for _, p := range files {
			if pid, err := strconv.Atoi(strings.TrimSpace(mustRead(t, p))); err == nil {
				pids = append(pids, pid)
			}
		}
		t.Cleanup(func() {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGTERM)
			}
		})
		return string(out), pids, err
	}
	health := func(bin string) error {
		resp, err := http.Get("http://127.0.0.1:" + ports[bin] + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	allDown := func(bins ...string) func() bool {
		return func() bool {
			for _, b := range bins {
				if health(b) == nil {
					return false
				}
			}
			return true
		}
	}

	out, pids, err := run(t.TempDir())
	if err != nil {
		t.Fatalf("start-exporters.sh: %v\n%s", err, out)
	}
	if len(pids) != 3 {
		t.Fatalf("%d exporters started, want 3 (cpu, ffmpeg, docker)", len(pids))
	}
	for bin := range ports { // the script waited for each
		if err := health(bin); err != nil {
			t.Errorf("after the script, %s: %v", bin, err)
		}
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	exportertest.WaitFor(t, 10*time.Second, allDown("cpu-exporter", "ffmpeg-exporter", "docker-stats-exporter"))

	// The ffmpeg exporter's port taken by another program.
	ln, err := net.Listen("tcp", ":"+ports["ffmpeg-exporter"])
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	logs := t.TempDir()
	out, pids, err = run(logs)
	if err == nil {
		t.Fatalf("start-exporters.sh exited 0 with the ffmpeg exporter's port taken:\n%s", out)
	}
	if want := "ffmpeg-exporter did not start (exited); see " + logs + "/ffmpeg-exporter.log"; !strings.Contains(out, want) || !strings.Contains(out, "address already in use") {
		t.Errorf("start-exporters.sh output:\n%s\nwant %q and the log's reason", out, want)
	}
	if len(pids) > 0 {
		t.Errorf("after a failed start, pid files remain: %v", pids)
	}
	// The exporters that did start are stopped.
	exportertest.WaitFor(t, 10*time.Second, allDown("cpu-exporter", "docker-stats-exporter"))
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHelmChart: helm lint accepts charts/worker-exporters, its default
// rendering is kubernetes/daemonset.yaml, and its values do what they say:
// ports (0 turns a source off), the OTLP endpoint, the ingest token as a
// Secret, tolerations, and the Prometheus operator's monitors.
func TestHelmChart(t *testing.T) {
	helm := peer.RequireFile(t, "../bin/helm", "make helm")
	const chart = "../charts/worker-exporters"
	if out, err := exec.Command(helm, "lint", "--strict", chart).CombinedOutput(); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	render := func(set ...string) map[string]map[string]any {
		t.Helper()
		args := []string{"template", "worker-exporters", chart, "--namespace", "monitoring"}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		out, err := exec.Command(helm, args...).Output()
		if err != nil {
			t.Fatalf("helm template %v: %v", set, err)
		}
		objects := map[string]map[string]any{}
		dec := yaml.NewDecoder(strings.NewReader(string(out)))
		for {
			var o map[string]any
			if err := dec.Decode(&o); err != nil {
				break
			}
			if o != nil {
				objects[o["kind"].(string)] = o
			}
		}
		return objects
	}

	var example map[string]any
	if err := yaml.Unmarshal([]byte(mustRead(t, "kubernetes/daemonset.yaml")), &example); err != nil {
		t.Fatal(err)
	}
	defaults := render()
	if len(defaults) != 1 || !reflect.DeepEqual(defaults["DaemonSet"], example) {
		got, _ := yaml.Marshal(defaults)
		t.Errorf("helm template with the defaults is not kubernetes/daemonset.yaml:\n%s", got)
	}

	o := render("ports.gpu=0", "otlp.endpoint=http://gateway:4317", "ingestToken.value=s3cret",
		"tolerations[0].key=nvidia.com/gpu", "tolerations[0].operator=Exists", "tolerations[0].effect=NoSchedule",
		"serviceMonitor.enabled=true", "podMonitor.enabled=true", "podMonitor.interval=15s")
	text, _ := yaml.Marshal(o)
	for _, want := range []string{
		"--gpu.port=0", "name: OTEL_EXPORTER_OTLP_ENDPOINT", "value: http://gateway:4317",
		"name: FFMPEG_EXPORTER_INGEST_TOKEN", "name: worker-exporters-ingest", "token: czNjcmV0", // base64 of s3cret
		"key: nvidia.com/gpu", "interval: 15s",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("helm template with values lacks %q:\n%s", want, text)
		}
	}
	for _, kind := range []string{"DaemonSet", "Secret", "Service", "ServiceMonitor", "PodMonitor"} {
		if o[kind] == nil {
			t.Errorf("helm template with values renders no %s", kind)
		}
	}
	// Monitors scrape the sources that are on: cpu, ffmpeg, docker.
	for kind, key := range map[string]string{"ServiceMonitor": "endpoints", "PodMonitor": "podMetricsEndpoints"} {
		var ports []string
		for _, e := range o[kind]["spec"].(map[string]any)[key].([]any) {
			ports = append(ports, e.(map[string]any)["port"].(string))
		}
		if !slices.Equal(ports, []string{"cpu", "ffmpeg", "docker"}) {
			t.Errorf("%s scrapes %v, want the ports that are on (cpu ffmpeg docker)", kind, ports)
		}
	}
	if strings.Contains(string(text), "containerPort: 9511") {
		t.Error("gpu off, yet its port is declared")
	}
	// An existing Secret: named, and none made.
	o = render("ingestToken.existingSecret=ops-ingest")
	if text, _ := yaml.Marshal(o); o["Secret"] != nil || !strings.Contains(string(text), "name: ops-ingest") {
		t.Errorf("ingestToken.existingSecret: want the env var from ops-ingest and no Secret made:\n%s", text)
	}
}
