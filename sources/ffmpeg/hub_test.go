package ffmpeg

import (
	"context"
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
	// The same name may open a second connection without counting twice.
	open(t, h, "c")
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
