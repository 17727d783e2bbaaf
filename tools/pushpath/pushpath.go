// Package pushpath runs the push path's real programs — VictoriaMetrics
// and OpenTelemetry Collectors built by `make victoriametrics collector` —
// as child processes on loopback, and reads what they say about
// themselves: the collector's internal telemetry, VictoriaMetrics' own
// metrics and queries, and each process's CPU, memory and bytes written
// from /proc. The fleet simulator and its end-to-end tests drive it.
package pushpath

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/procfs"
)

// StartTimeout bounds how long a program may take to answer its health check.
const StartTimeout = 60 * time.Second

// Process is a program started here.
type Process struct {
	bin  string
	args []string
	env  []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *tail
	done chan struct{}
}

func newProcess(bin string, env []string, args ...string) *Process {
	return &Process{bin: bin, args: args, env: env}
}

// start runs the program and waits until healthURL answers 200.
func (p *Process) start(healthURL string) error {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	out := &tail{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	// Killed with us (a test binary past its timeout): no orphaned peers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.out, p.done = cmd, out, done
	p.mu.Unlock()
	if err := waitHealthy(healthURL, done); err != nil {
		p.Stop()
		return fmt.Errorf("%s: %w\n%s", p.bin, err, out.String())
	}
	return nil
}

func waitHealthy(url string, exited <-chan struct{}) error {
	deadline := time.Now().Add(StartTimeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		select {
		case <-exited:
			return errors.New("exited before it was healthy")
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy at %s after %v: %v", url, StartTimeout, err)
		}
	}
}

// Stop ends the program gracefully (SIGTERM: a collector drains its
// queues, VictoriaMetrics flushes), killing it if it is still running
// after 30 s. It is a no-op on a program that is not running.
func (p *Process) Stop() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not stop within 30 s of SIGTERM; killed", p.bin)
	}
}

// PID is the running program's process ID.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Output is the last 64 KiB the program wrote to stdout and stderr.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out == nil {
		return ""
	}
	return p.out.String()
}

// Usage is what /proc says a process has used.
type Usage struct {
	CPUSeconds   float64 // user and system, since it started
	RSSBytes     float64 // resident now
	WrittenBytes float64 // passed to write(2) and the like, sockets included, since it started
}

// Usage reads the running program's usage.
func (p *Process) Usage() (Usage, error) { return UsageOf(p.PID()) }

// UsageOf reads process pid's usage; os.Getpid() for this process.
func UsageOf(pid int) (Usage, error) {
	proc, err := procfs.NewProc(pid)
	if err != nil {
		return Usage{}, err
	}
	stat, err := proc.Stat()
	if err != nil {
		return Usage{}, err
	}
	io, err := proc.IO()
	if err != nil {
		return Usage{}, err
	}
	return Usage{CPUSeconds: stat.CPUTime(), RSSBytes: float64(stat.ResidentMemory()), WrittenBytes: float64(io.WChar)}, nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// freeAddr is a loopback address nothing listens on now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// scrape reads Prometheus text from url, each series' value summed by
// metric name: the totals over every label.
func scrape(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return sumByName(resp.Body)
}

func sumByName(r io.Reader) (map[string]float64, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	sums := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.Counter != nil:
				sums[name] += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sums[name] += m.GetGauge().GetValue()
			case m.Untyped != nil:
				sums[name] += m.GetUntyped().GetValue()
			}
		}
	}
	return sums, nil
}

// readFlags reads a flags file: one flag a line, # comments.
func readFlags(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var flags []string
	for s := bufio.NewScanner(f); s.Scan(); {
		if line := strings.TrimSpace(s.Text()); line != "" && !strings.HasPrefix(line, "#") {
			flags = append(flags, line)
		}
	}
	return flags, nil
}
