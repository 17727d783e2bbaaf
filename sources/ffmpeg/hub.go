package ffmpeg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/encodeprofile"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// Config bounds what the hub keeps.
type Config struct {
	MaxStreams  int              // streams tracked at once, live or retained
	Silence     time.Duration    // a live stream that sends nothing this long is inactive
	Retention   time.Duration    // how long a finished stream keeps its final values
	IdleTimeout time.Duration    // an ingest connection silent this long is closed
	Clock       func() time.Time // nil: time.Now; tests set a fixed clock
	Log         *slog.Logger     // nil: discard
	// OnClose, if set, is called as each connection closes, with its
	// stream and Peer.Conn (energy per encode takes its final reading then).
	OnClose func(stream string, conn uint64)
}

// DefaultConfig is what the exporter starts with.
var DefaultConfig = Config{MaxStreams: 1024, Silence: 30 * time.Second, Retention: 5 * time.Minute, IdleTimeout: 5 * time.Minute}

var (
	ErrStreamName     = errors.New("invalid stream name: use 1-64 characters of [A-Za-z0-9_.-]")
	ErrTooManyStreams = errors.New("too many concurrent streams")
	ErrStreamBusy     = errors.New("stream busy: another connection is feeding it")
)

var validName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Hub holds the state of every stream and the ingest counters. Its
// background work is pruning finished streams; its health says when the
// stream limit refuses new streams; its generation moves with every
// ingested block, so a cached scrape is never stale.
type Hub struct {
	*sampling.Tracker
	cfg Config
	now func() time.Time

	mu      sync.RWMutex
	streams map[string]*stream
	serial  atomic.Uint64 // of connections

	lines    [numLineResults]atomic.Uint64
	rejected [numRejects]atomic.Uint64
}

type stream struct {
	mu       sync.Mutex
	values   [NumFields]float64
	known    uint16
	conns    int       // open ingest connections
	ended    bool      // progress=end seen since the last connection opened
	lastSeen time.Time // last block received
	closedAt time.Time // when it stopped being live (end or last connection closed)
	peer     Peer      // of the latest connection
	encode   uint64    // serial of the connection that started the current encode

	started    time.Time             // when the current encode began
	profile    encodeprofile.Profile // of the current encode: declared, merged with the stderr header
	quantizers []Quantizer           // of the current encode, at most MaxOutputs
	lag        realtimeLag
	logs       [NumLevels]uint64 // over the stream's life, across encodes: a counter never goes back
	hasLogs    bool              // ffmpeg's stderr has arrived: the counts are known
}

// NewHub returns an empty hub.
func NewHub(cfg Config) *Hub {
	now := cfg.Clock
	if now == nil {
		now = time.Now
	}
	h := &Hub{cfg: cfg, now: now, streams: make(map[string]*stream), Tracker: sampling.NewTracker(cfg.Log, "ffmpeg ingest", nil)}
	return h
}

// Run prunes finished streams every pruneInterval until ctx ends.
func (h *Hub) Run(ctx context.Context) {
	h.Every(ctx, func() time.Duration { return pruneInterval }, func(context.Context) {
		start := time.Now()
		full := h.Prune()
		var err error
		if full {
			err = fmt.Errorf("stream limit reached: %d live streams, new streams are refused with 429 (raise --ingest.max-streams)", h.cfg.MaxStreams)
		}
		h.Observe(err, time.Now(), time.Since(start))
	})
}

// pruneInterval is how often finished streams past their retention go.
const pruneInterval = time.Second

// Follow feeds r to stream name until r ends or ctx ends. It closes r when
// ctx ends, so a read blocked on a pipe does not outlive the exporter.
func (h *Hub) Follow(ctx context.Context, r io.ReadCloser, name string, peer Peer) error {
	conn, err := h.OpenFrom(name, peer)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { r.Close() })
	defer stop()
	err = conn.Consume(r)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Open starts a connection feeding stream name: a new encode, from zero
// under a reused name. While another connection feeds the stream, it is
// refused with ErrStreamBusy.
func (h *Hub) Open(name string) (*Conn, error) { return h.OpenFrom(name, Peer{}) }

