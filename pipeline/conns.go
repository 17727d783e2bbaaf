package pipeline

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// conns is a listener that keeps at most max connections open besides
// streams (ingest POSTs, which their endpoint bounds: ffmpeg's
// --ingest.max-streams). At the limit, a new connection closes the oldest
// one: first among those without a request in a handler (idle keep-alives,
// connections that never sent a whole request), else among those with one
// (a client that does not read its answer, say). A limit that made Accept wait
// would shut the next scrape out along with the attacker; this one costs
// the attacker its oldest connection instead.
//
// A connection whose request has waited unread in the kernel for less than
// readLag is not closed to make room: the server has not had the time to
// read it, and it may be a stream. When many encodes start at once, the
// accept loop runs ahead of the goroutines that read their requests, and
// closing the oldest of those would lose streams. A client cannot hold a
// connection in that state: the server reads what it sends as soon as it
// runs, and after readLag it is a candidate like any other.
type conns struct {
	net.Listener
	max int // 0: no limit
	log *slog.Logger

	mu       sync.Mutex
	open     map[*conn]struct{}
	evicted  int       // since the last warning
	warnedAt time.Time // warnings come at most once a minute
}

// conn is one accepted connection; its fields are guarded by conns.mu.
type conn struct {
	net.Conn
	in *conns

	serving   int       // requests in a handler
	streaming int       // of which on streaming endpoints
	since     time.Time // when it last had no request in a handler
}

// readLag is how long the server may take to read a request that has
// arrived before its connection can be closed to make room.
var readLag = time.Second

func newConns(ln net.Listener, max int, log *slog.Logger) *conns {
	return &conns{Listener: ln, max: max, log: log, open: make(map[*conn]struct{})}
}

func (l *conns) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &conn{Conn: nc, in: l, since: time.Now()}
	l.mu.Lock()
	victim := l.victim()
	if victim != nil {
		delete(l.open, victim)
		l.warn()
	}
	l.open[c] = struct{}{}
	l.mu.Unlock()
	if victim != nil {
		victim.Conn.Close()
	}
	return c, nil
}

// victim is the connection to close for a new one: nil below the limit, or
// when every candidate has a request waiting to be read.
func (l *conns) victim() *conn {
	if l.max <= 0 {
		return nil
	}
	var n int
	var idle, busy []*conn
	for c := range l.open {
		switch {
		case c.streaming > 0:
			continue
		case c.serving == 0:
			idle = append(idle, c)
		default:
			busy = append(busy, c)
		}
		n++
	}
	if n < l.max {
		return nil
	}
	now := time.Now()
	for _, group := range [][]*conn{idle, busy} {
		slices.SortFunc(group, func(a, b *conn) int { return a.since.Compare(b.since) })
		for _, c := range group {
			if c.serving > 0 || now.Sub(c.since) >= readLag || !c.requestWaiting() {
				return c
			}
		}
	}
	return nil
}

// requestWaiting says whether bytes the client sent wait unread in the
// kernel's receive queue (SIOCINQ).
func (c *conn) requestWaiting() bool {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var unread int
	raw.Control(func(fd uintptr) { unread, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return unread > 0
}

// warn says, at most once a minute, that the limit is closing connections.
func (l *conns) warn() {
	l.evicted++
	if time.Since(l.warnedAt) < time.Minute {
		return
	}
	l.warnedAt = time.Now()
	l.log.Warn("connection limit reached: closing the oldest connections (a client holding connections open?)",
		"address", l.Addr().String(), "max_connections", l.max, "closed", l.evicted)
	l.evicted = 0
}

func (c *conn) Close() error {
	c.in.mu.Lock()
	delete(c.in.open, c)
	c.in.mu.Unlock()
	return c.Conn.Close()
}

type connKey struct{}

// withConn is the http.Server's ConnContext: it lets serving find the
// connection a request came on.
func (l *conns) withConn(ctx context.Context, nc net.Conn) context.Context {
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	if c, ok := nc.(*conn); ok {
		return context.WithValue(ctx, connKey{}, c)
	}
	return ctx
}

// serving marks r's connection busy until done is called: it is closed
// to make room only after the idle ones; and when stream is set it is not
// counted, never closed to make room, and closed first at shutdown.
func (l *conns) serving(r *http.Request, stream bool) (done func()) {
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c == nil {
		return func() {}
	}
	l.mu.Lock()
	c.serving++
	if stream {
		c.streaming++
	}
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		c.serving--
		if stream {
			c.streaming--
		}
		c.since = time.Now()
		l.mu.Unlock()
	}
}

// closeStreams closes every connection with a request on a streaming
// endpoint: such a request (ffmpeg -progress, for the whole encode) would
// hold a graceful shutdown to its end.
func (l *conns) closeStreams() {
	l.mu.Lock()
	var streams []*conn
	for c := range l.open {
		if c.streaming > 0 {
			streams = append(streams, c)
		}
	}
	l.mu.Unlock()
	for _, c := range streams {
		c.Conn.Close()
	}
}
