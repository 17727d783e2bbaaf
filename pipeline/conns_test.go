package pipeline

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/exportertest"
)

// burst dials n clients that each send a request at once, as encodes
// starting together do, and accepts them through l without serving them:
// the accept loop ahead of the goroutines that would read the requests.
func burst(t *testing.T, l *conns, n int) (clients []net.Conn, accepted []*conn) {
	t.Helper()
	for i := range n {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "POST /ingest/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		sc := accept(t, l)
		exportertest.WaitFor(t, 5*time.Second, sc.requestWaiting) // the request is in, unread
		clients, accepted = append(clients, c), append(accepted, sc)
		if len(accepted) != i+1 {
			t.Fatal("accepted out of step")
		}
	}
	return clients, accepted
}

func accept(t *testing.T, l *conns) *conn {
	t.Helper()
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc.(*conn)
}

func isOpen(l *conns, c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.open[c]
	return ok
}

// closedByServer: the client reads EOF (or a reset) within a second.
func closedByServer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := c.Read(make([]byte, 1))
	ne, timeout := err.(net.Error)
	return err != nil && !(timeout && ne.Timeout())
}

// TestBurstOfRequestsKeptAtLimit: three times the limit of clients connect
// at once with their requests sent; none is closed to make room while the
// server has not read its request, and a client that sent nothing is.
func TestBurstOfRequestsKeptAtLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := newConns(ln, 4, slog.New(slog.DiscardHandler))

	_, accepted := burst(t, l, 12)
	for i, c := range accepted {
		if !isOpen(l, c) {
			t.Errorf("connection %d of the burst closed to make room before its request was read", i)
		}
	}

	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	accept(t, l)
	late, err := net.Dial("tcp", ln.Addr().String()) // the next one makes room
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	accept(t, l)
	if !closedByServer(silent) {
		t.Error("a connection that sent nothing was kept over the limit")
	}
	for i, c := range accepted {
		if !isOpen(l, c) {
			t.Errorf("connection %d of the burst closed for a newer one", i)
		}
	}
}

// TestUnreadRequestNotKeptPastReadLag: a request left unread longer than
// readLag protects its connection no more, so a client cannot hold more
// than the limit by sending what the server does not get to.
func TestUnreadRequestNotKeptPastReadLag(t *testing.T) {
	defer func(was time.Duration) { readLag = was }(readLag)
	readLag = 0
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := newConns(ln, 4, slog.New(slog.DiscardHandler))

	clients, accepted := burst(t, l, 8)
	for i, c := range accepted {
		if want := i >= 4; isOpen(l, c) != want {
			t.Errorf("connection %d: open %v, want %v (the oldest closed for the newest)", i, !want, want)
		}
	}
	if !closedByServer(clients[0]) {
		t.Error("the oldest client still connected")
	}
}
