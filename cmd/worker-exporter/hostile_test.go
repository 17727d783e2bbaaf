package main

// worker-exporter against a hostile client, as issue 15 found it: a second
// process holding connections open under a 1,024-descriptor limit, with
// and without TLS and basic auth; and real ffmpeg posting progress to a
// worker behind TLS and basic auth, then SIGTERM (the context's end) with
// the encode still running.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
)

// scrapeTimeout is how long Prometheus waits for a scrape by default
// (scrape_timeout): what a scraper under attack is promised, on a loaded
// machine too. What a scrape took is logged, never asserted.
const scrapeTimeout = 10 * time.Second

// hostilePlanEnv, when set, makes the test binary the hostile client
// instead of running the tests (see hostileClient).
const hostilePlanEnv = "WORKER_EXPORTER_HOSTILE_PLAN"

func TestMain(m *testing.M) {
	if plan := os.Getenv(hostilePlanEnv); plan != "" {
		os.Exit(hostileClient(plan, os.Stdout))
	}
	exportertest.SkipUnderShort("tests of worker-exporter, the whole runner")
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binDir holds the worker-exporter binary once a test that signals the
// process (which the in-process run cannot take) has built it.
var (
	binOnce sync.Once
	binDir  string
)

// binary is the built worker-exporter, for tests that need a process.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() { binDir, _ = exportertest.BuildPackages(".", ".") })
	return filepath.Join(binDir, "worker-exporter")
}

// process is a worker-exporter binary running on its cpu and ffmpeg ports.
type process struct {
	cmd    *exec.Cmd
	logs   *exportertest.Buffer
	ports  map[string]string
	exited chan struct{} // closed once it has exited; then err holds why
	err    error
}

// startProcess runs the binary on the cpu (RAPL fixture) and ffmpeg
// ports with env and args, and waits until both answer.
func startProcess(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	return startLimited(t, 0, env, args...)
}

// startLimited is startProcess with a descriptor limit, soft and hard, of
// nofile (as LimitNOFILE=nofile in a unit sets both); 0: this process's.
func startLimited(t *testing.T, nofile int, env []string, args ...string) *process {
	t.Helper()
	var prefix []string
	if nofile > 0 {
		prlimit := peer.Require(t, "prlimit", "apt-get install -y util-linux")
		prefix = []string{prlimit, fmt.Sprintf("--nofile=%d:%d", nofile, nofile), "--"} // it execs the binary: same process
	}
	return startWith(t, prefix, env, args...)
}

// startWith is startProcess run through prefix, a command that execs the
// rest of its arguments (the same process).
func startWith(t *testing.T, prefix, env []string, args ...string) *process {
	t.Helper()
	sysfs := raplfixture.Build(t, t.TempDir(), raplfixture.OneSocket)
	p := &process{logs: &exportertest.Buffer{}, ports: map[string]string{"cpu": exportertest.FreePort(t), "ffmpeg": exportertest.FreePort(t)}, exited: make(chan struct{})}
	args = append([]string{"--web.listen-host", "127.0.0.1", "--path.sysfs", sysfs, "--gpu.port", "0", "--docker.port", "0",
		"--cpu.port", p.ports["cpu"], "--ffmpeg.port", p.ports["ffmpeg"]}, args...)
	argv := slices.Concat(prefix, []string{binary(t)}, args)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	for _, kv := range os.Environ() {
		// The tests set what they need: no push, and the memory limit the
		// binary reads from its cgroup.
		if !strings.HasPrefix(kv, "OTEL_") && !strings.HasPrefix(kv, "GOMEMLIMIT=") && !strings.HasPrefix(kv, "AUTOMEMLIMIT=") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("worker-exporter log:\n%s", p.logs.String())
		}
	})
	for _, port := range p.ports {
		exportertest.WaitFor(t, 20*time.Second, func() bool {
			resp, err := http.Get("http://127.0.0.1:" + port + "/health")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil
		})
	}
	return p
}

// signal sends sig and, for SIGTERM, returns how long the process took to
// exit (failing the test past within).
func (p *process) stop(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("still running %v after SIGTERM", within)
	}
	return time.Since(start)
}

