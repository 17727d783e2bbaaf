// Package image proves the container image that `make image` builds, and the
// deployment files that run it: examples/compose/compose.yaml is run with
// podman exactly as written (only its host paths swapped for a RAPL fixture
// tree and podman's Docker Engine API socket), every port is scraped, and
// examples/kubernetes/daemonset.yaml, the Helm chart's default rendering and
// the README's container command must ask for the same image, arguments,
// user, capabilities, mounts and ports; the README's command is run as
// written too.
package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
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
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/podmantest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
)

const (
	root      = "../.."
	repo      = "ghcr.io/ffmpeg-rtmp/worker-exporters"
	composeF  = root + "/examples/compose/compose.yaml"
	daemonset = root + "/examples/kubernetes/daemonset.yaml"
	chart     = root + "/charts/worker-exporters"
	readme    = root + "/README.md"
	// The engine socket's path in the compose file and the README's
	// command: a variable, with the Docker default.
	socketVar = "${DOCKER_SOCKET:-/var/run/docker.sock}"
)

// The guide's ports, as worker-exporter serves them.
const (
	cpuPort    = 9510
	gpuPort    = 9511
	ffmpegPort = 9506
	dockerPort = 9501
)

// deployment is what a deployment file asks the container runtime for.
type deployment struct {
	Image           string
	Args            []string
	Env             map[string]string
	User            string // uid:gid
	CapDrop, CapAdd []string
	ReadOnly        bool // read-only root filesystem
	NoNewPrivileges bool
	HostPID         bool
	HostUTS         bool     // the host's name
	Mounts          []string // host:container[:ro], sorted
	Ports           []int    // container ports, reachable on the same host port; sorted
	HostNetwork     bool     // the host's network: the ports are the flags' own
}

