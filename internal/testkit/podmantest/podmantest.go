// Package podmantest serves a real Docker Engine API for tests: Debian's
// podman (`podman system service`) on a unix socket, with its own storage,
// runc, and a busybox image imported from Debian's busybox-static.
package podmantest

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
)

// Image is the busybox image every Podman has.
const Image = "localhost/busybox:test"

// Podman is a running podman API service.
type Podman struct {
	DockerHost string // unix:///.../podman.sock
	bin, dir   string
	env        []string
}

// Start serves the Docker Engine API from podman until the test ends.
func Start(t testing.TB) *Podman {
	t.Helper()
	if testing.Short() {
		t.Skip("a real podman engine: not under -short (make test runs it)")
	}
	const install = "apt-get install -y podman runc busybox-static"
	bin := peer.Require(t, "podman", install)
	peer.Require(t, "runc", install)
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		busybox = "/bin/busybox"
	}
	if _, err := os.Stat(busybox); err != nil {
		peer.Require(t, "busybox", install)
	}

	// Not t.TempDir: podman's storage can hold mounts a moment after the test.
	dir, err := os.MkdirTemp("", "podmantest")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "containers.conf")
	must(t, os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = [\"nofile=1024:1024\",\"nproc=1024:1024\"]\n[engine]\nruntime = \"runc\"\n"), 0o644))
	p := &Podman{bin: bin, dir: dir, env: append(os.Environ(), "CONTAINERS_CONF="+conf)}
	sock := filepath.Join(dir, "podman.sock")
	p.DockerHost = "unix://" + sock

	// The image: busybox-static and a few applet links.
	rootfs := filepath.Join(dir, "rootfs")
	must(t, os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755))
	data, err := os.ReadFile(busybox)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755))
	for _, applet := range []string{"sh", "sleep", "dd", "cat", "nc", "head"} {
		must(t, os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)))
	}
	tar := filepath.Join(dir, "busybox.tar")
	if out, err := exec.Command("tar", "-C", rootfs, "-cf", tar, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	p.Podman(t, "import", tar, Image)

	service := exec.Command(bin, append(p.globalFlags(), "system", "service", "--time=0", p.DockerHost)...)
	service.Env = p.env
	logs := &strings.Builder{}
	service.Stdout, service.Stderr = logs, logs
	must(t, service.Start())
	t.Cleanup(func() {
		exec.Command(bin, append(p.globalFlags(), "rm", "--force", "--all", "--time", "0")...).Run()
		service.Process.Kill()
		service.Wait()
		exec.Command(bin, append(p.globalFlags(), "system", "reset", "--force")...).Run()
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(20 * time.Second)
	for !p.answers() {
		if time.Now().After(deadline) {
			t.Fatalf("podman API did not come up on %s:\n%s", sock, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p
}

// globalFlags give the service its own storage and its own tmpdir: the
// default (/run/libpod) is shared by every podman on the host, and with it
// the event log and the "rebooted" mark that makes podman refresh (and,
// run concurrently, fail to lock) every container.
func (p *Podman) globalFlags() []string {
	return []string{"--root", filepath.Join(p.dir, "root"), "--runroot", filepath.Join(p.dir, "runroot"), "--tmpdir", filepath.Join(p.dir, "tmp")}
}

func (p *Podman) answers() bool {
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", strings.TrimPrefix(p.DockerHost, "unix://"))
	}}, Timeout: time.Second}
	resp, err := c.Get("http://podman/_ping")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Socket is the path of the API's unix socket: what a container mounts as
// /var/run/docker.sock.
func (p *Podman) Socket() string { return strings.TrimPrefix(p.DockerHost, "unix://") }

// CLI is the podman command line for this service's storage (the binary and
// its global flags), and Env the environment to run it in: for programs
// that call podman themselves, such as `make image PODMAN="..."`.
func (p *Podman) CLI() []string { return append([]string{p.bin}, p.globalFlags()...) }

// Env is the environment CLI runs in (the test's, plus CONTAINERS_CONF).
func (p *Podman) Env() []string { return append([]string(nil), p.env...) }

// Try runs the podman CLI against this service's storage and returns its
// combined output and error, for commands that may fail.
func (p *Podman) Try(args ...string) (string, error) {
	cmd := exec.Command(p.bin, append(p.globalFlags(), args...)...)
	cmd.Env = p.env
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Podman runs the podman CLI against this service's storage.
func (p *Podman) Podman(t testing.TB, args ...string) string {
	t.Helper()
	out, err := p.Try(args...)
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Run starts a detached busybox container named name running sh -c script.
func (p *Podman) Run(t testing.TB, name, script string, flags ...string) {
	t.Helper()
	args := append([]string{"run", "--detach", "--name", name}, flags...)
	p.Podman(t, append(args, Image, "/bin/sh", "-c", script)...)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Gateway is the address on the host that container name's network
// reaches the host by (its bridge's gateway).
func (p *Podman) Gateway(t testing.TB, name string) string {
	t.Helper()
	gw := p.Podman(t, "inspect", "--format", "{{.NetworkSettings.Gateway}}", name)
	if gw == "" {
		t.Fatalf("container %s has no gateway: no bridge network", name)
	}
	return gw
}
