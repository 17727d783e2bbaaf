package ffmpeg

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
)

func newIngestServer(t *testing.T, cfg Config, token string) (*Hub, *httptest.Server) {
	t.Helper()
	hub := NewHub(cfg)
	in := &Ingest{Hub: hub, Token: token, Log: slog.New(slog.DiscardHandler)}
	mux := http.NewServeMux()
	mux.Handle("/ingest", in)
	mux.Handle("/ingest/{stream}", in)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return hub, srv
}

func post(t *testing.T, url, body string, header ...string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestIngestRoutesAndRejections(t *testing.T) {
	hub, srv := newIngestServer(t, DefaultConfig, "")
	block := "frame=7\nprogress=end\n"
	for _, tc := range []struct {
		url, stream string
	}{
		{"/ingest/job42", "job42"},
		{"/ingest?stream=q.1", "q.1"},
		{"/ingest", "default"},
	} {
		if code := post(t, srv.URL+tc.url, block); code != http.StatusNoContent {
			t.Errorf("POST %s: %d", tc.url, code)
		}
		if s, ok := streamByName(t, hub, tc.stream); !ok || s.Values[Frames] != 7 {
			t.Errorf("POST %s: stream %q = %+v, %v", tc.url, tc.stream, s, ok)
		}
	}
	if code := post(t, srv.URL+"/ingest?stream=bad%20name", block); code != http.StatusBadRequest {
		t.Errorf("bad name: %d, want 400", code)
	}
	if code := post(t, srv.URL+"/ingest/"+strings.Repeat("a", 65), block); code != http.StatusBadRequest {
		t.Errorf("long name: %d, want 400", code)
	}
	resp, err := http.Get(srv.URL + "/ingest/job42")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET: %d Allow=%q, want 405 POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
	snap := hub.Snapshot()
	if snap.Rejected[RejectStreamName] != 2 || snap.Rejected[RejectMethod] != 1 {
		t.Errorf("rejections %v", snap.Rejected)
	}
}

func TestIngestToken(t *testing.T) {
	hub, srv := newIngestServer(t, DefaultConfig, "s3cret")
	if code := post(t, srv.URL+"/ingest/a", "frame=1\n"); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code := post(t, srv.URL+"/ingest/a", "frame=1\n", "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", code)
	}
	if code := post(t, srv.URL+"/ingest/a", "frame=1\n", "Authorization", "Bearer s3cret"); code != http.StatusNoContent {
		t.Errorf("header token: %d, want 204", code)
	}
	if code := post(t, srv.URL+"/ingest/b?token=s3cret", "frame=1\n"); code != http.StatusNoContent {
		t.Errorf("query token: %d, want 204", code)
	}
	if n := hub.Snapshot().Rejected[RejectUnauthorized]; n != 2 {
		t.Errorf("unauthorized count %d, want 2", n)
	}
	if _, ok := streamByName(t, hub, "a"); !ok {
		t.Error("authorized stream missing")
	}
}

// TestRefuseStreamCounted: a stream the pipeline refuses for want of
// descriptors is answered 429 at once and counted as too_many_streams.
func TestRefuseStreamCounted(t *testing.T) {
	hub := NewHub(DefaultConfig)
	in := &Ingest{Hub: hub, Log: slog.New(slog.DiscardHandler)}
	rec := httptest.NewRecorder()
	in.RefuseStream(rec, httptest.NewRequest(http.MethodPost, "/ingest/x", strings.NewReader("frame=1\n")))
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Connection") != "close" {
		t.Errorf("%d, Connection %q: want 429 and the connection closed", rec.Code, rec.Header().Get("Connection"))
	}
	if n := hub.Snapshot().Rejected[RejectTooMany]; n != 1 {
		t.Errorf("too_many_streams %d, want 1", n)
	}
}