// fromCompose reads the compose file's one service. Decoding is strict: a
// key this test does not know how to run fails it, so the file never says
// more than the test proves.
func fromCompose(t *testing.T) deployment {
	t.Helper()
	var f struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			User        string            `yaml:"user"`
			CapDrop     []string          `yaml:"cap_drop"`
			CapAdd      []string          `yaml:"cap_add"`
			ReadOnly    bool              `yaml:"read_only"`
			SecurityOpt []string          `yaml:"security_opt"`
			PID         string            `yaml:"pid"`
			UTS         string            `yaml:"uts"`
			NetworkMode string            `yaml:"network_mode"`
			Ports       []string          `yaml:"ports"`
			Volumes     []string          `yaml:"volumes"`
			Restart     string            `yaml:"restart"` // no bearing on one run
		} `yaml:"services"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, composeF)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v (a key the image test does not run: teach it, or drop the key)", composeF, err)
	}
	if len(f.Services) != 1 {
		t.Fatalf("%s: %d services, want one (worker-exporter)", composeF, len(f.Services))
	}
	var d deployment
	for _, s := range f.Services {
		d = deployment{Image: s.Image, Args: s.Command, Env: s.Environment, User: s.User, CapDrop: s.CapDrop, CapAdd: s.CapAdd,
			ReadOnly: s.ReadOnly, HostPID: s.PID == "host", HostUTS: s.UTS == "host", HostNetwork: s.NetworkMode == "host"}
		for _, v := range s.Volumes {
			d.Mounts = append(d.Mounts, withDefaults(v))
		}
		if s.PID != "" && s.PID != "host" || s.UTS != "" && s.UTS != "host" || s.NetworkMode != "" && s.NetworkMode != "host" {
			t.Fatalf("%s: pid %q uts %q network_mode %q: only host is run by the test", composeF, s.PID, s.UTS, s.NetworkMode)
		}
		if d.HostNetwork && len(s.Ports) > 0 {
			t.Fatalf("%s: ports %v on the host network, where compose ignores them", composeF, s.Ports)
		}
		if d.HostNetwork { // the ports are the ones the flags ask for
			for _, a := range s.Command {
				if _, v, ok := strings.Cut(a, ".port="); ok && strings.HasPrefix(a, "--") {
					port, err := strconv.Atoi(v)
					if err != nil {
						t.Fatalf("%s: %s: not a port", composeF, a)
					}
					d.Ports = append(d.Ports, port)
				}
			}
		}
		for _, o := range s.SecurityOpt {
			if o != "no-new-privileges:true" {
				t.Fatalf("%s: security_opt %q is not run by the test", composeF, o)
			}
			d.NoNewPrivileges = true
		}
		for _, p := range s.Ports {
			host, ctr, ok := strings.Cut(p, ":")
			port, err := strconv.Atoi(ctr)
			if !ok || err != nil || host != ctr {
				t.Fatalf("%s: port %q: want PORT:PORT, the guide's port on the host", composeF, p)
			}
			d.Ports = append(d.Ports, port)
		}
	}
	slices.Sort(d.Ports)
	slices.Sort(d.Mounts)
	return d
}

// The DaemonSet's fields that deployment covers.
type (
	k8sDaemonSet struct {
		Kind string
		Spec struct {
			Template struct {
				Spec k8sPodSpec
			}
		}
	}
	k8sPodSpec struct {
		HostNetwork bool `yaml:"hostNetwork"`
		HostPID     bool `yaml:"hostPID"`
		Containers  []k8sContainer
		Volumes     []k8sVolume
	}
	k8sContainer struct {
		Image   string
		Command []string
		Args    []string
		Env     []struct{ Name, Value string }
		Ports   []struct {
			ContainerPort int `yaml:"containerPort"`
		}
		SecurityContext struct {
			RunAsUser                *int  `yaml:"runAsUser"`
			RunAsGroup               *int  `yaml:"runAsGroup"`
			ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			Capabilities             struct{ Drop, Add []string }
		} `yaml:"securityContext"`
		VolumeMounts []struct {
			Name      string
			MountPath string `yaml:"mountPath"`
			ReadOnly  bool   `yaml:"readOnly"`
		} `yaml:"volumeMounts"`
	}
	k8sVolume struct {
		Name     string
		HostPath struct{ Path string } `yaml:"hostPath"`
	}
)

// withDefaults expands ${NAME:-default} to its default, as compose and sh
// do where NAME is unset.
func withDefaults(s string) string {
	return os.Expand(s, func(v string) string {
		_, def, _ := strings.Cut(v, ":-")
		return def
	})
}

// fromDaemonSet reads the DaemonSet's one container from the file named
// daemonset, or from data where given (the chart's rendering).
func fromDaemonSet(t *testing.T, daemonset string, data ...[]byte) deployment {
	t.Helper()
	var ds k8sDaemonSet
	if len(data) == 0 {
		data = append(data, readFile(t, daemonset))
	}
	if err := yaml.Unmarshal(data[0], &ds); err != nil {
		t.Fatal(err)
	}
	spec := ds.Spec.Template.Spec
	if ds.Kind != "DaemonSet" || len(spec.Containers) != 1 || !spec.HostNetwork {
		t.Fatalf("%s: kind %s, %d containers, hostNetwork %v: want a DaemonSet of one container on the host network", daemonset, ds.Kind, len(spec.Containers), spec.HostNetwork)
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if len(c.Command) > 0 || sc.RunAsUser == nil || sc.RunAsGroup == nil {
		t.Fatalf("%s: command %v runAsUser %v runAsGroup %v: want the image's entrypoint, and a user and group", daemonset, c.Command, sc.RunAsUser, sc.RunAsGroup)
	}
	d := deployment{Image: c.Image, Args: c.Args, Env: map[string]string{}, User: fmt.Sprintf("%d:%d", *sc.RunAsUser, *sc.RunAsGroup),
		CapDrop: sc.Capabilities.Drop, CapAdd: sc.Capabilities.Add, ReadOnly: sc.ReadOnlyRootFilesystem,
		NoNewPrivileges: sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation,
		HostPID:         spec.HostPID, HostUTS: spec.HostNetwork, HostNetwork: spec.HostNetwork}
	for _, e := range c.Env {
		d.Env[e.Name] = e.Value
	}
	for _, p := range c.Ports {
		d.Ports = append(d.Ports, p.ContainerPort)
	}
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v k8sVolume) bool { return v.Name == m.Name })
		if i < 0 || spec.Volumes[i].HostPath.Path == "" {
			t.Fatalf("%s: volume %s is not a hostPath", daemonset, m.Name)
		}
		mount := spec.Volumes[i].HostPath.Path + ":" + m.MountPath
		if m.ReadOnly {
			mount += ":ro"
		}
		d.Mounts = append(d.Mounts, mount)
	}
	slices.Sort(d.Ports)
	slices.Sort(d.Mounts)
	return d
}

// fromREADME reads the README's container command: the podman run of
// worker-exporter in the code block after the container-command marker.
// Like fromCompose, a flag this test does not run fails it.
func fromREADME(t *testing.T) (deployment, string) {
	t.Helper()
	command := readmeCommand(t)
	d := deployment{Env: map[string]string{}}
	words := strings.Fields(strings.ReplaceAll(command, `"`, ""))
	if len(words) < 3 || words[0] != "podman" || words[1] != "run" {
		t.Fatalf("README: %q is not a podman run", command)
	}
	for i := 2; i < len(words); i++ {
		w := words[i]
		if !strings.HasPrefix(w, "-") {
			d.Image, d.Args = w, words[i+1:]
			break
		}
		value := func() string {
			i++
			if i == len(words) {
				t.Fatalf("README: %s without a value", w)
			}
			return words[i]
		}
		switch w {
		case "-d", "--detach":
		case "--read-only":
			d.ReadOnly = true
		case "--name", "--restart": // no bearing on what runs
			value()
		case "--user", "-u":
			d.User = value()
		case "--cap-drop":
			d.CapDrop = append(d.CapDrop, value())
		case "--cap-add":
			d.CapAdd = append(d.CapAdd, value())
		case "--security-opt":
			if v := value(); v != "no-new-privileges:true" {
				t.Fatalf("README: --security-opt %s is not run by the test", v)
			}
			d.NoNewPrivileges = true
		case "--pid", "--uts", "--network":
			if v := value(); v != "host" {
				t.Fatalf("README: %s %s: only host is run by the test", w, v)
			}
			d.HostPID = d.HostPID || w == "--pid"
			d.HostUTS = d.HostUTS || w == "--uts"
			d.HostNetwork = d.HostNetwork || w == "--network"
		case "-v", "--volume":
			d.Mounts = append(d.Mounts, withDefaults(value()))
		case "-e", "--env":
			k, v, _ := strings.Cut(value(), "=")
			d.Env[k] = v
		default:
			t.Fatalf("README: flag %s of the container command is not run by the test: teach it, or drop the flag", w)
		}
	}
	if d.HostNetwork {
		for _, a := range d.Args {
			if _, v, ok := strings.Cut(a, ".port="); ok && strings.HasPrefix(a, "--") {
				port, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("README: %s: not a port", a)
				}
				d.Ports = append(d.Ports, port)
			}
		}
	}
	slices.Sort(d.Ports)
	slices.Sort(d.Mounts)
	return d, command
}

