package main

// worker-exporter in process: RAPL from a fixture tree (no RAPL here), no
// NVIDIA driver (as here), a fake Docker Engine API, real ingest and a real
// OTLP receiver; TLS and basic auth with a real certificate.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"golang.org/x/crypto/bcrypt"

	"github.com/ffmpeg-rtmp/worker-exporters/cmd/internal/exporters"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/fakeengine"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
)

// worker is a worker-exporter running in this process.
type worker struct {
	ports map[string]string // source → port
	logs  *exportertest.Buffer
	done  chan error
	stop  context.CancelFunc
}

func startWorker(t testing.TB, extra ...string) *worker {
	t.Helper()
	w := &worker{ports: map[string]string{}, logs: &exportertest.Buffer{}, done: make(chan error, 1)}
	args := []string{"--web.listen-host", "127.0.0.1"}
	for _, s := range exporters.All() {
		w.ports[s.Name] = exportertest.FreePort(t)
		args = append(args, "--"+s.Name+".port", w.ports[s.Name])
	}
	args = append(args, extra...) // later flags win, so a test can disable a port
	ctx, cancel := context.WithCancel(context.Background())
	w.stop = cancel
	go func() { w.done <- run(ctx, args, io.Discard, w.logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Error("worker-exporter did not stop within 10 s")
		}
		if t.Failed() {
			t.Logf("worker-exporter log:\n%s", w.logs.String())
		}
	})
	return w
}

func (w *worker) url(source, path string) string {
	return "http://127.0.0.1:" + w.ports[source] + path
}

func (w *worker) waitUp(t testing.TB, sources ...string) {
	t.Helper()
	for _, s := range sources {
		exportertest.WaitFor(t, 10*time.Second, func() bool {
			resp, err := http.Get(w.url(s, "/health"))
			if err == nil {
				resp.Body.Close()
			}
			return err == nil
		})
	}
}

func fakeDocker(t testing.TB) *fakeengine.Engine {
	t.Helper()
	e := fakeengine.Start(t)
	e.Set(&fakeengine.Container{ID: "c1", Name: "encoder", Image: "ffmpeg", State: "running",
		Stats: container.StatsResponse{Read: time.Now(), MemoryStats: container.MemoryStats{Usage: 64 << 20}}})
	return e
}

// TestEveryPortItsOwnSource: each guide port serves its own source (plus
// self-metrics), the start table names every source, and one OTLP
// connection pushes them all under one resource.
func TestEveryPortItsOwnSource(t *testing.T) {
	sysfs := raplfixture.Build(t, t.TempDir(), raplfixture.OneSocket)
	docker := fakeDocker(t)
	recv, endpoint := otlptest.StartGRPC(t)
	t.Setenv("DOCKER_HOST", docker.DockerHost())
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "")
	w := startWorker(t, "--path.sysfs", sysfs, "--docker.interval", "100ms", "--nvml.retry-interval", "1h")
	w.waitUp(t, "cpu", "gpu", "ffmpeg", "docker")

	resp, err := http.Post(w.url("ffmpeg", "/ingest/job1"), "text/plain", strings.NewReader("frame=42\nprogress=end\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	own := map[string]string{"cpu": "rapl_", "gpu": "nvidia_gpu_", "ffmpeg": "ffmpeg_", "docker": "docker_"}
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		_, body := exportertest.Get(t, w.url("docker", "/metrics"))
		return strings.Contains(body, `docker_container_memory_bytes{container="encoder"}`)
	})
	for src, prefix := range own {
		_, body := exportertest.Get(t, w.url(src, "/metrics"))
		series, err := otlptest.ParseProm(body)
		if err != nil {
			t.Fatal(err)
		}
		if len(series) < 2 {
			t.Errorf("%s port serves %d series", src, len(series))
		}
		for k := range series {
			if !strings.HasPrefix(k, prefix) && !strings.HasPrefix(k, "worker_exporter_") {
				t.Errorf("%s port serves %s, another source's metric", src, k)
			}
		}
	}
	for _, s := range []string{"cpu", "gpu", "ffmpeg", "docker"} {
		exportertest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(w.logs.String(), "msg=source name="+s+" ") })
	}
	if !strings.Contains(w.logs.String(), "name=gpu port="+w.ports["gpu"]+" status=error") {
		t.Errorf("start table does not report the missing GPU driver:\n%s", w.logs.String())
	}

	// One push carries every source, under one resource.
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		p := recv.Points()
		return p[`ffmpeg_total_frames{stream="job1"}`] == 42 && p[`rapl_energy_joules_total{package="0",zone="package"}`] == 1 &&
			p[`docker_container_memory_bytes{container="encoder"}`] > 0 && p[`nvidia_gpu_nvml_available{}`] == 0
	})
	host, _ := os.Hostname()
	if res := recv.Resource(); res["service.name"] != "worker-exporter" || res["service.instance.id"] != host {
		t.Errorf("resource %v", res)
	}
}