// OpenFrom is Open for a connection from peer.
func (h *Hub) OpenFrom(name string, peer Peer) (*Conn, error) {
	if !validName.MatchString(name) {
		return nil, ErrStreamName
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.streams[name]
	if !ok {
		if len(h.streams) >= h.cfg.MaxStreams && !h.evictOldestFinished() {
			return nil, ErrTooManyStreams
		}
		s = &stream{}
		h.streams[name] = s
	}
	s.mu.Lock()
	if s.conns > 0 {
		s.mu.Unlock()
		return nil, ErrStreamBusy // two encodes under one name would interleave their readings
	}
	peer.Conn = h.serial.Add(1)
	s.startEncode(now)
	s.encode = peer.Conn
	s.conns++
	s.peer = peer
	s.profile = peer.Declared
	s.mu.Unlock()
	h.Changed()
	return &Conn{hub: h, s: s, name: name, id: peer.Conn}, nil
}

// startEncode forgets the previous encode's readings. Called with s.mu held.
func (s *stream) startEncode(now time.Time) {
	s.values, s.known, s.ended = [NumFields]float64{}, 0, false
	s.profile = s.peer.Declared
	s.quantizers, s.lag = s.quantizers[:0], realtimeLag{}
	s.started, s.lastSeen, s.closedAt = now, now, time.Time{}
}

// evictOldestFinished makes room by forgetting the finished stream that
// stopped longest ago, before its retention is up. Called with h.mu held.
func (h *Hub) evictOldestFinished() bool {
	var (
		oldest string
		at     time.Time
	)
	for name, s := range h.streams {
		s.mu.Lock()
		finished, closed := s.finished(), s.closedAt
		s.mu.Unlock()
		if finished && (oldest == "" || closed.Before(at)) {
			oldest, at = name, closed
		}
	}
	if oldest == "" {
		return false
	}
	delete(h.streams, oldest)
	return true
}

// live reports whether a connection is open and ffmpeg has not said it ended.
func (s *stream) live() bool { return s.conns > 0 && !s.ended }

// finished reports whether no connection feeds the stream: only then may
// it go, as a connection still open may send more (a new encode after
// progress=end, say).
func (s *stream) finished() bool { return s.conns == 0 }

// Conn is one ingest connection (an HTTP body or stdin) feeding a stream.
type Conn struct {
	hub    *Hub
	s      *stream
	parser progressParser
	logs   logLevels
	header encodeprofile.Stderr // ffmpeg's stderr header: each output's encoder, size and rate
	stderr bool                 // the stream knows this connection carries stderr
	closed bool
	name   string
	id     uint64 // Peer.Conn
}

// Consume reads r line by line until it ends, applying each block as it
// arrives. It returns nil at a clean end of input.
func (c *Conn) Consume(r io.Reader) error {
	lr := newLineReader(r, MaxLineBytes)
	lr.OnOversized = func() { c.hub.lines[LinesOversized].Add(1); c.hub.Changed() } // at once: the line may never end
	for {
		line, err := lr.Next()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		c.Line(line)
	}
}

// Line applies one line.
func (c *Conn) Line(line []byte) {
	u, kind := c.parser.Line(line)
	c.hub.lines[lineResult(kind)].Add(1)
	c.hub.Changed() // the line counters are served too
	if u != nil {
		c.apply(u)
	}
	// Log counts are known once ffmpeg's stderr arrives: a status line or
	// a log line. -progress alone says nothing of errors.
	var n int
	var lvl Level
	if kind == lineIgnored && !progressShaped(line) {
		lvl, n = c.logs.Line(line)
		c.readHeader(line)
	} else if kind != lineStatus {
		return
	}
	if n > 0 || !c.stderr {
		c.stderr = true
		c.s.mu.Lock()
		c.s.hasLogs = true
		if n > 0 {
			c.s.logs[lvl] += uint64(n)
		}
		c.s.mu.Unlock()
	}
}

// readHeader feeds a stderr line to the encode's header reader, and the
// profile it tells, merged under the URL's declaration, to the stream.
func (c *Conn) readHeader(line []byte) {
	before := c.header.Profile()
	c.header.Line(line)
	after := c.header.Profile()
	if after.Encoder == before.Encoder && after.Preset == before.Preset && after.Ladder == before.Ladder && after.Hwaccel == before.Hwaccel {
		return
	}
	c.s.mu.Lock()
	c.s.profile = encodeprofile.Merge(c.s.peer.Declared, after)
	c.s.mu.Unlock()
	c.hub.Changed()
}

func (c *Conn) apply(u *update) {
	now := c.hub.now()
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		// ffmpeg ends once: a block after progress=end is the next encode
		// on this connection (a shell loop piped into one curl, say).
		s.startEncode(now)
	}
	for f := range NumFields {
		if u.Set&(1<<f) != 0 {
			s.values[f] = u.Values[f]
		}
	}
	s.known = (s.known | u.Set) &^ u.Cleared
	for _, q := range u.Quantizers[:u.NumQuantizers] {
		s.setQuantizer(q)
	}
	if u.Set&(1<<OutTime) != 0 {
		s.lag.report(now, u.Values[OutTime])
	}
	s.lastSeen = now
	if u.End && !s.ended {
		s.ended = true
		s.closedAt = now
	}
	c.hub.Changed()
}

// Close ends the connection; the stream is finished once its last one closes.
func (c *Conn) Close() {
	if c.closed {
		return
	}
	c.closed = true
	now := c.hub.now()
	s := c.s
	s.mu.Lock()
	s.conns--
	if s.conns == 0 && !s.ended {
		s.closedAt = now
	}
	s.mu.Unlock()
	c.hub.Changed()
	if c.hub.cfg.OnClose != nil {
		c.hub.cfg.OnClose(c.name, c.id)
	}
}

