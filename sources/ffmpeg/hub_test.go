package ffmpeg

import (
	"context"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestHub(maxStreams int) (*Hub, *fakeClock) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	cfg := DefaultConfig
	cfg.MaxStreams = maxStreams
	cfg.Clock = clock.Now
	return NewHub(cfg), clock
}

func streamByName(t *testing.T, h *Hub, name string) (StreamSnapshot, bool) {
	t.Helper()
	for _, s := range h.Snapshot().Streams {
		if s.Name == name {
			return s, true
		}
	}
	return StreamSnapshot{}, false
}

func open(t *testing.T, h *Hub, name string) *Conn {
	t.Helper()
	c, err := h.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStreamLifecycle(t *testing.T) {
	h, clock := newTestHub(8)
	c := open(t, h, "job")
	if err := c.Consume(strings.NewReader("frame=10\nfps=25\nbitrate=N/A\nprogress=continue\n")); err != nil {
		t.Fatal(err)
	}
	s, _ := streamByName(t, h, "job")
	if !s.Active || s.Values[Frames] != 10 || !s.Has(FPS) || s.Has(Bitrate) {
		t.Fatalf("after one block: %+v", s)
	}

	// Silent for longer than the silence window: inactive, values kept.
	clock.Add(DefaultConfig.Silence)
	if s, _ := streamByName(t, h, "job"); s.Active || s.Values[Frames] != 10 {
		t.Fatalf("silent stream: %+v", s)
	}
	c.Line([]byte("frame=20"))
	c.Line([]byte("progress=end"))
	if s, _ := streamByName(t, h, "job"); s.Active || s.Values[Frames] != 20 {
		t.Fatalf("after progress=end: %+v", s)
	}
	c.Close()
	c.Close() // twice is harmless

	// Kept for the retention, then gone.
	clock.Add(DefaultConfig.Retention - time.Second)
	h.Prune()
	if _, ok := streamByName(t, h, "job"); !ok {
		t.Fatal("finished stream dropped before its retention")
	}
	clock.Add(time.Second)
	h.Prune()
	if _, ok := streamByName(t, h, "job"); ok {
		t.Fatal("finished stream kept past its retention")
	}
}

func TestClosedConnectionEndsStream(t *testing.T) {
	h, _ := newTestHub(8)
	c := open(t, h, "job")
	c.Line([]byte("frame=1"))
	c.Line([]byte("progress=continue"))
	c.Close()
	if s, _ := streamByName(t, h, "job"); s.Active || s.Values[Frames] != 1 {
		t.Fatalf("after close: %+v", s)
	}
}

func TestReusedNameStartsAfresh(t *testing.T) {
	h, _ := newTestHub(8)
	c := open(t, h, "job")
	c.Line([]byte("frame=100"))
	c.Line([]byte("drop_frames=3"))
	c.Line([]byte("progress=end"))
	c.Close()
	c = open(t, h, "job")
	c.Line([]byte("frame=1"))
	c.Line([]byte("progress=continue"))
	s, _ := streamByName(t, h, "job")
	if !s.Active || s.Values[Frames] != 1 || s.Has(Dropped) {
		t.Fatalf("reused stream carries the old encode: %+v", s)
	}
}

func TestStreamLimitEvictsFinishedFirst(t *testing.T) {
	h, clock := newTestHub(2)
	a := open(t, h, "a")
	b := open(t, h, "b")
	if _, err := h.Open("c"); err != ErrTooManyStreams {
		t.Fatalf("third live stream: err %v, want ErrTooManyStreams", err)
	}
	a.Close()
	clock.Add(time.Second)
	b.Close()
	// Both finished: a new stream takes the slot of the one that finished first.
	open(t, h, "c")
	if _, ok := streamByName(t, h, "a"); ok {
		t.Error("oldest finished stream a not evicted")
	}
	if _, ok := streamByName(t, h, "b"); !ok {
		t.Error("stream b evicted instead of a")
	}
	// A second connection to the same name is refused, and counts nothing.
	if _, err := h.Open("c"); err != ErrStreamBusy {
		t.Errorf("second connection to a fed stream: err %v, want ErrStreamBusy", err)
	}
	if n := len(h.Snapshot().Streams); n != 2 {
		t.Errorf("%d streams, want 2", n)
	}
}

func TestInvalidNames(t *testing.T) {
	h, _ := newTestHub(8)
	for _, name := range []string{"", strings.Repeat("a", 65), "a/b", "a b", "ü", "a\n", `a"b`} {
		if _, err := h.Open(name); err != ErrStreamName {
			t.Errorf("Open(%q) err %v, want ErrStreamName", name, err)
		}
	}
	for _, name := range []string{"a", strings.Repeat("a", 64), "job-42_x.1"} {
		if _, err := h.Open(name); err != nil {
			t.Errorf("Open(%q): %v", name, err)
		}
	}
}

func TestLineCounters(t *testing.T) {
	h, _ := newTestHub(8)
	c := open(t, h, "job")
	body := "frame=1\nhello world\n" + strings.Repeat("x", MaxLineBytes+1) + "\n\x00\x01\x02binary\nprogress=continue\n"
	if err := c.Consume(strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	got := h.Snapshot().Lines
	if got[LinesParsed] != 2 || got[LinesIgnored] != 2 || got[LinesOversized] != 1 {
		t.Errorf("line counters %v, want parsed 2 ignored 2 oversized 1", got)
	}
	if s, _ := streamByName(t, h, "job"); s.Values[Frames] != 1 {
		t.Errorf("the good lines around the bad ones were lost: %+v", s)
	}
}

// TestHealthAtStreamLimit: a hub full of live streams says so on health
// (new streams get 429), and is healthy again once one finishes; every
// ingested block moves the generation.
func TestHealthAtStreamLimit(t *testing.T) {
	h, _ := newTestHub(2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	<-h.Ready()
	if err := h.Health(); err != nil {
		t.Fatalf("empty hub: %v", err)
	}
	a, b := open(t, h, "a"), open(t, h, "b")
	gen := h.Generation()
	a.Line([]byte("frame=1"))
	a.Line([]byte("progress=continue"))
	if h.Generation() == gen {
		t.Error("an ingested block did not move the generation")
	}
	waitHealth := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := h.Health()
			if (want == "" && err == nil) || (want != "" && err != nil && strings.Contains(err.Error(), want)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("health %v, want %q", err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitHealth("stream limit reached")
	if _, err := h.Open("c"); err != ErrTooManyStreams {
		t.Errorf("third stream: %v", err)
	}
	b.Close()
	waitHealth("")
	a.Close()
}

// TestRejectedValueKeepsReading: a value that cannot be real is counted
// and leaves the stream's reading as it was; the line's good values apply.
func TestRejectedValueKeepsReading(t *testing.T) {
	h, _ := newTestHub(8)
	c := open(t, h, "job")
	c.Line([]byte("frame=  10 fps=25 size=  1024kB time=00:00:01.00 speed=1x"))
	c.Line([]byte("frame=  20 fps=1e308 size=1e308kB time=1e300:00:00 speed=1x"))
	s, _ := streamByName(t, h, "job")
	if s.Values[Frames] != 20 || s.Values[FPS] != 25 || s.Values[Size] != 1024*1024 || s.Values[OutTime] != 1 {
		t.Errorf("after a line of impossible values: %+v", s.Values)
	}
	if got := h.Snapshot().Lines; got[LinesRejected] != 1 || got[LinesParsed] != 1 {
		t.Errorf("lines %v, want 1 parsed and 1 rejected", got)
	}
}

// TestBlocksAfterEndStartNewEncode: a connection that goes on sending
// after progress=end keeps its stream past the retention: each block after
// the end starts the next encode, live again.
func TestBlocksAfterEndStartNewEncode(t *testing.T) {
	h, clock := newTestHub(8)
	c := open(t, h, "loop")
	c.Line([]byte("frame=100"))
	c.Line([]byte("drop_frames=3"))
	c.Line([]byte("progress=end"))
	first, _ := streamByName(t, h, "loop")
	for i := range 10 {
		clock.Add(DefaultConfig.Retention / 4)
		c.Line([]byte("frame=" + strconv.Itoa(i+1)))
		c.Line([]byte("progress=continue"))
		h.Prune()
		s, ok := streamByName(t, h, "loop")
		if !ok {
			t.Fatalf("stream gone %v after progress=end while its connection still sends", time.Duration(i+1)*DefaultConfig.Retention/4)
		}
		if !s.Active || s.Values[Frames] != float64(i+1) || s.Has(Dropped) || !s.Started.After(first.Started) {
			t.Fatalf("block %d after the end: %+v", i, s)
		}
	}
	// Ended, still open and silent: kept while the connection may send more.
	c.Line([]byte("progress=end"))
	clock.Add(2 * DefaultConfig.Retention)
	h.Prune()
	if s, ok := streamByName(t, h, "loop"); !ok || s.Active {
		t.Fatalf("ended stream with an open connection: %+v %v", s, ok)
	}
	c.Close()
	h.Prune()
	if _, ok := streamByName(t, h, "loop"); ok {
		t.Error("stream kept past its retention once its connection closed")
	}
}

// TestStartedAndRealtimeLag: an encode's start, and its lag behind
// realtime: wall time since its first media time less media time since.
func TestStartedAndRealtimeLag(t *testing.T) {
	h, clock := newTestHub(8)
	t0 := clock.Now()
	c := open(t, h, "live")
	block := func(outTime string) StreamSnapshot {
		c.Line([]byte("out_time=" + outTime))
		c.Line([]byte("progress=continue"))
		s, _ := streamByName(t, h, "live")
		return s
	}
	clock.Add(time.Second)
	if s := block("N/A"); !s.Started.Equal(t0) || s.HasLag {
		t.Fatalf("before any media time: started %v (want %v), lag %v %v", s.Started, t0, s.Lag, s.HasLag)
	}
	clock.Add(time.Second)
	if s := block("00:00:00.500000"); !s.HasLag || s.Lag != 0 {
		t.Fatalf("first media time: lag %v %v, want 0", s.Lag, s.HasLag)
	}
	for _, step := range []struct {
		wall    time.Duration
		outTime string
		lag     float64
	}{
		{2 * time.Second, "00:00:01.500000", 1},   // 2 s of wall, 1 s of media
		{2 * time.Second, "00:00:02.000000", 2.5}, // falling further behind
		{time.Second, "00:00:03.000000", 2.5},     // keeping up again
	} {
		clock.Add(step.wall)
		if s := block(step.outTime); s.Lag != step.lag {
			t.Errorf("out_time %s: lag %v, want %v", step.outTime, s.Lag, step.lag)
		}
	}
	c.Close()
	// A new encode under the name starts its own clock.
	clock.Add(time.Minute)
	c = open(t, h, "live")
	if s := block("00:00:00.040000"); !s.Started.Equal(clock.Now()) || s.Lag != 0 {
		t.Errorf("new encode: started %v lag %v", s.Started, s.Lag)
	}
	c.Close()
}

// TestQuantizersAndLogsOfStream: each output's q is kept per stream (-1
// keeps the last), log messages count by level over the stream's life,
// and a new encode forgets the quantizers but not the counts.
func TestQuantizersAndLogsOfStream(t *testing.T) {
	h, _ := newTestHub(8)
	c := open(t, h, "two")
	for _, line := range []string{
		"[h264 @ 0x1] [error] error while decoding MB 1 1, bytestream 5",
		"stream_0_0_q=28.0", "stream_1_0_q=4.7", "progress=continue",
		"[mpegts @ 0x2] [warning] Packet corrupt (stream = 0, dts = 1).",
		"stream_0_0_q=-1.0", "stream_1_0_q=2.0", "progress=end",
	} {
		c.Line([]byte(line))
	}
	s, _ := streamByName(t, h, "two")
	if !slices.Equal(s.Quantizers, []Quantizer{{"0:0", 28}, {"1:0", 2}}) {
		t.Errorf("quantizers %+v", s.Quantizers)
	}
	if s.Logs != [NumLevels]uint64{LevelError: 1, LevelWarning: 1} {
		t.Errorf("logs %v", s.Logs)
	}
	c.Close()
	c = open(t, h, "two")
	c.Line([]byte("[error] Conversion failed!"))
	c.Line([]byte("frame=1"))
	c.Line([]byte("progress=continue"))
	s, _ = streamByName(t, h, "two")
	if len(s.Quantizers) != 0 || s.Logs != [NumLevels]uint64{LevelError: 2, LevelWarning: 1} {
		t.Errorf("next encode: quantizers %+v logs %v", s.Quantizers, s.Logs)
	}
	c.Close()
}

// TestOversizedCountedAtOnce: an oversized line is counted as soon as it
// passes the limit, not when (if ever) its connection closes.
func TestOversizedCountedAtOnce(t *testing.T) {
	h, _ := newTestHub(8)
	c := open(t, h, "long")
	pr, pw := io.Pipe()
	done := make(chan error)
	go func() { done <- c.Consume(pr) }()
	go pw.Write([]byte(strings.Repeat("x", MaxLineBytes+10))) // no end of line: it stays open
	waitFor(t, func() bool { return h.Snapshot().Lines[LinesOversized] == 1 })
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := h.Snapshot().Lines[LinesOversized]; n != 1 {
		t.Errorf("oversized %d after close, want 1 (counted once)", n)
	}
	c.Close()
}

// TestLogsUnknownWithoutStderr: -progress alone says nothing of errors, so
// the counts stay unknown; ffmpeg's stderr (a status line is enough) makes
// them known, zero or not.
func TestLogsUnknownWithoutStderr(t *testing.T) {
	h, _ := newTestHub(8)
	c := open(t, h, "job")
	if err := c.Consume(strings.NewReader(progressBlock + "new_key_of_ffmpeg_8=1\n")); err != nil {
		t.Fatal(err)
	}
	if s, _ := streamByName(t, h, "job"); s.HasLogs {
		t.Errorf("-progress only: log counts known: %v", s.Logs)
	}
	c.Line([]byte("frame=  240 fps= 30 q=28.0 size=    1024kB time=00:00:08.00 bitrate=1048.6kbits/s speed=1.01x"))
	if s, _ := streamByName(t, h, "job"); !s.HasLogs || s.Logs != [NumLevels]uint64{} {
		t.Errorf("after a status line: known %v counts %v, want known zeros", s.HasLogs, s.Logs)
	}
	c.Close()
}