// TestReloadSignals: SIGHUP and SIGUSR1, which a process manager or an
// operator sends a daemon, neither kill worker-exporter (Go's default for
// them) nor stop it serving: SIGHUP re-reads the web configuration, and
// says whether it loads; SIGUSR1 is logged and ignored. SIGTERM then stops
// it cleanly.
func TestReloadSignals(t *testing.T) {
	p := startProcess(t, nil)
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGHUP} {
		if err := p.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		exportertest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(p.logs.String(), "signal="+unix.SignalName(sig)) })
		select {
		case <-p.exited:
			t.Fatalf("%v killed the process: %v", sig, p.err)
		default:
		}
		for _, port := range p.ports {
			if code, _ := exportertest.Get(t, "http://127.0.0.1:"+port+"/metrics"); code != http.StatusOK {
				t.Fatalf("after %v: /metrics %d", sig, code)
			}
		}
	}
	p.stop(t, 10*time.Second)
	if p.err != nil || !strings.Contains(p.logs.String(), "shutting down") {
		t.Errorf("SIGTERM after SIGHUP and SIGUSR1: exit %v; log:\n%s", p.err, p.logs.String())
	}
}

// TestShutdownWithHangingCollector: with an OTLP collector that accepts
// connections and never answers (over gRPC and over HTTP), an export in
// flight and the last one at shutdown cannot hold the process past the
// README's 5 s after SIGTERM.
func TestShutdownWithHangingCollector(t *testing.T) {
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run(strings.ReplaceAll(protocol, "/", "_"), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var accepted atomic.Int64
			var held sync.WaitGroup
			held.Go(func() {
				var conns []net.Conn
				defer func() {
					for _, c := range conns {
						c.Close()
					}
				}()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted.Add(1)
					conns = append(conns, c) // read nothing, answer nothing
				}
			})
			t.Cleanup(func() { ln.Close(); held.Wait() })
			p := startProcess(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + ln.Addr().String(), "OTEL_EXPORTER_OTLP_PROTOCOL=" + protocol,
				"OTEL_METRIC_EXPORT_INTERVAL=200"})
			exportertest.WaitFor(t, 10*time.Second, func() bool { return accepted.Load() > 0 }) // an export is in flight
			took := p.stop(t, 15*time.Second)
			t.Logf("%s: exited %v after SIGTERM with a collector that never answers (%v)", protocol, took.Round(time.Millisecond), p.err)
			if took > 5*time.Second {
				t.Errorf("took %v to stop: past the README's 5 s", took)
			}
			if p.err != nil {
				t.Errorf("exit: %v", p.err)
			}
		})
	}
}

// attack is what the hostile client does to one port: Conns connections,
// each sending Request (over TLS when set) and then holding on.
type attack struct {
	Addr    string
	TLS     bool
	Conns   int
	Request string
}

// hostileClient carries out the attacks in plan (JSON), prints "held N"
// once its connections are open, then "closed N" once the server has
// closed every one of them (or after 15 s, with what it has seen: time for
// the test's 2 s idle timeout, or the 10 s given to a TLS handshake).
func hostileClient(plan string, out io.Writer) int {
	var attacks []attack
	if err := json.Unmarshal([]byte(plan), &attacks); err != nil {
		fmt.Fprintln(out, "bad plan:", err)
		return 2
	}
	var held []net.Conn
	for _, a := range attacks {
		for range a.Conns {
			c, err := net.DialTimeout("tcp", a.Addr, 5*time.Second)
			if err != nil {
				continue
			}
			if a.TLS {
				tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
				tc.SetDeadline(time.Now().Add(5 * time.Second))
				if tc.Handshake() != nil {
					c.Close() // closed by the server to make room: it counts as held and closed
					held = append(held, c)
					continue
				}
				tc.SetDeadline(time.Time{})
				c = tc
			}
			c.Write([]byte(a.Request))
			held = append(held, c)
		}
	}
	fmt.Fprintf(out, "held %d\n", len(held))
	deadline := time.Now().Add(15 * time.Second)
	var closed atomic.Int64
	var wg sync.WaitGroup
	for _, c := range held {
		wg.Go(func() {
			c.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, c)
			if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
				closed.Add(1)
			}
		})
	}
	wg.Wait()
	fmt.Fprintf(out, "closed %d\n", closed.Load())
	return 0
}

