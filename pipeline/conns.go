package pipeline

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// conns is a listener that keeps at most max connections open besides
// live streams (ingest POSTs, which the process's descriptor budget
// bounds instead), and never more than that budget allows in all. At the
// limit, a new connection closes the oldest one that nobody waits on: an
// idle keep-alive, or one that has sent no whole request; then one whose
// request has been in the server longer than a scraper waits (a client
// not reading its answer). A limit that made Accept wait would shut the
// next scrape out along with the attacker; this one costs the attacker
// its oldest connection instead.
//
// Two kinds are never closed to make room for another: a connection whose
// request has arrived and is being answered (for handlerGrace), so churn
// cannot cost a scrape its answer; and, while the process has descriptors
// to spare, a new connection the server has not started to read yet (for
// readLag): when many encodes start at once, the accept loop runs ahead
// of the goroutines that read their requests, and closing those would
// lose streams.
type conns struct {
	net.Listener
	max int  // 0: no limit
	tls bool // a connection refused at accept is closed unanswered: it has had no handshake
	fds *descriptors
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

	state     http.ConnState
	since     time.Time // of the state
	streaming int       // requests on streaming endpoints, admitted
	closing   bool      // answered with "Connection: close": only draining what the client still sends
	closed    bool
	read      atomic.Bool // the server has started to read it
	evicted   atomic.Bool // closed to make room: by whoever evicted it, not the server
	// owner is who a new connection belongs to: the server, once it
	// starts to read it, or its evictor, who answers it 503. Taken once,
	// by compare-and-swap, so a connection is never both read and
	// refused: either way it gets an answer.
	owner atomic.Int32
}

const (
	ownerNone = iota
	ownerServer
	ownerEvictor
)

// readLag is how long a new connection is spared before the server starts
// to read it; handlerGrace how long one whose request has arrived is
// spared: a scrape past it has been given up by its scraper (Prometheus's
// default scrape_timeout).
var (
	readLag      = 5 * time.Second // a loaded machine's goroutines can lag seconds behind its accept loop
	handlerGrace = 10 * time.Second
)

// Read marks the connection as one the server has started to read. One
// evicted before (see admit) is not the server's to read: it is being
// answered 503 and closed.
func (c *conn) Read(p []byte) (int, error) {
	if c.owner.Load() != ownerServer && !c.owner.CompareAndSwap(ownerNone, ownerServer) {
		return 0, io.EOF // its evictor's: being answered 503; the server answers nothing
	}
	if !c.read.Load() {
		c.read.Store(true)
	}
	if c.evicted.Load() {
		return 0, io.EOF // as a client gone: the server answers nothing
	}
	return c.Conn.Read(p)
}

func newConns(ln net.Listener, max int, fds *descriptors, log *slog.Logger) *conns {
	return &conns{Listener: ln, max: max, fds: fds, log: log, open: make(map[*conn]struct{})}
}

func (l *conns) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c := l.admit(nc); c != nil {
			return c, nil
		}
		l.refuse(nc) // no descriptor to spare, none to take back: this one goes, told why
	}
}

// admit counts nc and closes what it displaces; nil: nc itself must go.
func (l *conns) admit(nc net.Conn) *conn {
	c := &conn{Conn: nc, in: l, state: http.StateNew, since: time.Now()}
	l.mu.Lock()
	l.fds.mu.Lock()
	l.fds.open++
	over := l.fds.open - l.fds.maxOpen()
	// What this port may hold besides streams: the budget less the live
	// streams and the other ports' reserves, which stay theirs.
	mine := l.fds.maxOpen() - l.fds.streams - (l.fds.reserved - (l.max + 1))
	l.fds.mu.Unlock()
	l.open[c] = struct{}{}
	victims, keep := l.victims(c, over, mine)
	for _, v := range victims {
		// Marked before the lock is let go: the server, refused its first
		// Read by the evictor's claim, closes the connection at once, and
		// that Close (which takes the lock) must leave it to the evictor's
		// answer rather than reset it unanswered.
		v.evicted.Store(true)
		l.forget(v)
		l.warn()
	}
	if !keep {
		l.forget(c)
		l.warn()
	}
	l.mu.Unlock()
	if testAfterEvict != nil {
		testAfterEvict()
	}
	for _, v := range victims {
		// An idle victim the server never claimed reads EOF from here on
		// (Read claims it, then checks evicted): its Close leaves it to
		// the Close below.
		if v.owner.Load() == ownerEvictor {
			l.refuse(v.Conn) // never read: this answer is its only one
		} else {
			v.Conn.Close() // idle between requests, or stuck past a scraper's patience
		}
	}
	if !keep {
		return nil
	}
	return c
}

// testAfterEvict, when set by a test, runs between marking the victims
// and closing them: where the server's first Read used to slip in.
var testAfterEvict func()

