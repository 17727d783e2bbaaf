package pipeline

// A hostile client against a port: connections held open, refused
// requests held open, a flood of wrong passwords, and a live ingest stream
// at shutdown. Client and server share this process: server-side
// descriptors are counted as the process's less the client's own.

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
)

// basicAuthConfig writes a web configuration with basic auth (no TLS) for
// alice, password s3cret, hashed at cost; it returns the file and the hash.
func basicAuthConfig(t testing.TB, cost int) (string, []byte) {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), cost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(path, []byte("basic_auth_users:\n  alice: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, hash
}

// serveWeb runs p on a loopback port as w says until the test ends.
func serveWeb(t testing.TB, p *Pipeline, w Web) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln, w) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// drainBody is a streaming endpoint: it reads the body until it ends.
func drainBody(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusNoContent)
}

// openFDs is the number of descriptors this process has open.
func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// rssBytes is this process's resident memory (VmRSS).
func rssBytes() uint64 {
	data, _ := os.ReadFile("/proc/self/status")
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// holdConns opens n connections to addr, sends request on each and keeps
// them open; connections the server refuses or closes at once count too.
func holdConns(t testing.TB, addr string, n int, request string) []net.Conn {
	t.Helper()
	var held []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			continue // refused: the server is shedding
		}
		c.Write([]byte(request)) // an error here means the server already closed it
		held = append(held, c)
	}
	if len(held) < max(1, n/2) { // at least one: callers of n=1 take [0]
		t.Fatalf("opened only %d of %d connections", len(held), n)
	}
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	return held
}

// fatalRecorder is the test, but its Fatalf is recorded and ends only
// the goroutine that calls it.
type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.failed = true
	f.Logf("(recorded, expected) "+format, args...)
	runtime.Goexit()
}

// TestHoldConnsFailsWhenNoneOpen: asked for one connection to an address
// that refuses it, holdConns fails the test rather than returning none
// for the caller to index.
func TestHoldConnsFailsWhenNoneOpen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: every dial is refused
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); holdConns(rec, addr, 1, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") }()
	<-done
	if !rec.failed {
		t.Error("holdConns returned no connection without failing the test")
	}
}

// scrapeTimeout is how long Prometheus waits for a scrape by default
// (scrape_timeout): what a scraper under attack is promised, on a loaded
// machine too. What a scrape took is logged, never asserted.
const scrapeTimeout = 10 * time.Second

// scrapeWithin gets /metrics (as alice when auth is set) and fails the
// test unless it answers 200 within d; it returns how long it took.
func scrapeWithin(t testing.TB, addr string, auth bool, d time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if auth {
		req.SetBasicAuth("alice", "s3cret")
	}
	start := time.Now()
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatalf("scrape under attack: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "test_power_watts") {
		t.Fatalf("scrape under attack: %d %q", resp.StatusCode, body)
	}
	return time.Since(start)
}