// readmeCommand is the README's container command, continuation lines
// joined: the marked block's podman run of the container named
// worker-exporter.
func readmeCommand(t *testing.T) string {
	t.Helper()
	const marker = "<!-- test: container-command -->"
	text := string(readFile(t, readme))
	_, after, ok := strings.Cut(text, marker+"\n```bash\n")
	if !ok {
		t.Fatalf("%s: no %q line before a bash block", readme, marker)
	}
	block, _, _ := strings.Cut(after, "```")
	joined := strings.ReplaceAll(block, "\\\n", " ")
	for _, line := range strings.Split(joined, "\n") {
		if strings.HasPrefix(line, "podman run ") && strings.Contains(line, "--name worker-exporter ") {
			return strings.Join(strings.Fields(line), " ")
		}
	}
	t.Fatalf("%s: the block after %q has no podman run --name worker-exporter", readme, marker)
	return ""
}

// helmTemplate renders the chart with its defaults, as examples/kubernetes
// is deployed: release worker-exporters in namespace monitoring.
func helmTemplate(t *testing.T) []byte {
	t.Helper()
	helm := peer.RequireFile(t, root+"/bin/helm", "make helm")
	out, err := exec.Command(helm, "template", "worker-exporters", chart, "--namespace", "monitoring").Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return out
}