func TestPortZeroDisables(t *testing.T) {
	w := startWorker(t, "--gpu.port", "0", "--docker.port", "0", "--path.sysfs", t.TempDir())
	w.waitUp(t, "cpu", "ffmpeg")
	for _, s := range []string{"gpu", "docker"} {
		if _, err := net.DialTimeout("tcp", "127.0.0.1:"+w.ports[s], time.Second); err == nil {
			t.Errorf("%s port answers though disabled", s)
		}
	}
	code, body := exportertest.Get(t, w.url("cpu", "/health"))
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no powercap") {
		t.Errorf("cpu health without RAPL: %d %s", code, body)
	}
}

func TestAllDisabled(t *testing.T) {
	args := []string{"--cpu.port", "0", "--gpu.port", "0", "--ffmpeg.port", "0", "--docker.port", "0"}
	if err := run(context.Background(), args, io.Discard, io.Discard); err == nil {
		t.Error("ran with every source disabled")
	}
}

// webConfig writes a web configuration with a fresh self-signed
// certificate and user alice (password s3cret) and returns it with a
// client that trusts the certificate.
func webConfig(t testing.TB) (string, *http.Client) {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "worker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	cfg := filepath.Join(dir, "web.yml")
	os.WriteFile(cfg, []byte("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  alice: "+string(hash)+"\n"), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return cfg, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
}

// checkSecured: right credentials over TLS get through; wrong or none get
// 401; plain HTTP gets no metrics.
func checkSecured(t *testing.T, client *http.Client, hostPort string) {
	t.Helper()
	get := func(user, pass string) int {
		req, _ := http.NewRequest(http.MethodGet, "https://"+hostPort+"/metrics", nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("https %s: %v", hostPort, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("alice", "s3cret"); code != http.StatusOK {
		t.Errorf("%s right credentials: %d", hostPort, code)
	}
	if code := get("alice", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("%s wrong password: %d, want 401", hostPort, code)
	}
	if code := get("", ""); code != http.StatusUnauthorized {
		t.Errorf("%s no credentials: %d, want 401", hostPort, code)
	}
	if resp, err := http.Get("http://" + hostPort + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("%s serves metrics over plain HTTP", hostPort)
		}
	}
}

func TestTLSAndBasicAuth(t *testing.T) {
	cfg, client := webConfig(t)
	w := startWorker(t, "--web.config.file", cfg, "--path.sysfs", t.TempDir(), "--docker.port", "0")
	for _, s := range []string{"cpu", "gpu", "ffmpeg"} {
		hostPort := "127.0.0.1:" + w.ports[s]
		exportertest.WaitFor(t, 10*time.Second, func() bool {
			c, err := net.Dial("tcp", hostPort)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		checkSecured(t, client, hostPort)
	}

	// A single exporter takes the same file.
	port := exportertest.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- exporters.FFmpeg().Run(ctx, []string{"--web.listen-address", "127.0.0.1:" + port, "--web.config.file", cfg}, io.Discard, io.Discard)
	}()
	defer func() { cancel(); <-done }()
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	checkSecured(t, client, "127.0.0.1:"+port)
}

// TestBadWebConfig: a web config that cannot work ends the worker at once
// with an error naming it (a non-zero exit, so systemd restarts it).
func TestBadWebConfig(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "web.yml")
	os.WriteFile(bad, []byte("tls_server_config:\n  cert_file: /nonexistent.pem\n"), 0o600)
	w := startWorker(t, "--web.config.file", bad, "--path.sysfs", t.TempDir(), "--docker.port", "0", "--gpu.port", "0")
	select {
	case err := <-w.done:
		w.done <- err // for the cleanup
		if err == nil || !strings.Contains(err.Error(), "web.config.file") {
			t.Errorf("a bad web config ended the worker with %v, want an error naming it", err)
		}
		if code := exporters.ExitCode("worker-exporter", err, io.Discard); code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
	case <-time.After(5 * time.Second):
		t.Error("a bad web config did not end the worker within 5 s")
	}
}

// TestNoPortCanListen: with every port taken the worker exits non-zero
// naming the cause; with one taken it serves the others and keeps trying
// that one, which comes up once it is free.
func TestNoPortCanListen(t *testing.T) {
	var taken []net.Listener
	args := []string{"--web.listen-host", "127.0.0.1", "--path.sysfs", t.TempDir()}
	for _, s := range exporters.All() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		taken = append(taken, ln)
		args = append(args, "--"+s.Name+".port", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	err := run(context.Background(), args, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("every port taken: %v, want an error naming the cause", err)
	}

	taken[0].Close() // the cpu port frees up; the gpu port stays taken for now
	w := startWorker(t, append(args[2:], "--web.listen-host", "127.0.0.1", "--cpu.port", strconv.Itoa(taken[0].Addr().(*net.TCPAddr).Port),
		"--gpu.port", strconv.Itoa(taken[1].Addr().(*net.TCPAddr).Port), "--ffmpeg.port", "0", "--docker.port", "0")...)
	w.ports["cpu"] = strconv.Itoa(taken[0].Addr().(*net.TCPAddr).Port)
	w.ports["gpu"] = strconv.Itoa(taken[1].Addr().(*net.TCPAddr).Port)
	w.waitUp(t, "cpu")
	exportertest.WaitFor(t, 15*time.Second, func() bool {
		return strings.Contains(w.logs.String(), "name=gpu port="+w.ports["gpu"]+" status=error") && strings.Contains(w.logs.String(), "cannot listen")
	})
	taken[1].Close()
	w.waitUp(t, "gpu")
	for _, ln := range taken[2:] {
		ln.Close()
	}
}

// TestHelpVersionAndUnknownFlag: --help prints the usage and exits 0,
// --version the version, an unknown flag names itself and exits 2.
func TestHelpVersionAndUnknownFlag(t *testing.T) {
	var out, errs strings.Builder
	err := run(context.Background(), []string{"--help"}, &out, &errs)
	if code := exporters.ExitCode("worker-exporter", err, io.Discard); code != 0 || !strings.Contains(out.String(), "-cpu.port") {
		t.Errorf("--help: exit %d, stdout %q", code, out.String())
	}
	out.Reset()
	err = run(context.Background(), []string{"--version"}, &out, &errs)
	if code := exporters.ExitCode("worker-exporter", err, io.Discard); code != 0 || !strings.Contains(out.String(), "worker-exporter, version") || !strings.Contains(out.String(), "go: go1.") {
		t.Errorf("--version: exit %d, stdout %q", code, out.String())
	}
	errs.Reset()
	err = run(context.Background(), []string{"--no-such-flag"}, &out, &errs)
	if code := exporters.ExitCode("worker-exporter", err, io.Discard); code != 2 || !strings.Contains(errs.String(), "no-such-flag") {
		t.Errorf("unknown flag: exit %d, stderr %q", code, errs.String())
	}
}