// startHostile runs the hostile client as a second process; lines yields
// what it prints.
func startHostile(t *testing.T, attacks []attack) (lines <-chan string) {
	t.Helper()
	plan, _ := json.Marshal(attacks)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), hostilePlanEnv+"="+string(plan))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ch := make(chan string, 4)
	go func() {
		for s := bufio.NewScanner(stdout); s.Scan(); {
			ch <- s.Text()
		}
		close(ch)
	}()
	return ch
}

// expectLine waits for the hostile client's next line, which starts with prefix, and returns its number.
func expectLine(t *testing.T, lines <-chan string, prefix string, within time.Duration) int {
	t.Helper()
	select {
	case line, ok := <-lines:
		var n int
		if !ok || !strings.HasPrefix(line, prefix) {
			t.Fatalf("hostile client said %q (ended: %v), want %q", line, !ok, prefix)
		}
		fmt.Sscanf(strings.TrimPrefix(line, prefix), "%d", &n)
		return n
	case <-time.After(within):
		t.Fatalf("hostile client did not say %q within %v", prefix, within)
	}
	return 0
}

// lowerFDLimit sets this process's descriptor limit to n (as a unit or
// container with LimitNOFILE=n would) until the test ends.
func lowerFDLimit(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lowered := syscall.Rlimit{Cur: n, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestHostileConnections: under a 1,024-descriptor limit, another process
// holding connections open on two ports, more than the limit in all (idle
// after a GET; or, with TLS and basic auth, refused with 401: a GET without
// credentials, a chunked ingest POST with a wrong token) neither keeps a
// scrape out (answered within Prometheus's scrape timeout) nor the RAPL
// source from reading sysfs, the worker holds no more descriptors than its
// defaults allow (--web.max-connections per port, once new connections are
// past the seconds they are spared), and every hostile connection is closed
// within the idle timeout.
func TestHostileConnections(t *testing.T) {
	for _, tc := range []struct {
		secured bool
		perPort int // fewer over TLS, whose handshakes are slow under -race
	}{{false, 1500}, {true, 600}} {
		secured, perPort := tc.secured, tc.perPort
		t.Run(fmt.Sprintf("tls_and_basic_auth=%v", secured), func(t *testing.T) {
			sysfs := raplfixture.Build(t, t.TempDir(), raplfixture.OneSocket)
			args := []string{"--path.sysfs", sysfs, "--rapl.interval", "100ms", "--gpu.port", "0", "--docker.port", "0",
				"--web.idle-timeout", "2s", "--ingest.token", "t0ken"}
			client, scheme := &http.Client{Timeout: scrapeTimeout}, "http"
			if secured {
				cfg, c := webConfig(t)
				args = append(args, "--web.config.file", cfg)
				client, scheme = c, "https"
				client.Timeout = scrapeTimeout
			}
			w := startWorker(t, args...)
			scrape := func(source string) time.Duration {
				t.Helper()
				req, _ := http.NewRequest(http.MethodGet, scheme+"://127.0.0.1:"+w.ports[source]+"/metrics", nil)
				req.SetBasicAuth("alice", "s3cret")
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s scrape under attack: %v", source, err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s scrape under attack: %d", source, resp.StatusCode)
				}
				return time.Since(start)
			}
			exportertest.WaitFor(t, 10*time.Second, func() bool {
				_, err := net.Dial("tcp", "127.0.0.1:"+w.ports["ffmpeg"])
				return err == nil
			})
			scrape("cpu")
			scrape("ffmpeg")
			client.CloseIdleConnections()

			lowerFDLimit(t, 1024)
			base, rss0 := openFDs(t), rss()
			get := "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
			post := "POST /ingest/x?token=wrong HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nframe=42\n\r\n"
			lines := startHostile(t, []attack{
				{Addr: "127.0.0.1:" + w.ports["cpu"], TLS: secured, Conns: perPort, Request: get},
				{Addr: "127.0.0.1:" + w.ports["ffmpeg"], TLS: secured, Conns: perPort, Request: post},
			})
			held := expectLine(t, lines, "held ", 3*time.Minute)
			cpuTook, ffmpegTook := scrape("cpu"), scrape("ffmpeg")
			fds := openFDs(t)
			// New connections are spared a few seconds before the server
			// reads them (they may be a burst of encodes); past that, the
			// next scrapes bring the ports back to their limits.
			exportertest.WaitFor(t, 30*time.Second, func() bool {
				if fds = openFDs(t); fds > base+2*128+16 {
					scrape("cpu")
					scrape("ffmpeg")
					return false
				}
				return true
			})
			t.Logf("%d hostile connections from another process: scrapes answered in %v (cpu) and %v (ffmpeg); descriptors %d (%d before); RSS %+.1f MiB (meaningless under -race: %v)",
				held, cpuTook, ffmpegTook, fds, base, float64(int64(rss())-int64(rss0))/(1<<20), raceEnabled)
			if fds > base+2*128+16 {
				t.Errorf("%d descriptors open under attack (%d before); the default --web.max-connections of 128 per port allows %d", fds, base, base+2*128+16)
			}
			code, body := getWith(t, client, scheme+"://127.0.0.1:"+w.ports["cpu"]+"/health")
			if code != http.StatusOK {
				t.Errorf("cpu health under attack: %d %s", code, body)
			}
			if closed := expectLine(t, lines, "closed ", 2*time.Minute); closed != held {
				t.Errorf("the worker closed %d of the %d hostile connections within 15 s (idle timeout 2 s)", closed, held)
			}
			if strings.Contains(w.logs.String(), "too many open files") {
				t.Errorf("the worker ran out of descriptors:\n%s", grepLines(w.logs.String(), "too many open files", 5))
			}
		})
	}
}