// TestDeployFilesAgree: the DaemonSet, the Helm chart's default rendering
// and the README's container command ask for what the compose file does,
// which TestImage runs.
func TestDeployFilesAgree(t *testing.T) {
	c := fromCompose(t)
	readmeD, _ := fromREADME(t)
	for name, d := range map[string]deployment{
		"the DaemonSet":                  fromDaemonSet(t, daemonset),
		"the Helm chart's DaemonSet":     fromDaemonSet(t, chart, helmTemplate(t)),
		"the README's container command": readmeD,
	} {
		if !reflect.DeepEqual(c, d) {
			t.Errorf("%s and the compose file differ:\ncompose: %+v\n%s: %+v", name, c, name, d)
		}
	}
	if c.Image != repo+":latest" {
		t.Errorf("image %s, want %s:latest, what `make image` tags", c.Image, repo)
	}
	want := []int{dockerPort, ffmpegPort, cpuPort, gpuPort}
	if !reflect.DeepEqual(c.Ports, want) {
		t.Errorf("ports %v, want the guide's %v", c.Ports, want)
	}
	for _, m := range []string{"/sys:/host/sys:ro", "/proc:/host/proc:ro", "/var/run/docker.sock:/var/run/docker.sock:ro"} {
		if !slices.Contains(c.Mounts, m) {
			t.Errorf("mounts %v lack %s", c.Mounts, m)
		}
	}
	if !slices.Contains(c.Args, "--path.sysfs=/host/sys") || !slices.Contains(c.Args, "--path.procfs=/host/proc") || !c.HostPID || !c.HostNetwork {
		t.Errorf("args %v hostPID %v hostNetwork %v: want /host/sys, /host/proc and the host's PID namespace and network", c.Args, c.HostPID, c.HostNetwork)
	}
	// Energy per encode reads other users' /proc/PID/fd: SYS_PTRACE.
	if !reflect.DeepEqual(c.CapAdd, []string{"SYS_PTRACE"}) || !reflect.DeepEqual(c.CapDrop, []string{"ALL"}) {
		t.Errorf("capabilities: drop %v add %v, want every one dropped but SYS_PTRACE", c.CapDrop, c.CapAdd)
	}
	// The engine's socket is a variable with Docker's default.
	if !strings.Contains(string(readFile(t, composeF)), socketVar+":/var/run/docker.sock:ro") {
		t.Errorf("%s: the socket is not mounted from %s", composeF, socketVar)
	}
	if _, cmd := fromREADME(t); !strings.Contains(cmd, socketVar) {
		t.Errorf("README's container command: the socket is not mounted from %s", socketVar)
	}
}

