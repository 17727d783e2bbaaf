// Package exportertest runs a built exporter binary as a process on a free
// loopback port, for the end-to-end tests of cmd/*.
package exportertest

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
)

// Build compiles the package in the current directory to a temporary
// binary; call it from TestMain. It returns the binary and a cleanup.
func Build(name string) (string, func()) {
	dir, cleanup := BuildPackages(".", ".")
	return filepath.Join(dir, name), cleanup
}

// BuildPackages compiles pkgs (patterns such as ./cmd/...) of the module
// at root into a temporary folder every user may read (tests also run the
// binaries as nobody), and returns it with a cleanup; call it from TestMain.
// A failed build ends the test binary with the compiler's output.
func BuildPackages(root string, pkgs ...string) (string, func()) {
	dir, err := os.MkdirTemp("", "exporter-bins")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		panic(err)
	}
	cmd := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	cmd.Dir, cmd.Env = root, os.Environ()
	if os.Getenv("CGO_CFLAGS") == "" { // go-nvml's headers warn otherwise
		cmd.Env = append(cmd.Env, "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build %v: %v\n%s", pkgs, err, out)
		os.Exit(1)
	}
	return dir, func() { os.RemoveAll(dir) }
}

// Process is a running exporter.
type Process struct {
	Cmd  *exec.Cmd
	Addr string // HOST:PORT it serves on
	Logs *Buffer
}

// Buffer is a log sink safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// FreePort returns a loopback port nothing listens on.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// Start runs bin on a free port with args, the environment without any
// OTEL_* of the developer's plus env, and waits until /health answers.
func Start(t testing.TB, bin string, stdin io.Reader, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{Addr: "127.0.0.1:" + FreePort(t), Logs: &Buffer{}}
	p.Cmd = exec.Command(bin, append([]string{"--web.listen-address", p.Addr}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			p.Cmd.Env = append(p.Cmd.Env, kv)
		}
	}
	p.Cmd.Env = append(p.Cmd.Env, env...)
	p.Cmd.Stdin = stdin
	p.Cmd.Stdout = p.Logs
	p.Cmd.Stderr = p.Logs
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Cmd.Process.Kill()
		p.Cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), p.Logs.String())
		}
	})
	WaitFor(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + p.Addr + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return p
}

// Get fetches path and returns the status and body.
func (p *Process) Get(t testing.TB, path string) (int, string) {
	t.Helper()
	return Get(t, "http://"+p.Addr+path)
}

// Get fetches url and returns the status and body.
func Get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// ScrapeText returns /metrics as served.
func (p *Process) ScrapeText(t testing.TB) string {
	t.Helper()
	code, body := p.Get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	return body
}

// Scrape returns /metrics as series keyed by otlptest.Key.
func (p *Process) Scrape(t testing.TB) map[string]float64 {
	t.Helper()
	series, err := otlptest.ParseProm(p.ScrapeText(t))
	if err != nil {
		t.Fatal(err)
	}
	return series
}

// WaitFor polls cond until it holds, failing the test after d.
func WaitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Main builds the package under test as binary name into *bin, runs the
// tests, and removes the build: the TestMain of each cmd/*. Under -short it
// runs none (SkipUnderShort).
func Main(m interface{ Run() int }, name string, bin *string) {
	SkipUnderShort("tests of the built " + name)
	path, cleanup := Build(name)
	*bin = path
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// SkipUnderShort ends a test binary of binary-level or end-to-end tests
// before it builds or starts anything when `go test -short` runs it: -short
// is the unit tests' quick feedback, and `make test` runs everything. Call
// it first in TestMain.
func SkipUnderShort(what string) {
	flag.Parse()
	if testing.Short() {
		fmt.Printf("skipped under -short: %s (make test runs them)\n", what)
		os.Exit(0)
	}
}