func getWith(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.SetBasicAuth("alice", "s3cret")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestFFmpegBehindBasicAuth: with TLS and basic auth on every port, real
// ffmpeg posts -progress to /ingest with the ingest token in the URL (it
// cannot send basic auth), scrapes still need basic auth, and a wrong token
// gets 401. Then the worker stops (SIGTERM) in the middle of a live
// encode: the ingest connection is closed, the last OTLP export carries the
// stream, and the worker is gone well within the 5 s bound.
func TestFFmpegBehindBasicAuth(t *testing.T) {
	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	recv, endpoint := otlptest.StartGRPC(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000") // only the last export, at shutdown
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "")
	cfg, client := webConfig(t)
	w := startWorker(t, "--web.config.file", cfg, "--ingest.token", "t0ken", "--cpu.port", "0", "--gpu.port", "0", "--docker.port", "0")
	base := "https://127.0.0.1:" + w.ports["ffmpeg"]
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		_, err := net.Dial("tcp", "127.0.0.1:"+w.ports["ffmpeg"])
		return err == nil
	})

	// ffmpeg 5.1's -progress opens its URL without options, so it cannot
	// be given -ca_file; its TLS does not verify the server (tls_verify=0).
	encode := func(ctx context.Context, stream string, input ...string) *exec.Cmd {
		args := append([]string{"-hide_banner", "-loglevel", "error", "-nostats"}, input...)
		args = append(args, "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25", "-f", "null", "-", "-progress", base+"/ingest/"+stream+"?token=t0ken")
		cmd := exec.CommandContext(ctx, ffmpeg, args...)
		cmd.Stderr = os.Stderr
		return cmd
	}
	if err := encode(context.Background(), "job1", "-t", "2").Run(); err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	_, body := getWith(t, client, base+"/metrics")
	if !strings.Contains(body, `ffmpeg_total_frames{stream="job1"} 50`) {
		t.Fatalf("ffmpeg's progress did not arrive:\n%s", grepLines(body, "ffmpeg_total_frames", 5))
	}
	for _, tc := range []struct {
		path  string
		basic bool
		want  int
	}{
		{"/ingest/job2?token=wrong", false, http.StatusUnauthorized},
		{"/ingest/job2", true, http.StatusUnauthorized}, // the token is the ingest's credential
		{"/ingest/job2?token=t0ken", false, http.StatusNoContent},
	} {
		req, _ := http.NewRequest(http.MethodPost, base+tc.path, strings.NewReader("frame=1\n"))
		if tc.basic {
			req.SetBasicAuth("alice", "s3cret")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("POST %s (basic auth %v): %d, want %d", tc.path, tc.basic, resp.StatusCode, tc.want)
		}
	}
	if resp, err := client.Get(base + "/metrics?token=t0ken"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/metrics with the ingest token and no basic auth: %v %v, want 401", resp, err)
	}

	// A live encode (realtime, for a minute), then SIGTERM.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	live := encode(ctx, "live", "-re", "-t", "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		_, body := getWith(t, client, base+"/metrics")
		return strings.Contains(body, `ffmpeg_total_frames{stream="live"}`)
	})
	start := time.Now()
	w.stop()
	var err error
	select {
	case err = <-w.done:
		w.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not stop within 10 s")
	}
	took := time.Since(start)
	t.Logf("worker stopped %v after SIGTERM with a live ffmpeg ingest; %d OTLP exports", took, recv.Exports())
	if err != nil {
		t.Errorf("worker ended with %v", err)
	}
	if took >= 5*time.Second {
		t.Errorf("the worker took %v to stop: the whole shutdown bound", took)
	}
	if recv.Points()[`ffmpeg_total_frames{stream="live"}`] == 0 {
		t.Errorf("the last export did not carry the live stream: %d exports", recv.Exports())
	}
	if strings.Contains(w.logs.String(), "last OTLP export did not complete") {
		t.Errorf("the last export failed:\n%s", grepLines(w.logs.String(), "OTLP", 5))
	}
}