// TestImage builds the image with `make image` into podman storage of its
// own, checks what it holds, runs the compose service with a RAPL fixture
// for /sys and podman's API for the Docker socket, and scrapes every port.
func TestImage(t *testing.T) {
	d := fromCompose(t)
	pm := podmantest.Start(t)
	mk := peer.Require(t, "make", "apt-get install -y make")
	gcc := peer.Require(t, "gcc", "apt-get install -y gcc")

	// make image, with the binaries in a temporary BIN and podman on the
	// test's storage.
	start := time.Now()
	cmd := exec.Command(mk, "image", "BIN="+t.TempDir(), "PODMAN="+strings.Join(pm.CLI(), " "))
	cmd.Dir, cmd.Env = root, pm.Env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Logf("make image: %v", time.Since(start).Round(time.Second))
	checkImage(t, pm)

	// The host's side: RAPL as the kernel lays it out (energy_uj root-only,
	// as since Linux 5.10), a container for the Docker source to see, and an
	// NVML stand-in for the NVIDIA toolkit to mount.
	sysfs := t.TempDir()
	raplfixture.Build(t, sysfs, raplfixture.TwoSockets)
	must(t, os.Chmod(sysfs, 0o755))
	for _, z := range raplfixture.TwoSockets {
		must(t, os.Chmod(filepath.Join(raplfixture.Dir(sysfs, z.ID), "energy_uj"), 0o400))
	}
	pm.Run(t, "image-test-busybox", "sleep 600")
	nvml := fakeNVML(t, gcc)

	t.Run("compose", func(t *testing.T) {
		hostPath := map[string]string{"/sys": sysfs, "/proc": "/proc", "/var/run/docker.sock": pm.Socket()}
		args := []string{"run", "--detach", "--name", "image-test-compose"}
		if d.User != "" {
			args = append(args, "--user", d.User)
		}
		for _, c := range d.CapDrop {
			args = append(args, "--cap-drop", c)
		}
		for _, c := range d.CapAdd {
			args = append(args, "--cap-add", c)
		}
		if d.ReadOnly {
			args = append(args, "--read-only")
		}
		if d.NoNewPrivileges {
			args = append(args, "--security-opt", "no-new-privileges:true")
		}
		if d.HostPID {
			args = append(args, "--pid", "host")
		}
		if d.HostUTS {
			args = append(args, "--uts", "host")
		}
		if d.HostNetwork {
			// The guide's ports on this host: they must be free.
			for _, p := range d.Ports {
				ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
				if err != nil {
					t.Fatalf("the compose service runs on the host network, and port %d is taken here: %v", p, err)
				}
				ln.Close()
			}
			args = append(args, "--network", "host")
		}
		for _, p := range d.Ports {
			if !d.HostNetwork {
				args = append(args, "--publish", fmt.Sprintf("127.0.0.1::%d", p))
			}
		}
		for _, m := range d.Mounts {
			src, rest, _ := strings.Cut(m, ":")
			host, ok := hostPath[src]
			if !ok {
				t.Fatalf("compose mounts %s, which the test has no stand-in for", src)
			}
			args = append(args, "--volume", host+":"+rest)
		}
		for k, v := range d.Env {
			args = append(args, "--env", k+"="+v)
		}
		id := pm.Podman(t, append(append(args, d.Image), d.Args...)...)
		defer pm.Try("rm", "--force", "--time", "0", id) // its host ports, for the README's run
		c := container{t: t, pm: pm, id: id, hostNetwork: d.HostNetwork}
		defer c.logsOnFailure()

		// The user, capabilities and privileges asked for.
		status := c.status()
		uid, _, _ := strings.Cut(d.User, ":")
		if uid == "" {
			uid = "65534" // the image's
		}
		if !regexp.MustCompile(`(?m)^Uid:\s+` + uid + `\s+` + uid + `\s+` + uid + `\s+` + uid + `$`).MatchString(status) {
			t.Errorf("the compose service's process is not uid %s:\n%s", uid, status)
		}
		if slices.Contains(d.CapDrop, "ALL") && len(d.CapAdd) == 0 && !regexp.MustCompile(`(?m)^CapEff:\s+0+$`).MatchString(status) {
			t.Errorf("the compose service's process has capabilities:\n%s", status)
		}
		if d.NoNewPrivileges && !regexp.MustCompile(`(?m)^NoNewPrivs:\s+1$`).MatchString(status) {
			t.Errorf("the compose service's process may gain privileges:\n%s", status)
		}

		// cpu: the fixture's readings.
		cpu := c.url(cpuPort)
		c.waitSeries(cpu, `rapl_available{}`, 1)
		for _, z := range []struct {
			key string
			j   float64
		}{{`rapl_energy_joules_total{package="0",zone="package"}`, 10}, {`rapl_energy_joules_total{package="1",zone="dram"}`, 3}} {
			if got := c.scrape(cpu)[z.key]; got != z.j {
				t.Errorf("%s = %v, want the fixture's %v", z.key, got, z.j)
			}
		}
		c.wantHealth(cpu, http.StatusOK, `"status":"ok"`)

		// docker: the daemon's containers, through the socket.
		docker := c.url(dockerPort)
		c.waitFor(docker, func(s map[string]float64) bool {
			for k := range s {
				if strings.HasPrefix(k, "docker_container_info{") && strings.Contains(k, `container="image-test-busybox"`) {
					return true
				}
			}
			return false
		}, "docker_container_info of image-test-busybox")
		c.wantHealth(docker, http.StatusOK, `"status":"ok"`)

		// ffmpeg: -progress blocks posted from the host, on one connection
		// kept open as ffmpeg keeps it: the exporter in the container links
		// the stream to this test's process through the host's /proc.
		c.ingest("image-test")

		// gpu: no driver here, so 503 and why, and /metrics still serves.
		gpu := c.url(gpuPort)
		c.wantHealth(gpu, http.StatusServiceUnavailable, "libnvidia-ml.so.1 not found")
		c.scrape(gpu)
	})

	// The README's container command as written, with podman on the test's
	// storage and DOCKER_SOCKET set to its API socket; /sys and /proc are
	// this host's own.
	t.Run("readme", func(t *testing.T) {
		_, command := fromREADME(t)
		bin := t.TempDir()
		var cli []string
		for _, a := range pm.CLI() {
			cli = append(cli, "'"+a+"'")
		}
		must(t, os.WriteFile(filepath.Join(bin, "podman"), []byte("#!/bin/sh\nexec "+strings.Join(cli, " ")+` "$@"`+"\n"), 0o755))
		waitPortsFree(t)
		cmd := exec.Command("bash", "-c", command)
		cmd.Env = append(pm.Env(), "PATH="+bin+":"+os.Getenv("PATH"), "DOCKER_SOCKET="+pm.Socket())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the README's command: %v\n%s\n%s", err, command, out)
		}
		id := strings.TrimSpace(string(out))
		defer pm.Try("rm", "--force", "--time", "0", id)
		c := container{t: t, pm: pm, id: id, hostNetwork: true}
		defer c.logsOnFailure()

		c.runsAsDeployed()
	})

	// Docker Compose v2 runs the compose file as written against podman's
	// Docker Engine API, DOCKER_SOCKET set to that API's socket.
	t.Run("compose-v2", func(t *testing.T) {
		compose := peer.RequireFile(t, root+"/bin/docker-compose", "make compose")
		waitPortsFree(t)
		run := func(args ...string) string {
			cmd := exec.Command(compose, append([]string{"--file", composeF, "--project-name", "image-test"}, args...)...)
			cmd.Env = append(os.Environ(), "DOCKER_HOST="+pm.DockerHost, "DOCKER_SOCKET="+pm.Socket())
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		run("up", "--detach")
		defer run("down", "--timeout", "0")
		id := strings.TrimSpace(run("ps", "--quiet", "worker-exporter"))
		c := container{t: t, pm: pm, id: id, hostNetwork: true}
		defer c.logsOnFailure()
		c.runsAsDeployed()
	})

	// The image's defaults: nobody, who cannot read energy_uj (which is why
	// the deployment files run as uid 0), and the NVML stand-in mounted
	// where the NVIDIA toolkit puts the driver's: dlopen through the image's
	// loader and glibc.
	t.Run("defaults", func(t *testing.T) {
		libdir := "/usr/lib/" + strings.TrimSpace(run(t, gcc, "-dumpmachine"))
		id := pm.Podman(t, "run", "--detach", "--name", "image-test-defaults",
			"--publish", fmt.Sprintf("127.0.0.1::%d", cpuPort), "--publish", fmt.Sprintf("127.0.0.1::%d", gpuPort),
			"--volume", sysfs+":/host/sys:ro", "--volume", nvml+":"+libdir+"/libnvidia-ml.so.1:ro",
			repo+":latest", "--path.sysfs=/host/sys", "--docker.port=0", "--ffmpeg.port=0")
		c := container{t: t, pm: pm, id: id}
		defer c.logsOnFailure()
		if status := c.status(); !regexp.MustCompile(`(?m)^Uid:\s+65534\s+65534\s+65534\s+65534$`).MatchString(status) {
			t.Errorf("the image does not run as nobody by default:\n%s", status)
		}
		c.wantHealth(c.url(cpuPort), http.StatusServiceUnavailable, "permission denied")
		c.wantHealth(c.url(gpuPort), http.StatusServiceUnavailable, "NVML init: "+fakeNVMLError)
	})
}