// StreamSnapshot is one stream's readings at a moment.
type StreamSnapshot struct {
	Name     string
	Values   [NumFields]float64
	Known    uint16 // bit f set: Values[f] is a reading
	Active   bool
	LastSeen time.Time
	Peer     Peer   // of the latest connection
	Encode   uint64 // serial of the connection that started the current encode

	Started    time.Time         // when the current encode began
	Quantizers []Quantizer       // each output's latest q, in the order ffmpeg first named them
	Lag        float64           // realtime lag in seconds, when HasLag
	HasLag     bool              // the encode has reported a media time
	Logs       [NumLevels]uint64 // log messages by level over the stream's life, when HasLogs
	HasLogs    bool              // the stream has carried ffmpeg's stderr (without it the counts are unknown)
	// Profile is the current encode's profile as the hub heard it: the
	// ingest URL's declaration and ffmpeg's stderr header.
	Profile encodeprofile.Profile
}

// Has reports whether field f holds a reading.
func (s *StreamSnapshot) Has(f Field) bool { return s.Known&(1<<f) != 0 }

// Snapshot is the hub's state at a moment.
type Snapshot struct {
	Streams  []StreamSnapshot // sorted by name
	Lines    [numLineResults]uint64
	Rejected [numRejects]uint64
}

// LineResult is how the ingest counted a line.
type LineResult uint8

const (
	LinesParsed    LineResult = iota // part of a progress block or a status line
	LinesIgnored                     // log lines, unknown keys, garbage
	LinesOversized                   // longer than MaxLineBytes, dropped
	LinesRejected                    // a value that cannot be real (see limits), dropped
	numLineResults
)

// LineResults names each LineResult, in order, for the metric attribute.
var LineResults = [numLineResults]string{"parsed", "ignored", "oversized", "rejected"}

func lineResult(k lineKind) LineResult {
	switch k {
	case lineIgnored:
		return LinesIgnored
	case lineRejected:
		return LinesRejected
	}
	return LinesParsed
}

// Snapshot copies the state of every stream. It only reads.
func (h *Hub) Snapshot() Snapshot {
	now := h.now()
	var snap Snapshot
	for i := range snap.Lines {
		snap.Lines[i] = h.lines[i].Load()
	}
	for i := range snap.Rejected {
		snap.Rejected[i] = h.rejected[i].Load()
	}
	h.mu.RLock()
	snap.Streams = make([]StreamSnapshot, 0, len(h.streams))
	for name, s := range h.streams {
		s.mu.Lock()
		snap.Streams = append(snap.Streams, StreamSnapshot{
			Name:     name,
			Values:   s.values,
			Known:    s.known,
			Active:   s.live() && now.Sub(s.lastSeen) < h.cfg.Silence,
			LastSeen: s.lastSeen,
			Peer:     s.peer,
			Encode:   s.encode,

			Started:    s.started,
			Quantizers: slices.Clone(s.quantizers),
			Lag:        s.lag.seconds,
			HasLag:     s.lag.known,
			Logs:       s.logs,
			HasLogs:    s.hasLogs,
			Profile:    s.profile,
		})
		s.mu.Unlock()
	}
	h.mu.RUnlock()
	sort.Slice(snap.Streams, func(i, j int) bool { return snap.Streams[i].Name < snap.Streams[j].Name })
	return snap
}

// Prune forgets streams finished longer ago than the retention, and
// reports whether the hub is full of live streams (a new one is refused).
func (h *Hub) Prune() (full bool) {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	live := 0
	for name, s := range h.streams {
		s.mu.Lock()
		expired := s.finished() && now.Sub(s.closedAt) >= h.cfg.Retention
		if !s.finished() {
			live++ // fed by a connection: no slot to take
		}
		s.mu.Unlock()
		if expired {
			delete(h.streams, name)
			h.Changed()
		}
	}
	return live >= h.cfg.MaxStreams
}

// setQuantizer records an output's q. Called with s.mu held.
func (s *stream) setQuantizer(q Quantizer) {
	for i := range s.quantizers {
		if s.quantizers[i].Output == q.Output {
			s.quantizers[i].Q = q.Q
			return
		}
	}
	if len(s.quantizers) < MaxOutputs { // the parser names no more per encode
		s.quantizers = append(s.quantizers, q)
	}
}

// realtimeLag is how far an encode has fallen behind realtime: the wall
// time since its first report of a media time, less the media time encoded
// since. A live encode that keeps up holds it near 0; one falling behind
// grows it; a file encoded faster than realtime drives it below 0.
type realtimeLag struct {
	known   bool
	wall    time.Time // of the first report with a media time
	media   float64   // its media time
	seconds float64   // as of the latest report
}

func (l *realtimeLag) report(now time.Time, media float64) {
	if !l.known {
		*l = realtimeLag{known: true, wall: now, media: media}
	}
	l.seconds = now.Sub(l.wall).Seconds() - (media - l.media)
}