// TestBasicAuthWithoutIngestToken: basic auth on and no --ingest.token
// keeps /ingest behind basic auth (never open) and says loudly that ffmpeg
// cannot post to it.
func TestBasicAuthWithoutIngestToken(t *testing.T) {
	cfg, client := webConfig(t)
	w := startWorker(t, "--web.config.file", cfg, "--cpu.port", "0", "--gpu.port", "0", "--docker.port", "0")
	base := "https://127.0.0.1:" + w.ports["ffmpeg"]
	exportertest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(w.logs.String(), "msg=serving") })
	if !strings.Contains(w.logs.String(), "level=WARN") || !strings.Contains(w.logs.String(), "--ingest.token") {
		t.Errorf("no warning that ffmpeg cannot post:\n%s", w.logs.String())
	}
	for _, basic := range []bool{false, true} {
		req, _ := http.NewRequest(http.MethodPost, base+"/ingest/job", strings.NewReader("frame=1\n"))
		if basic {
			req.SetBasicAuth("alice", "s3cret")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{false: http.StatusUnauthorized, true: http.StatusNoContent}[basic]; resp.StatusCode != want {
			t.Errorf("POST /ingest (basic auth %v): %d, want %d", basic, resp.StatusCode, want)
		}
	}
}

// ingestClient is one chunked ingest POST that sends a line and then holds
// its body open, as a slow or stuck ffmpeg would; outcome says what the
// server did with it.
type ingestClient struct {
	conn    net.Conn
	outcome atomic.Int32 // 0 open, else the status answered, or -1: closed with no answer
	err     atomic.Pointer[error]
}

// openIngests opens n ingest streams to addr at once, named prefix0...
func openIngests(t *testing.T, addr, prefix string, n int) []*ingestClient {
	t.Helper()
	clients := make([]*ingestClient, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := &ingestClient{}
			clients[i] = c
			conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
			if err != nil {
				c.err.Store(&err)
				c.outcome.Store(-1)
				return
			}
			c.conn = conn
			fmt.Fprintf(conn, "POST /ingest/%s%d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nframe=1\n\r\n", prefix, i)
			go func() {
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					c.err.Store(&err)
					c.outcome.Store(-1)
					return
				}
				resp.Body.Close()
				c.outcome.Store(int32(resp.StatusCode))
			}()
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range clients {
			if c.conn != nil {
				c.conn.Close()
			}
		}
	})
	return clients
}