// checkImage: tags, labels, user, entrypoint, ports, and every binary runs.
func checkImage(t *testing.T, pm *podmantest.Podman) {
	var images []struct {
		ID       string `json:"Id"`
		RepoTags []string
		Size     int64
		Labels   map[string]string
		Config   struct {
			User         string
			Entrypoint   []string
			ExposedPorts map[string]struct{}
		}
	}
	must(t, json.Unmarshal([]byte(pm.Podman(t, "image", "inspect", repo+":latest")), &images))
	img := images[0]
	t.Logf("%s:latest: %.1f MB (%d bytes)", repo, float64(img.Size)/1e6, img.Size)
	if img.Size > 30e6 {
		t.Errorf("image is %d bytes, over 30 MB: more than worker-exporter and glibc", img.Size)
	}
	version := img.Labels["org.opencontainers.image.version"]
	if !slices.Contains(img.RepoTags, repo+":"+version) {
		t.Errorf("tags %v, want :latest and :%s (the version label)", img.RepoTags, version)
	}
	if out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output(); err == nil {
		if want := strings.TrimSpace(string(out)); img.Labels["org.opencontainers.image.revision"] != want {
			t.Errorf("revision label %q, want %s", img.Labels["org.opencontainers.image.revision"], want)
		}
		desc, _ := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output()
		if want := strings.TrimSpace(string(desc)); version != want {
			t.Errorf("version label %q, want git describe's %q", version, want)
		}
	}
	for _, l := range []string{"source", "title", "description"} {
		if img.Labels["org.opencontainers.image."+l] == "" {
			t.Errorf("no org.opencontainers.image.%s label: %v", l, img.Labels)
		}
	}
	if img.Config.User != "65534:65534" || !reflect.DeepEqual(img.Config.Entrypoint, []string{"/bin/worker-exporter"}) {
		t.Errorf("user %q entrypoint %v, want 65534:65534 and /bin/worker-exporter", img.Config.User, img.Config.Entrypoint)
	}
	for _, p := range []int{cpuPort, gpuPort, ffmpegPort, dockerPort} {
		if _, ok := img.Config.ExposedPorts[fmt.Sprintf("%d/tcp", p)]; !ok {
			t.Errorf("port %d not exposed: %v", p, img.Config.ExposedPorts)
		}
	}
	for _, bin := range []string{"worker-exporter", "cpu-exporter", "gpu-exporter", "ffmpeg-exporter", "docker-stats-exporter"} {
		out, _ := pm.Try("run", "--rm", "--entrypoint", "/bin/"+bin, repo+":latest", "--help")
		if !strings.Contains(out, "Usage of "+bin) {
			t.Errorf("/bin/%s --help in the image:\n%s", bin, out)
		}
	}
}