func TestIngestTooManyStreams(t *testing.T) {
	cfg := DefaultConfig
	cfg.MaxStreams = 1
	hub, srv := newIngestServer(t, cfg, "")
	pr, pw := io.Pipe()
	done := make(chan int)
	go func() {
		resp, err := http.Post(srv.URL+"/ingest/live", "text/plain", pr)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	io.WriteString(pw, "frame=1\nprogress=continue\n")
	waitFor(t, func() bool { s, ok := streamByName(t, hub, "live"); return ok && s.Active })
	if code := post(t, srv.URL+"/ingest/other", "frame=1\n"); code != http.StatusTooManyRequests {
		t.Errorf("second stream: %d, want 429", code)
	}
	pw.Close()
	if code := <-done; code != http.StatusNoContent {
		t.Errorf("live stream ended with %d", code)
	}
	// Once the live stream has finished, its slot can be taken.
	if code := post(t, srv.URL+"/ingest/other", "frame=1\n"); code != http.StatusNoContent {
		t.Errorf("after the first finished: %d, want 204", code)
	}
}

// TestIngestStreamsLiveAndIsolated: metrics move while a chunked body is
// still open, and one stream's garbage does not touch another.
func TestIngestStreamsLiveAndIsolated(t *testing.T) {
	hub, srv := newIngestServer(t, DefaultConfig, "")
	pr, pw := io.Pipe()
	go func() {
		if resp, err := http.Post(srv.URL+"/ingest/good", "text/plain", pr); err == nil {
			resp.Body.Close()
		}
	}()
	io.WriteString(pw, "frame=1\nprogress=continue\n")
	waitFor(t, func() bool { s, _ := streamByName(t, hub, "good"); return s.Values[Frames] == 1 })
	io.WriteString(pw, "frame=2\nprogress=continue\n")
	waitFor(t, func() bool { s, _ := streamByName(t, hub, "good"); return s.Values[Frames] == 2 })

	garbage := strings.Repeat("\x00\xff\xfe", MaxLineBytes) + "\nframe=abc\nprogress=continue\n"
	if code := post(t, srv.URL+"/ingest/bad", garbage); code != http.StatusNoContent {
		t.Errorf("garbage body: %d", code)
	}
	io.WriteString(pw, "frame=3\nprogress=continue\n")
	waitFor(t, func() bool { s, _ := streamByName(t, hub, "good"); return s.Values[Frames] == 3 })
	if s, _ := streamByName(t, hub, "good"); !s.Active {
		t.Error("good stream disturbed by the bad one")
	}
	if n := hub.Snapshot().Lines[LinesOversized]; n != 1 {
		t.Errorf("oversized %d, want 1", n)
	}
	pw.Close()
	waitFor(t, func() bool { s, _ := streamByName(t, hub, "good"); return !s.Active })
}

func TestIngestIdleTimeout(t *testing.T) {
	cfg := DefaultConfig
	cfg.IdleTimeout = 100 * time.Millisecond
	hub, srv := newIngestServer(t, cfg, "")
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		if resp, err := http.Post(srv.URL+"/ingest/stuck", "text/plain", pr); err == nil {
			resp.Body.Close()
		}
	}()
	io.WriteString(pw, "frame=1\nprogress=continue\n")
	waitFor(t, func() bool { s, _ := streamByName(t, hub, "stuck"); return s.Values[Frames] == 1 })
	// Nothing more is sent: the server closes the connection and the stream ends.
	waitFor(t, func() bool {
		s, _ := streamByName(t, hub, "stuck")
		return !s.Active
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	exportertest.WaitFor(t, 10*time.Second, cond)
}

// TestIngestNoGoroutineLeak: finished, refused and garbage ingests leave no
// goroutine behind.
func TestIngestNoGoroutineLeak(t *testing.T) {
	_, srv := newIngestServer(t, DefaultConfig, "")
	client := &http.Client{Transport: &http.Transport{}}
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := srv.URL + "/ingest/s" + strconv.Itoa(i)
			if i%5 == 0 {
				url = srv.URL + "/ingest/bad%20name"
			}
			resp, err := client.Post(url, "text/plain", strings.NewReader("frame=1\n\x00garbage\nprogress=end\n"))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	client.CloseIdleConnections()
	srv.CloseClientConnections()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

// TestRejectionAnsweredWhileBodyOpen: a refused client that keeps its
// chunked body open (as ffmpeg -progress does) gets its status at once and
// its connection closed, for every refusal.
func TestRejectionAnsweredWhileBodyOpen(t *testing.T) {
	cfg := DefaultConfig
	cfg.MaxStreams = 1
	hub, srv := newIngestServer(t, cfg, "t0ken")
	if _, err := hub.Open("busy"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, target string
		want           int
	}{
		{"POST", "/ingest/job?token=wrong", 401},
		{"PUT", "/ingest/job?token=t0ken", 405},
		{"POST", "/ingest/bad%20name?token=t0ken", 400},
		{"POST", "/ingest/second?token=t0ken", 429},
		{"POST", "/ingest/busy?token=t0ken", 409},
	} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", tc.method, tc.target)
		fmt.Fprintf(conn, "%x\r\n%s\r\n", 16, "frame=1\nfps=25\n\n")
		// The body stays open: no terminating chunk. The answer must come
		// without it, within what a client waits (a loaded machine is slow,
		// never silent).
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Errorf("%s %s: no answer while the body is open: %v", tc.method, tc.target, err)
			conn.Close()
			continue
		}
		if resp.StatusCode != tc.want || !resp.Close {
			t.Errorf("%s %s: %d close=%v, want %d and the connection closed", tc.method, tc.target, resp.StatusCode, resp.Close, tc.want)
		}
		io.Copy(io.Discard, resp.Body)
		// Closed: an end of stream, or a reset when the server closed with
		// the client's unread body in its buffer (as the kernel does when
		// a loaded machine has not drained it yet). Either way, not open.
		if _, err := conn.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s %s: connection not closed after the refusal: %v", tc.method, tc.target, err)
		}
		conn.Close()
	}
}