// outcomes counts the clients by outcome.
func outcomes(clients []*ingestClient) map[int32]int {
	m := map[int32]int{}
	for _, c := range clients {
		m[c.outcome.Load()]++
	}
	return m
}

// lost says why clients were closed with no answer, a few of them.
func lost(clients []*ingestClient) []string {
	var why []string
	for _, c := range clients {
		if err := c.err.Load(); err != nil && len(why) < 5 {
			why = append(why, (*err).Error())
		}
	}
	return why
}

// freshScrape scrapes source's /metrics on a new connection (an idle
// keep-alive the budget closed would read as a transport error); code 0:
// no answer, to be asked again.
func freshScrape(p *process, source string) (code int, body string) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:" + p.ports[source] + "/metrics")
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, ""
	}
	return resp.StatusCode, string(raw)
}

// liveStreams counts the streams the ffmpeg port reports active; -1 while
// a burst of connections holds every descriptor and the scrape is refused
// (503): a poll of the state, asked again, not the scrape the test judges.
func liveStreams(t *testing.T, p *process) (live int, refused float64) {
	t.Helper()
	code, body := freshScrape(p, "ffmpeg")
	if code == 0 || code == http.StatusServiceUnavailable {
		return -1, -1
	}
	if code != http.StatusOK {
		t.Fatalf("ffmpeg /metrics: %d", code)
	}
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "ffmpeg_stream_active{") && strings.HasSuffix(strings.TrimSpace(line), " 1") {
			live++
		}
		if v, ok := strings.CutPrefix(line, `ffmpeg_ingest_rejected_requests_total{reason="too_many_streams"} `); ok {
			fmt.Sscan(v, &refused)
		}
	}
	return live, refused
}

// procStatus is the child's descriptors open and resident memory.
func procStatus(p *process) (fds int, rss uint64) {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fmt.Sscan(v, &rss)
		}
	}
	return len(entries), rss << 10
}

// TestSlowIngestBoundedByDescriptors: under a 256-descriptor limit, more
// slow ingest streams than that (each sends a line, then holds its body
// open) take no more than the descriptors left once the ports'
// connections and the sources are provided for: the rest are refused at
// once (429, counted as too_many_streams), scrapes on both ports are
// answered, and nothing runs out of descriptors.
func TestSlowIngestBoundedByDescriptors(t *testing.T) {
	const nofile, streams = 256, 300
	p := startLimited(t, nofile, nil, "--web.max-connections", "32")
	clients := openIngests(t, "127.0.0.1:"+p.ports["ffmpeg"], "slow", streams)
	var live int
	var refused float64
	exportertest.WaitFor(t, time.Minute, func() bool {
		live, refused = liveStreams(t, p)
		got := outcomes(clients)
		return live+streams-got[0] >= streams && int(refused) == got[http.StatusTooManyRequests] // each live, or answered, or closed
	})
	// With the streams held, both ports keep answering scrapes. The burst's
	// refused connections hold their descriptors for refuseLinger while
	// their answers drain, and a scrape in that moment is refused with 503
	// (told why, as any past the budget); the next one is answered.
	for _, source := range []string{"cpu", "ffmpeg"} {
		start := time.Now()
		var code int
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if code, _ = freshScrape(p, source); code != 0 && code != http.StatusServiceUnavailable {
				break
			}
		}
		if code != http.StatusOK {
			t.Errorf("%s scrape with %d streams held: %d", source, live, code)
		}
		t.Logf("%s scrape answered in %v", source, time.Since(start).Round(time.Microsecond))
	}
	fds, rss := procStatus(p)
	got := outcomes(clients)
	t.Logf("%d slow streams under a %d-descriptor limit: %d live, %d refused by ingest with 429 (counted %v), %d refused at accept with 503, %d closed unanswered (outcomes %v); descriptors %d, RSS %.1f MiB",
		streams, nofile, live, got[http.StatusTooManyRequests], refused, got[http.StatusServiceUnavailable], got[-1], got, fds, float64(rss)/(1<<20))
	if int(refused) != got[http.StatusTooManyRequests] || got[-1] != 0 || live+got[http.StatusTooManyRequests]+got[http.StatusServiceUnavailable] != streams {
		t.Errorf("refusals: %d answered 429, %v counted, %d answered 503, %d closed with no answer (%q); %d live of %d", got[http.StatusTooManyRequests], refused, got[http.StatusServiceUnavailable], got[-1], lost(clients), live, streams)
	}
	if live == 0 || live > nofile-64-2*33 {
		t.Errorf("%d streams live under %d descriptors (64 for the sources, 33 per port kept back)", live, nofile)
	}
	if fds >= nofile || strings.Contains(p.logs.String(), "too many open files") {
		t.Errorf("descriptors %d of %d; log:\n%s", fds, nofile, grepLines(p.logs.String(), "too many open files", 5))
	}
}

