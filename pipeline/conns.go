package pipeline

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
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
// A new connection the server has not started to read is not closed to
// make room for less than readLag: when many encodes start at once, the
// accept loop runs ahead of the goroutines that read their requests, and
// closing the oldest of those would lose streams. Such connections may
// take the count past max, never past twice max; the next accept after
// their readLag closes as many as it takes to come back to max.
type conns struct {
	net.Listener
	max int // 0: no limit
	log *slog.Logger

	mu       sync.Mutex
	open     map[*conn]struct{}
	evicted  int       // since the last warning
	warnedAt time.Time // warnings come at most once a minute
}

// conn is one accepted connection; its fields but read are guarded by
// conns.mu.
type conn struct {
	net.Conn
	in *conns

	serving   int       // requests in a handler
	streaming int       // of which on streaming endpoints
	since     time.Time // when it last had no request in a handler
	read      atomic.Bool
}

// readLag is how long a new connection is kept, at the limit, before the
// server starts to read it.
var readLag = time.Second

// Read marks the connection as one the server has started to read.
func (c *conn) Read(p []byte) (int, error) {
	if !c.read.Load() {
		c.read.Store(true)
	}
	return c.Conn.Read(p)
}

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
	victims := l.victims(c.since)
	for _, v := range victims {
		delete(l.open, v)
		l.warn()
	}
	l.open[c] = struct{}{}
	l.mu.Unlock()
	for _, v := range victims {
		v.Conn.Close()
	}
	return c, nil
}

// victims are the connections to close to make room for a new one: none
// below the limit. Oldest first, idle connections go before those with a
// request in a handler, and new ones not yet read go last, only past twice
// the limit.
func (l *conns) victims(now time.Time) []*conn {
	if l.max <= 0 {
		return nil
	}
	type candidate struct {
		c    *conn
		rank int // 0 idle, 1 in a handler, 2 new and not yet read
	}
	var all []candidate
	for c := range l.open {
		switch {
		case c.streaming > 0:
		case c.serving > 0:
			all = append(all, candidate{c, 1})
		case !c.read.Load() && now.Sub(c.since) < readLag:
			all = append(all, candidate{c, 2})
		default:
			all = append(all, candidate{c, 0})
		}
	}
	if len(all) < l.max {
		return nil
	}
	slices.SortFunc(all, func(a, b candidate) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		return a.c.since.Compare(b.c.since)
	})
	var out []*conn
	for _, cand := range all {
		left := len(all) + 1 - len(out) // with the new one
		if left <= l.max || (cand.rank == 2 && left <= 2*l.max) {
			break
		}
		out = append(out, cand.c)
	}
	return out
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
