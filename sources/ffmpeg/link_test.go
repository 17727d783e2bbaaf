package ffmpeg

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIngestRecordsPeer: each ingest connection's two addresses and ?pid=
// reach the stream snapshot, a new connection gets a new serial and starts
// a new encode, and OnClose names each connection as it closes.
func TestIngestRecordsPeer(t *testing.T) {
	var mu sync.Mutex
	var closed []uint64
	cfg := DefaultConfig
	cfg.OnClose = func(stream string, conn uint64) {
		mu.Lock()
		defer mu.Unlock()
		if stream == "job" {
			closed = append(closed, conn)
		}
	}
	hub := NewHub(cfg)
	mux := http.NewServeMux()
	mux.Handle("/ingest/{stream}", &Ingest{Hub: hub, Log: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	server := netip.MustParseAddrPort(srv.Listener.Addr().String())

	// One connection held open (a live encode), whose client address we know.
	body, w := io.Pipe()
	defer w.Close()
	var client netip.AddrPort
	dialer := &net.Dialer{}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, network, addr)
		if err == nil {
			client = netip.MustParseAddrPort(conn.LocalAddr().String())
		}
		return conn, err
	}}}
	done := make(chan error, 1)
	go func() {
		resp, err := c.Post(srv.URL+"/ingest/job?pid=4242", "text/plain", body)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	w.Write([]byte("frame=1\nprogress=continue\n"))
	s := waitStream(t, hub, "job", func(s StreamSnapshot) bool { return s.Has(Frames) })
	if s.Peer.Local != server || s.Peer.Remote != client || s.Peer.PID != 4242 || s.Peer.Conn == 0 || s.Encode != s.Peer.Conn {
		t.Fatalf("peer %+v encode %d; want local %v remote %v pid 4242", s.Peer, s.Encode, server, client)
	}
	first := s.Peer.Conn
	w.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A new encode under the same name: a new connection and encode serial;
	// a ?pid= that is not a positive integer reads -1.
	resp, err := http.Post(srv.URL+"/ingest/job?pid=nope", "text/plain", strings.NewReader("frame=3\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s = waitStream(t, hub, "job", func(s StreamSnapshot) bool { return s.Peer.Conn != first })
	if s.Encode != s.Peer.Conn || s.Peer.PID != -1 || s.Peer.Conn <= first {
		t.Errorf("new encode: %+v encode %d", s.Peer, s.Encode)
	}
	mu.Lock()
	got := append([]uint64(nil), closed...)
	mu.Unlock()
	if len(got) != 2 || got[0] != first || got[1] != s.Peer.Conn {
		t.Errorf("OnClose saw %v, want [%d %d]", got, first, s.Peer.Conn)
	}
}

func waitStream(t *testing.T, hub *Hub, name string, cond func(StreamSnapshot) bool) StreamSnapshot {
	t.Helper()
	for range 1000 {
		for _, s := range hub.Snapshot().Streams {
			if s.Name == name && cond(s) {
				return s
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("stream %s never met the condition: %+v", name, hub.Snapshot().Streams)
	return StreamSnapshot{}
}