// TestIngestBurstAfterStart: a burst of new ingest streams right after
// start (before the process is warm) loses none: each is live or, past a
// limit, refused with an answer; none is closed unanswered.
func TestIngestBurstAfterStart(t *testing.T) {
	const streams = 1000
	p := startProcess(t, nil)
	clients := openIngests(t, "127.0.0.1:"+p.ports["ffmpeg"], "burst", streams)
	var live int
	exportertest.WaitFor(t, time.Minute, func() bool {
		live, _ = liveStreams(t, p)
		got := outcomes(clients)
		return live >= 0 && live+got[http.StatusTooManyRequests]+got[-1] >= streams
	})
	got := outcomes(clients)
	t.Logf("%d streams at once right after start: %d live, %d refused with 429, %d closed unanswered", streams, live, got[http.StatusTooManyRequests], got[-1])
	if got[-1] > 0 {
		t.Errorf("%d of %d new streams closed with no answer: %q", got[-1], streams, lost(clients))
	}
}

// TestScrapesUnderRenderFlood: with 1,000 live streams, 120 clients
// asking over and over for what no cache can keep (name[] filters, and
// formats past the kept ones) while four Prometheus scrapers scrape: the
// scrapers are answered within Prometheus's default scrape_timeout (10 s)
// and the process stays within the stats exporter unit's MemoryMax
// (128M): run in a memory cgroup of that limit, whose limit it gives the
// Go runtime, it is never killed for memory. Its log gives the figures:
// scrape latency before and under the flood, the resident peak, the
// cgroup's.
func TestScrapesUnderRenderFlood(t *testing.T) {
	const streams, attackers, scrapers, memoryMax = 1000, 120, 4, 128 << 20
	memcg, group := memoryCgroup(t, memoryMax)
	p := startWith(t, []string{memcg, "run", group, strconv.Itoa(memoryMax), "--"}, nil)
	openIngests(t, "127.0.0.1:"+p.ports["ffmpeg"], "flood", streams)
	exportertest.WaitFor(t, time.Minute, func() bool { live, _ := liveStreams(t, p); return live == streams })
	url := "http://127.0.0.1:" + p.ports["ffmpeg"] + "/metrics"
	prometheusAccept := "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
	scrapeTimes := func(d time.Duration) (took []time.Duration, failed []string) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range scrapers {
			wg.Go(func() {
				client := &http.Client{Timeout: 10 * time.Second}
				for end := time.Now().Add(d); time.Now().Before(end); {
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					req.Header.Set("Accept", prometheusAccept)
					start := time.Now()
					resp, err := client.Do(req)
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err == nil && resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
					mu.Lock()
					took = append(took, time.Since(start))
					if err != nil {
						failed = append(failed, err.Error())
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		slices.Sort(took)
		return took, failed
	}
	quiet, _ := scrapeTimes(2 * time.Second)
	_, rssQuiet := procStatus(p)

	stop := make(chan struct{})
	var flooded atomic.Int64
	var wg sync.WaitGroup
	for i := range attackers {
		wg.Go(func() {
			client := &http.Client{Timeout: time.Minute}
			// Half filter by name[]; half ask for 12 variants no scraper
			// asks for (6 formats, gzipped or not): the first 4 are kept,
			// the other 8 render every time.
			target, accept, encoding := url+"?name[]=ffmpeg_stream_active", "", "gzip"
			if i%2 == 1 {
				target, accept = url, unusualFormats[i/2%len(unusualFormats)]
				encoding = []string{"gzip", "identity"}[i/(2*len(unusualFormats))%2]
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, target, nil)
				req.Header.Set("Accept", accept)
				req.Header.Set("Accept-Encoding", encoding) // set, the body is not gunzipped: nothing here reads it
				if resp, err := client.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					flooded.Add(1)
				}
			}
		})
	}
	var peak atomic.Uint64
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				if _, rss := procStatus(p); rss > peak.Load() {
					peak.Store(rss)
				}
			}
		}
	}()
	exportertest.WaitFor(t, 30*time.Second, func() bool { return flooded.Load() >= attackers }) // the flood is on
	took, failed := scrapeTimes(5 * time.Second)
	close(stop)
	wg.Wait()
	fds, _ := procStatus(p)
	pct := func(d []time.Duration, q float64) time.Duration {
		return d[int(q*float64(len(d)-1))].Round(time.Microsecond)
	}
	t.Logf("%d live streams; Prometheus scrapes alone: median %v, max %v (%d); beside %d clients flooding uncacheable renders (%d answered): median %v, p99 %v, max %v (%d); RSS %.1f MiB before the flood, peak %.1f MiB; descriptors %d",
		streams, pct(quiet, 0.5), pct(quiet, 1), len(quiet), attackers, flooded.Load(), pct(took, 0.5), pct(took, 0.99), pct(took, 1), len(took), float64(rssQuiet)/(1<<20), float64(peak.Load())/(1<<20), fds)
	if len(failed) > 0 {
		t.Errorf("%d of %d Prometheus scrapes failed under the flood: %q", len(failed), len(took), failed[:min(5, len(failed))])
	}
	if want := fmt.Sprintf(`msg="Go memory limit" bytes=%d`, memoryMax*9/10); !strings.Contains(p.logs.String(), want) {
		t.Errorf("the log does not say %s: the runtime was not told the cgroup's limit", want)
	}
	st, err := exec.Command(memcg, "stat", group).Output()
	t.Logf("its memory cgroup: %s", bytes.TrimSpace(st))
	if err != nil || !bytes.Contains(st, []byte(" oom_kills=0")) {
		t.Errorf("killed for memory in a cgroup of the unit's MemoryMax (128M): %s %v", st, err)
	}
}