// refuse answers a connection the server has not read, closed for want of
// descriptors, and closes it: whatever request it sends, it learns why
// (over TLS, which it has had no handshake for, it is only closed). The
// request it has sent is read first, briefly and apart from the accept
// loop: closed with it unread, the connection would be reset, and the
// reset can discard the answer before the client reads it.
func (l *conns) refuse(nc net.Conn) {
	if l.tls {
		nc.Close()
		return
	}
	l.fds.mu.Lock()
	l.fds.open++ // until it is closed
	l.fds.mu.Unlock()
	go func() {
		defer func() {
			nc.Close()
			l.fds.mu.Lock()
			l.fds.open--
			l.fds.mu.Unlock()
		}()
		_ = nc.SetDeadline(time.Now().Add(refuseLinger))
		_, _ = io.WriteString(nc, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 63\r\n\r\nno file descriptor to spare for another connection; retry later")
		if cw, ok := nc.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(nc, 64<<10))
	}()
}

// refuseLinger bounds how long a refused connection is kept to be read.
const refuseLinger = 50 * time.Millisecond

// victims are the connections to close to make room for the new one: to
// come back to max on this port, and by over more when the process is
// past its descriptor budget, or this port past mine, its share of it. keep is false when even that cannot be
// done without closing what is spared: then the new one goes instead.
func (l *conns) victims(newest *conn, over, mine int) (out []*conn, keep bool) {
	const (
		idle    = iota // a keep-alive between requests, or nothing whole sent for readLag
		stuck          // a request in the server longer than a scraper waits
		unread         // new, not read yet: only for the budget (answered 503, see refuse)
		closing        // refused and draining: its answer, sent, may not be read yet
		reading        // new, being read, nothing whole yet: only for the budget
	)
	type candidate struct {
		c    *conn
		rank int
	}
	now := newest.since
	var all []candidate
	counted := 0 // this port's connections besides streams
	for c := range l.open {
		if c.streaming > 0 {
			continue
		}
		counted++
		young := now.Sub(c.since) < readLag
		switch {
		case c == newest:
		case c.closing:
			all = append(all, candidate{c, closing})
		case c.state == http.StateActive && now.Sub(c.since) < handlerGrace: // being answered
		case c.state == http.StateActive:
			all = append(all, candidate{c, stuck})
		case c.state == http.StateNew && young && !c.read.Load(): // not read yet: maybe a burst
			all = append(all, candidate{c, unread})
		case c.state == http.StateNew && young && c.read.Load():
			// Being read: its request is arriving, and closed now it would
			// get no answer at all. Spared; the newest, unread, is refused
			// with one instead.
		default:
			all = append(all, candidate{c, idle})
		}
	}
	slices.SortFunc(all, func(a, b candidate) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		return a.c.since.Compare(b.c.since)
	})
	needPort := 0
	if l.max > 0 {
		needPort = counted - l.max
	}
	over = max(over, counted-mine)
	for _, cand := range all {
		if len(out) < over || (len(out) < needPort && cand.rank != unread && cand.rank != reading) {
			if cand.rank == unread && !cand.c.owner.CompareAndSwap(ownerNone, ownerEvictor) {
				continue // the server has just started to read it: it stays
			}
			out = append(out, cand.c)
		}
	}
	return out, len(out) >= over
}

// forget takes c out of the counts; l.mu is held.
func (l *conns) forget(c *conn) {
	if c.closed {
		return
	}
	c.closed = true
	delete(l.open, c)
	l.fds.mu.Lock()
	l.fds.open--
	l.fds.mu.Unlock()
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
	c.in.forget(c)
	c.in.mu.Unlock()
	if c.evicted.Load() {
		return nil // its evictor closes it
	}
	return c.Conn.Close()
}

// connState is the http.Server's ConnState: it tells which connections
// have a request in the server (StateActive) and which are idle.
func (l *conns) connState(nc net.Conn, state http.ConnState) {
	c := unwrap(nc)
	if c == nil {
		return
	}
	l.mu.Lock()
	c.state, c.since = state, time.Now()
	l.mu.Unlock()
}

func unwrap(nc net.Conn) *conn {
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	c, _ := nc.(*conn)
	return c
}

type connKey struct{}

// withConn is the http.Server's ConnContext: it lets stream find the
// connection a request came on.
func (l *conns) withConn(ctx context.Context, nc net.Conn) context.Context {
	if c := unwrap(nc); c != nil {
		return context.WithValue(ctx, connKey{}, c)
	}
	return ctx
}

// stream admits r as a live stream: counted against the process's
// descriptor budget rather than the port's limit, never closed to make
// room, and closed first at shutdown. ok is false when the budget has no
// room for it; otherwise call done when the stream ends.
func (l *conns) stream(r *http.Request) (done func(), ok bool) {
	if !l.fds.admitStream(l.log) {
		return nil, false
	}
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c != nil {
		l.mu.Lock()
		c.streaming++
		l.mu.Unlock()
	}
	return func() {
		l.fds.endStream()
		if c != nil {
			l.mu.Lock()
			c.streaming--
			c.since = time.Now()
			l.mu.Unlock()
		}
	}, true
}

// answered notes, once r's handler has returned, that its connection is
// closing (a refusal, answered at once): nobody waits on it any more, so
// it may be closed first to make room while it drains the client's body.
func (l *conns) answered(r *http.Request, w http.ResponseWriter) {
	if w.Header().Get("Connection") != "close" {
		return
	}
	if c, _ := r.Context().Value(connKey{}).(*conn); c != nil {
		l.mu.Lock()
		c.closing = true
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