// fakeNVMLError is what the stand-in's nvmlErrorString says.
const fakeNVMLError = "stand-in libnvidia-ml.so.1 loaded"

// fakeNVML builds a libnvidia-ml.so.1 whose nvmlInit fails with a message
// of its own, needing what the driver's needs (libm, libpthread, libdl,
// librt): a gpu source that reports that message loaded it.
func fakeNVML(t *testing.T, gcc string) string {
	dir := t.TempDir()
	src := filepath.Join(dir, "nvml.c")
	must(t, os.WriteFile(src, []byte(`
int nvmlInit_v2(void) { return 9; /* NVML_ERROR_DRIVER_NOT_LOADED */ }
int nvmlInit(void) { return 9; }
int nvmlShutdown(void) { return 0; }
const char *nvmlErrorString(int r) { return "`+fakeNVMLError+`"; }
`), 0o644))
	lib := filepath.Join(dir, "libnvidia-ml.so.1")
	run(t, gcc, "-shared", "-fPIC", "-Wl,-soname,libnvidia-ml.so.1", "-o", lib, src,
		"-Wl,--no-as-needed", "-l:libm.so.6", "-l:libpthread.so.0", "-l:libdl.so.2", "-l:librt.so.1")
	must(t, os.Chmod(lib, 0o755))
	return lib
}

// container is a running container of the image.
type container struct {
	t           *testing.T
	pm          *podmantest.Podman
	id          string
	hostNetwork bool // its ports are this host's
}

// runsAsDeployed checks a container run as the deployment files ask, on
// this host's /sys and /proc: root with SYS_PTRACE alone, every port
// answering on the host, podman's containers seen through the socket, and a
// stream posted from the host linked to this test's process.
func (c container) runsAsDeployed() {
	c.t.Helper()
	// Root with one capability: SYS_PTRACE (bit 19), nothing more.
	if status := c.status(); !regexp.MustCompile(`(?m)^CapEff:\s+0*80000$`).MatchString(status) || !regexp.MustCompile(`(?m)^NoNewPrivs:\s+1$`).MatchString(status) {
		c.t.Errorf("the container: want CapEff SYS_PTRACE alone and no new privileges:\n%s", status)
	}
	// Every port answers on this host; the Docker source sees podman's
	// containers through DOCKER_SOCKET; a stream posted from the host is
	// linked to its process.
	for _, p := range []int{cpuPort, gpuPort} {
		c.scrape(c.url(p))
	}
	docker := c.url(dockerPort)
	c.waitFor(docker, func(s map[string]float64) bool {
		for k := range s {
			if strings.HasPrefix(k, "docker_container_info{") && strings.Contains(k, `container="image-test-busybox"`) {
				return true
			}
		}
		return false
	}, "docker_container_info of image-test-busybox")
	c.ingest("deployed-test")
}