// TestConnectionFlood: a client holding as many connections as it can —
// idle after a GET, refused by basic auth, or refused in the middle of a
// chunked POST — neither keeps a scrape out nor holds more descriptors
// than the limit once the next connection comes (new ones are spared for
// readLag), and every one of its connections is closed within the idle
// timeout.
func TestConnectionFlood(t *testing.T) {
	const (
		limit = 256
		n     = 2000
		idle  = 500 * time.Millisecond
	)
	get := "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
	post := "POST /ingest/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nframe=42\n\r\n" // and never the last chunk
	for _, tc := range []struct {
		name    string
		auth    bool
		request string
	}{
		{"idle keep-alives", false, get},
		{"basic auth refused", true, get},
		{"chunked POST refused", true, post},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearOTELEnv(t)
			p := newTestPipeline(t, io.Discard)
			p.HandleStream("/ingest/{stream}", "a streaming endpoint, as ingest is", http.HandlerFunc(drainBody), "")
			w := Web{MaxConnections: limit, IdleTimeout: idle, ReadHeaderTimeout: 10 * time.Second}
			if tc.auth {
				w.ConfigFile, _ = basicAuthConfig(t, bcrypt.MinCost)
			}
			addr := serveWeb(t, p, w)
			scrapeWithin(t, addr, tc.auth, scrapeTimeout) // the first, to verify alice's password before the flood
			base, rss0 := openFDs(t), rssBytes()

			held := holdConns(t, addr, n, tc.request)
			// New connections the server has not read yet are spared for
			// readLag (they may be a burst of encodes); past it, the next
			// accept, this scrape's, comes back to the limit.
			heldAt := time.Now()
			exportertest.WaitFor(t, 10*time.Second, func() bool { return time.Since(heldAt) > readLag })
			took := scrapeWithin(t, addr, tc.auth, scrapeTimeout)
			server := openFDs(t) - base - len(held)
			t.Logf("%d hostile connections held: scrape answered in %v; server descriptors %d (limit %d); RSS %+d kB",
				len(held), took, server, limit, (int64(rssBytes())-int64(rss0))>>10)
			if server > limit+8 {
				t.Errorf("server holds %d descriptors with a limit of %d connections", server, limit)
			}

			// Every hostile connection is answered (or not) and closed by the
			// server once the idle timeout is over.
			if open := stillOpen(held, time.Now().Add(idle+10*time.Second)); open > 0 {
				t.Errorf("%d hostile connections still open 10 s after the idle timeout of %v", open, idle)
			}
		})
	}
}

// stillOpen reads every connection until the server closes it or deadline
// passes, all at once, and counts those the server kept open.
func stillOpen(conns []net.Conn, deadline time.Time) int {
	var open atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, c)
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				open.Add(1)
			}
		})
	}
	wg.Wait()
	return int(open.Load())
}

// TestWrongPasswordFlood: goroutines sending wrong passwords as fast as
// they can, to all four ports of one process (as worker-exporter has),
// neither keep a scraper with the right one out nor keep bcrypt busy: each
// fresh wrong password costs one check, and checks of wrong passwords may
// take a tenth of the time at most, in the process as a whole, not per
// port (asserted with a margin of two, against the time a check takes in
// this process meanwhile, so that a loaded machine slows both sides
// alike). bcrypt cost 6 keeps the test short.
func TestWrongPasswordFlood(t *testing.T) {
	clearOTELEnv(t)
	config, hash := basicAuthConfig(t, 6)
	var addrs []string
	for _, p := range newTestPipelines(t, 4) {
		addrs = append(addrs, serveWeb(t, p, Web{ConfigFile: config, MaxConnections: 256, IdleTimeout: time.Minute, ReadHeaderTimeout: 10 * time.Second}))
	}
	for _, addr := range addrs {
		scrapeWithin(t, addr, true, scrapeTimeout) // the scraper's first scrape, before the flood
	}

	const flooders, flood = 16, 3 * time.Second
	var stop atomic.Bool
	var wrong, refused atomic.Int64
	var wg sync.WaitGroup
	cpu0, start := cpuTime(), time.Now()
	for i := range flooders {
		addr := addrs[i%len(addrs)]
		wg.Go(func() {
			client := &http.Client{Timeout: 5 * time.Second}
			for !stop.Load() {
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
				req.SetBasicAuth("alice", rand.Text()) // never the same twice: no cache can answer it
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusUnauthorized:
					wrong.Add(1)
				case http.StatusTooManyRequests:
					refused.Add(1)
				default:
					t.Errorf("a wrong password got %d", resp.StatusCode)
				}
			}
		})
	}
	var latencies, checks []time.Duration
	for i := 0; time.Since(start) < flood; i++ {
		latencies = append(latencies, scrapeWithin(t, addrs[i%len(addrs)], true, scrapeTimeout))
		t0 := time.Now()
		bcrypt.CompareHashAndPassword(hash, []byte("wrong"))
		checks = append(checks, time.Since(t0))
		time.Sleep(50 * time.Millisecond)
	}
	stop.Store(true)
	wall, cpu := time.Since(start), cpuTime()-cpu0
	wg.Wait()
	slices.Sort(latencies)
	slices.Sort(checks)
	check := checks[len(checks)/2]
	t.Logf("%d good scrapes all answered (median %v, max %v) while %d wrong passwords got 401 and %d got 429 in %v on %d ports; a check takes %v here; process CPU %v (%.0f%% of a core)",
		len(latencies), latencies[len(latencies)/2], latencies[len(latencies)-1], wrong.Load(), refused.Load(), wall.Round(time.Millisecond), len(addrs),
		check, cpu.Round(time.Millisecond), 100*cpu.Seconds()/wall.Seconds())
	if bound := 2 + int64(wall/(5*check)); wrong.Load() > bound {
		t.Errorf("%d wrong passwords checked in %v, %v each: bcrypt was kept busy (at most %d expected)", wrong.Load(), wall.Round(time.Millisecond), check, bound)
	}
}