// TestSecondClientRefused: while one client feeds a stream, a second one
// posting to the same name gets 409 and is counted; its readings never
// mix with the first's, and its progress=end does not end the first. Once
// the first closes, the name is free for a new encode.
func TestSecondClientRefused(t *testing.T) {
	hub, srv := newIngestServer(t, DefaultConfig, "")
	pr, pw := io.Pipe()
	done := make(chan int)
	go func() {
		resp, err := http.Post(srv.URL+"/ingest/job", "text/plain", pr)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	io.WriteString(pw, "frame=1000\nprogress=continue\n")
	waitFor(t, func() bool { s, _ := streamByName(t, hub, "job"); return s.Values[Frames] == 1000 })

	if code := post(t, srv.URL+"/ingest/job", "frame=10\nprogress=end\n"); code != http.StatusConflict {
		t.Errorf("second client: %d, want 409", code)
	}
	io.WriteString(pw, "frame=1025\nprogress=continue\n")
	waitFor(t, func() bool { s, _ := streamByName(t, hub, "job"); return s.Values[Frames] == 1025 })
	if s, _ := streamByName(t, hub, "job"); !s.Active {
		t.Error("the refused client's progress=end ended the first client's stream")
	}
	if n := hub.Snapshot().Rejected[RejectBusy]; n != 1 {
		t.Errorf("stream_busy %d, want 1", n)
	}
	pw.Close()
	if code := <-done; code != http.StatusNoContent {
		t.Errorf("first client ended with %d", code)
	}
	if code := post(t, srv.URL+"/ingest/job", "frame=10\nprogress=end\n"); code != http.StatusNoContent {
		t.Errorf("after the first closed: %d, want 204", code)
	}
	if s, _ := streamByName(t, hub, "job"); s.Values[Frames] != 10 {
		t.Errorf("new encode: frames %v, want 10", s.Values[Frames])
	}
}

// TestUnexpectedOpenErrorRefused: an error from opening a stream that
// ingest has no answer for (none today; one injected here) gets 500 at
// once and the connection closed, while the body is still open, instead
// of a panic on the nil connection.
func TestUnexpectedOpenErrorRefused(t *testing.T) {
	hub := NewHub(DefaultConfig)
	in := &Ingest{Hub: hub, Log: slog.New(slog.DiscardHandler),
		open: func(string, Peer) (*Conn, error) { return nil, errors.New("injected") }}
	srv := httptest.NewServer(in)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /ingest/job HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", 8, "frame=1\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // an answer while the body is open, however loaded the machine
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body is open: %v", err)
	}
	if resp.StatusCode != http.StatusInternalServerError || !resp.Close {
		t.Errorf("%d close=%v, want 500 and the connection closed", resp.StatusCode, resp.Close)
	}
	io.Copy(io.Discard, resp.Body)
	// The server drains what the client still sends for refuseDrain before
	// it closes (so that the answer is not lost to a reset): closed then.
	conn.SetReadDeadline(time.Now().Add(refuseDrain + 10*time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("connection not closed after the refusal: %v", err)
	}
	if _, ok := streamByName(t, hub, "job"); ok {
		t.Error("a refused stream was opened")
	}
}