// waitPortsFree waits until the guide's ports are free on this host (an
// earlier run's container gone).
func waitPortsFree(t *testing.T) {
	t.Helper()
	for _, p := range []int{cpuPort, gpuPort, ffmpegPort, dockerPort} {
		exportertest.WaitFor(t, 20*time.Second, func() bool {
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
			if err == nil {
				ln.Close()
			}
			return err == nil
		})
	}
}

// ingest posts -progress blocks from the host for stream, on one connection
// kept open as ffmpeg keeps it; on the host network the exporter in the
// container links the stream to this test's process through the host's
// /proc (energy per encode).
func (c container) ingest(stream string) {
	c.t.Helper()
	ffmpeg := c.url(ffmpegPort)
	progress := "frame=250\nfps=25.00\nbitrate=1000.0kbits/s\ntotal_size=1048576\nout_time_us=10000000\ndup_frames=0\ndrop_frames=0\nspeed=1.00x\nprogress=continue\n"
	body, feed := io.Pipe()
	posted := make(chan error, 1)
	go func() {
		resp, err := http.Post(ffmpeg+"/ingest/"+stream, "text/plain", body)
		if err == nil {
			resp.Body.Close()
		}
		posted <- err
	}()
	_, err := io.WriteString(feed, progress)
	must(c.t, err)
	c.waitSeries(ffmpeg, `ffmpeg_total_frames{stream="`+stream+`"}`, 250)
	if c.hostNetwork {
		pid := fmt.Sprintf(`pid="%d"`, os.Getpid())
		c.waitFor(ffmpeg, func(s map[string]float64) bool {
			for k := range s {
				if strings.HasPrefix(k, "ffmpeg_stream_process_info{") && strings.Contains(k, pid) && strings.Contains(k, `stream="`+stream+`"`) {
					return true
				}
			}
			return false
		}, "ffmpeg_stream_process_info linking "+stream+" to this test's process ("+pid+")")
	}
	_, err = io.WriteString(feed, "progress=end\n")
	must(c.t, err)
	feed.Close()
	must(c.t, <-posted)
}

// status is /proc/PID/status of the container's process, read on the host.
func (c container) status() string {
	c.t.Helper()
	pid := c.pm.Podman(c.t, "inspect", "--format", "{{.State.Pid}}", c.id)
	return string(readFile(c.t, "/proc/"+pid+"/status"))
}

// url is where the host reaches the container's port.
func (c container) url(port int) string {
	c.t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	if !c.hostNetwork {
		addr := c.pm.Podman(c.t, "port", c.id, fmt.Sprintf("%d/tcp", port))
		url = "http://" + strings.TrimSpace(strings.Split(addr, "\n")[0])
	}
	exportertest.WaitFor(c.t, 20*time.Second, func() bool {
		resp, err := http.Get(url + "/metrics")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return url
}

func (c container) scrape(url string) map[string]float64 {
	c.t.Helper()
	code, body := exportertest.Get(c.t, url+"/metrics")
	if code != http.StatusOK {
		c.t.Fatalf("%s/metrics: %d\n%s", url, code, body)
	}
	series, err := otlptest.ParseProm(body)
	if err != nil {
		c.t.Fatalf("%s/metrics: %v", url, err)
	}
	return series
}

func (c container) waitFor(url string, cond func(map[string]float64) bool, what string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond(c.scrape(url)) {
		if time.Now().After(deadline) {
			c.t.Fatalf("%s/metrics: no %s within 30s", url, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c container) waitSeries(url, key string, want float64) {
	c.t.Helper()
	c.waitFor(url, func(s map[string]float64) bool { v, ok := s[key]; return ok && v == want }, fmt.Sprintf("%s = %v", key, want))
}

func (c container) wantHealth(url string, code int, contains string) {
	c.t.Helper()
	var got int
	var body string
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, body = exportertest.Get(c.t, url+"/health")
		if got == code && strings.Contains(body, contains) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got != code || !strings.Contains(body, contains) {
		c.t.Errorf("%s/health: %d %s, want %d and %q", url, got, body, code, contains)
	}
}

func (c container) logsOnFailure() {
	if c.t.Failed() {
		logs, _ := c.pm.Try("logs", c.id)
		c.t.Logf("container log:\n%s", logs)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