// cpuTime is the CPU this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestShutdownWithLiveStream: a live chunked POST (ffmpeg -progress for
// the whole encode) neither holds Serve past its bound nor costs the last
// OTLP export.
func TestShutdownWithLiveStream(t *testing.T) {
	clearOTELEnv(t)
	recv, endpoint := otlptest.StartGRPC(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
	p := newTestPipeline(t, io.Discard)
	arrived := make(chan struct{})
	var once sync.Once
	p.HandleStream("/ingest/{stream}", "streaming", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		br := bufio.NewReader(r.Body)
		for {
			if _, err := br.ReadString('\n'); err != nil {
				return
			}
			once.Do(func() { close(arrived) })
		}
	}), "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- p.Serve(ctx, ln, Web{MaxConnections: 16, IdleTimeout: time.Minute, ReadHeaderTimeout: 10 * time.Second})
	}()

	body, stream := io.Pipe()
	defer stream.Close()
	go func() {
		resp, err := http.Post("http://"+ln.Addr().String()+"/ingest/job", "text/plain", body)
		if err == nil {
			resp.Body.Close()
		}
	}()
	fmt.Fprintf(stream, "frame=1\n") // and the encode goes on
	<-arrived

	start := time.Now()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * shutdownTimeout):
		t.Fatal("Serve did not return")
	}
	took := time.Since(start)
	t.Logf("Serve returned %v after cancel, with a live stream open; %d exports", took, recv.Exports())
	if took >= shutdownTimeout {
		t.Errorf("Serve took %v to stop, the whole bound of %v", took, shutdownTimeout)
	}
	if recv.Exports() == 0 || len(recv.Points()) != 2 {
		t.Errorf("the last export did not go out: %d exports, points %v", recv.Exports(), recv.Points())
	}
}