// unusualFormats are Accept values no scraper sends, each negotiating a
// format of its own.
var unusualFormats = []string{
	"text/plain;version=0.0.4;escaping=dots",
	"text/plain;version=0.0.4;escaping=values",
	"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
	"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text;escaping=values",
	"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=compact-text",
	"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;escaping=dots",
}

// memoryCgroup builds scripts/memcg and names a memory cgroup for this
// test, limited to limit bytes once a process runs in it (memcg run) and
// removed at cleanup, after the process is killed.
func memoryCgroup(t *testing.T, limit int) (memcg, group string) {
	t.Helper()
	peer.RequireRoot(t, "making a memory cgroup")
	memcg = filepath.Join(t.TempDir(), "memcg")
	if out, err := exec.Command("go", "build", "-o", memcg, "../../scripts/memcg").CombinedOutput(); err != nil {
		t.Fatalf("go build ./scripts/memcg: %v\n%s", err, out)
	}
	probe := fmt.Sprintf("worker-exporter-probe-%d", os.Getpid())
	out, err := exec.Command(memcg, "run", probe, strconv.Itoa(limit), "--", "true").CombinedOutput()
	exec.Command(memcg, "rm", probe).Run()
	if err != nil {
		peer.Missing(t, fmt.Sprintf("no memory cgroup can be made here: %v: %s", err, bytes.TrimSpace(out)))
	}
	group = fmt.Sprintf("worker-exporter-test-%d", os.Getpid())
	t.Cleanup(func() {
		exportertest.WaitFor(t, 10*time.Second, func() bool { return exec.Command(memcg, "rm", group).Run() == nil })
	})
	return memcg, group
}