// TestLimitSparesStreams: live streams (one ingest POST per encode) are
// neither counted against the connection limit nor closed to make room,
// while requests stuck in a handler longer than a scraper waits
// (handlerGrace, here none) are, oldest first, when nothing idle is left
// to close.
func TestLimitSparesStreams(t *testing.T) {
	defer func(was time.Duration) { handlerGrace = was }(handlerGrace)
	handlerGrace = 0
	clearOTELEnv(t)
	const limit = 4
	p := newTestPipeline(t, io.Discard)
	lines := make(chan string, 100)
	p.HandleStream("/ingest/{stream}", "streaming", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			lines <- r.PathValue("stream") + " " + line
		}
	}), "")
	p.Handle("/stuck", "a handler that never answers", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	addr := serveWeb(t, p, Web{MaxConnections: limit, IdleTimeout: time.Minute, ReadHeaderTimeout: 10 * time.Second})

	var streams []net.Conn
	for i := range 2 * limit {
		c := holdConns(t, addr, 1, fmt.Sprintf("POST /ingest/s%d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nframe=1\n\r\n", i))[0]
		if got := <-lines; got != fmt.Sprintf("s%d frame=1\n", i) {
			t.Fatalf("stream %d: got %q", i, got)
		}
		streams = append(streams, c)
	}
	stuck := holdConns(t, addr, limit, "GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
	scrapeWithin(t, addr, false, scrapeTimeout)
	holdConns(t, addr, 2*limit, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") // idle keep-alives
	scrapeWithin(t, addr, false, scrapeTimeout)

	for i, c := range streams {
		if _, err := fmt.Fprintf(c, "8\r\nframe=2\n\r\n"); err != nil {
			t.Fatalf("stream %d closed to make room: %v", i, err)
		}
		if got := <-lines; got != fmt.Sprintf("s%d frame=2\n", i) {
			t.Fatalf("stream %d: got %q", i, got)
		}
	}
	if stillOpen(stuck, time.Now().Add(100*time.Millisecond)) == len(stuck) { // the closed ones are closed already
		t.Error("no stuck request was closed to let the scrapes in")
	}
}

// TestStreamTokenUnderBasicAuth: with basic auth on, a streaming endpoint
// with a token takes the token (ffmpeg -progress cannot send basic auth)
// and nothing else; one without a token stays behind basic auth, and the
// log says why ffmpeg cannot use it.
func TestStreamTokenUnderBasicAuth(t *testing.T) {
	clearOTELEnv(t)
	var logs exportertest.Buffer
	p := newTestPipeline(t, &logs)
	p.HandleStream("/ingest/{stream}", "with a token", http.HandlerFunc(drainBody), "t0ken")
	p.HandleStream("/open/{stream}", "without one", http.HandlerFunc(drainBody), "")
	config, _ := basicAuthConfig(t, bcrypt.MinCost)
	addr := serveWeb(t, p, Web{ConfigFile: config, MaxConnections: 16, IdleTimeout: time.Minute, ReadHeaderTimeout: 10 * time.Second})

	post := func(path, bearer string, basic bool) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+path, strings.NewReader("frame=1\n"))
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		if basic {
			req.SetBasicAuth("alice", "s3cret")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path, bearer string
		basic        bool
		want         int
	}{
		{"/ingest/job?token=t0ken", "", false, http.StatusNoContent},
		{"/ingest/job", "t0ken", false, http.StatusNoContent},
		{"/ingest/job?token=wrong", "", false, http.StatusUnauthorized},
		{"/ingest/job", "", false, http.StatusUnauthorized},
		{"/ingest/job", "", true, http.StatusUnauthorized}, // its token is its credential
		{"/open/job", "", false, http.StatusUnauthorized},
		{"/open/job?token=t0ken", "", false, http.StatusUnauthorized},
		{"/open/job", "", true, http.StatusNoContent},
		{"/metrics?token=t0ken", "", false, http.StatusUnauthorized}, // not a way past basic auth elsewhere
	} {
		if got := post(tc.path, tc.bearer, tc.basic); got != tc.want {
			t.Errorf("POST %s (bearer %q, basic auth %v): %d, want %d", tc.path, tc.bearer, tc.basic, got, tc.want)
		}
	}
	if !strings.Contains(logs.String(), "endpoint=/open/{stream}") || strings.Contains(logs.String(), "endpoint=/ingest/{stream}") {
		t.Errorf("the log does not warn of exactly the endpoint without a token:\n%s", logs.String())
	}
}

// TestSlowReaderDropped: a client that asks and never reads its answer
// holds its connection no longer than the idle timeout.
func TestSlowReaderDropped(t *testing.T) {
	clearOTELEnv(t)
	p := newTestPipeline(t, io.Discard)
	gaveUp := make(chan error, 1)
	p.Handle("/big", "a large answer", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 1<<16)
		for range 1 << 12 { // 256 MiB: more than any socket buffers
			if _, err := w.Write(chunk); err != nil {
				gaveUp <- err
				return
			}
		}
		gaveUp <- nil
	}))
	addr := serveWeb(t, p, Web{MaxConnections: 16, IdleTimeout: 500 * time.Millisecond, ReadHeaderTimeout: 10 * time.Second})
	holdConns(t, addr, 1, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
	select {
	case err := <-gaveUp:
		if err == nil {
			t.Fatal("256 MiB went to a client that reads nothing")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the answer to a client that does not read was still being written 10 s on (idle timeout 500ms)")
	}
}

// TestTricklingBodyCutOff: a body nothing reads (outside the streaming
// endpoints), trickled in to hold the connection, is cut off after the
// read-header timeout.
func TestTricklingBodyCutOff(t *testing.T) {
	clearOTELEnv(t)
	p := newTestPipeline(t, io.Discard)
	addr := serveWeb(t, p, Web{MaxConnections: 16, IdleTimeout: time.Minute, ReadHeaderTimeout: 500 * time.Millisecond})
	c := holdConns(t, addr, 1, "GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")[0] // and never the rest
	if stillOpen([]net.Conn{c}, time.Now().Add(10*time.Second)) > 0 {
		t.Error("a trickling body held its connection 10 s (read-header timeout 500ms)")
	}
}

// TestWebConfigReload: as with exporter-toolkit, users change without a
// restart, and a password remembered for a user stops working when the
// user's hash changes.
func TestWebConfigReload(t *testing.T) {
	clearOTELEnv(t)
	p := newTestPipeline(t, io.Discard)
	config, _ := basicAuthConfig(t, bcrypt.MinCost)
	addr := serveWeb(t, p, Web{ConfigFile: config, MaxConnections: 16, IdleTimeout: time.Minute, ReadHeaderTimeout: 10 * time.Second})
	get := func(user, pass string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("alice", "s3cret"); code != http.StatusOK {
		t.Fatalf("alice: %d", code)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("n3w"), bcrypt.MinCost)
	if err := os.WriteFile(config, []byte("basic_auth_users:\n  alice: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := get("alice", "s3cret"); code != http.StatusUnauthorized {
		t.Errorf("alice's old password after the change: %d, want 401", code)
	}
	if code := get("alice", "n3w"); code != http.StatusOK {
		t.Errorf("alice's new password: %d, want 200", code)
	}
}

// TestServeErrorClosesPipeline: Serve refusing its web settings closes
// the pipeline too, with its last OTLP export, rather than leaving its
// periodic reader running (the export interval here is an hour away).
func TestServeErrorClosesPipeline(t *testing.T) {
	clearOTELEnv(t)
	recv, endpoint := otlptest.StartGRPC(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
	p := newTestPipeline(t, io.Discard)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bad := defaultWeb
	bad.MaxConnections = -1
	if err := p.Serve(context.Background(), ln, bad); err == nil {
		t.Fatal("Serve took --web.max-connections -1")
	}
	if recv.Exports() == 0 {
		t.Error("the pipeline was left open: no last export")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("the listener was left open")
	}
}

// TestChurnSparesArrivedScrape: a scrape whose request has arrived (here
// held in bcrypt, the first check of its password) is never the
// connection closed to make room, however many new connections churn in
// meanwhile: it is answered.
func TestChurnSparesArrivedScrape(t *testing.T) {
	clearOTELEnv(t)
	p := newTestPipeline(t, io.Discard)
	config, _ := basicAuthConfig(t, 13) // a check long enough to churn through
	addr := serveWeb(t, p, Web{ConfigFile: config, MaxConnections: 4, IdleTimeout: time.Minute, ReadHeaderTimeout: 10 * time.Second})
	scraped := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
		req.SetBasicAuth("alice", "s3cret")
		resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		scraped <- err
	}()
	exportertest.WaitFor(t, 10*time.Second, func() bool { return len(p.shared.passwords.gate) == 1 }) // its check runs
	churn := holdConns(t, addr, 50, "")                                                               // connect, send nothing
	if err := <-scraped; err != nil {
		t.Errorf("the scrape whose request had arrived was shed by %d new connections: %v", len(churn), err)
	}
}
