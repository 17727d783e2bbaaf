package sampling

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
)

func TestTrackerLogsChangesOnlyAndCounts(t *testing.T) {
	var buf bytes.Buffer
	tr := NewTracker(slog.New(slog.NewTextHandler(&buf, nil)), "RAPL", errors.New("not yet"))
	if tr.Health() == nil {
		t.Error("healthy before the first sample")
	}
	select {
	case <-tr.Ready():
		t.Fatal("ready before the first sample")
	default:
	}
	denied, missing := errors.New("permission denied"), errors.New("no such file")
	t0 := time.Unix(1_800_000_000, 0)
	for i, err := range []error{nil, nil, denied, denied, denied, missing, missing, nil, nil} {
		tr.Observe(err, t0.Add(time.Duration(i)*time.Second), time.Duration(i)*time.Millisecond)
	}
	<-tr.Ready()
	out := buf.String()
	if n := strings.Count(out, "not fully readable"); n != 2 {
		t.Errorf("%d problem lines, want 2 (one per distinct problem):\n%s", n, out)
	}
	if n := strings.Count(out, "readable again"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, out)
	}
	s := tr.Stats()
	if s.Errors != 5 || s.Duration != 8*time.Millisecond || !s.LastSuccess.Equal(t0.Add(8*time.Second)) {
		t.Errorf("stats %+v", s)
	}
	if tr.Health() != nil || tr.Generation() != 9 {
		t.Errorf("health %v generation %d, want nil and 9", tr.Health(), tr.Generation())
	}
}

func TestLatestPublish(t *testing.T) {
	type snap struct{ n int }
	l := NewLatest(nil, "x", &snap{}, errors.New("x not sampled yet"))
	if l.Snapshot().n != 0 || l.Health() == nil {
		t.Fatal("initial state")
	}
	g := l.Generation()
	l.Publish(&snap{7}, nil, time.Now())
	if l.Snapshot().n != 7 || l.Health() != nil || l.Generation() == g {
		t.Errorf("after publish: %+v %v %d", l.Snapshot(), l.Health(), l.Generation())
	}
}

func TestEverySamplesAtOnceThenOnInterval(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, func() time.Duration { return time.Millisecond }, func(context.Context) {
			if n.Add(1) == 5 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Every did not end with its context")
	}
	if n.Load() != 5 {
		t.Errorf("%d samples after cancel at the fifth", n.Load())
	}
}

// blockingSampler's first sample returns at once; the second blocks until
// the test ends, as a read of a FIFO or a hung mount would.
type blockingSampler struct {
	samples atomic.Int32
	blocked chan time.Time // receives, as the second sample blocks, when the first ended: before the second began
	release chan struct{}
	ended   time.Time
}

func newBlockingSampler(t *testing.T) *blockingSampler {
	b := &blockingSampler{blocked: make(chan time.Time, 1), release: make(chan struct{})}
	t.Cleanup(func() { close(b.release) })
	return b
}

func (b *blockingSampler) sample(tr *Tracker) func(context.Context) {
	return func(context.Context) {
		start := time.Now()
		if b.samples.Add(1) == 2 {
			b.blocked <- b.ended
			<-b.release
		}
		if tr != nil {
			tr.Observe(nil, time.Now(), time.Since(start))
		}
		b.ended = time.Now()
	}
}

// TestEveryReturnsWhileASampleIsStuck: shutdown never waits on a sample
// that does not return: Every returns once its context ends, leaves the
// stuck sample behind, and starts no other.
func TestEveryReturnsWhileASampleIsStuck(t *testing.T) {
	b := newBlockingSampler(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	returned := make(chan time.Time)
	go func() {
		Every(ctx, func() time.Duration { return 10 * time.Millisecond }, b.sample(nil))
		returned <- time.Now()
	}()
	<-b.blocked
	cancelled := time.Now()
	cancel()
	select {
	case at := <-returned:
		t.Logf("Every returned %v after its context ended, the sample still blocked", at.Sub(cancelled))
	case <-time.After(30 * time.Second):
		t.Fatal("Every still waits on a stuck sample 30 s after its context ended")
	}
	if n := b.samples.Load(); n != 2 {
		t.Errorf("%d samples started, want 2 (none beside the stuck one)", n)
	}
}

// TestTrackerReportsAStuckSample: a sample that has run for StuckAfter
// intervals is reported by Health and logged once; once it returns,
// health is the sample's own again and the log says so.
func TestTrackerReportsAStuckSample(t *testing.T) {
	const interval = MinStuck / 2
	var logs syncBuffer
	tr := NewTracker(slog.New(slog.NewTextHandler(&logs, nil)), "RAPL", errors.New("not yet"))
	b := newBlockingSampler(t)
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() { defer close(ended); tr.Every(ctx, func() time.Duration { return interval }, b.sample(tr)) }()
	defer func() { cancel(); <-ended }()

	firstEnded := <-b.blocked
	blocked := time.Now()
	var err error
	waitFor(t, func() bool { err = tr.Health(); return err != nil })
	t.Logf("stuck sample reported %v after it blocked (interval %v): %v", time.Since(blocked), interval, err)
	if since := time.Since(firstEnded); since < StuckAfter*interval {
		t.Errorf("reported %v after the sample before it ended, before %d intervals", since, StuckAfter)
	}
	if !strings.Contains(err.Error(), "RAPL sampling is stuck") {
		t.Errorf("health %v, want it stuck", err)
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "sampling stuck") })
	if b.samples.Load() != 2 {
		t.Errorf("%d samples started while one was stuck", b.samples.Load())
	}

	b.release <- struct{}{} // unblocks the stuck sample; Cleanup's close then finds none
	waitFor(t, func() bool { return tr.Health() == nil && strings.Contains(logs.String(), "no longer stuck") })
	if n := strings.Count(logs.String(), "sampling stuck"); n != 1 {
		t.Errorf("stuck logged %d times, want once:\n%s", n, logs.String())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	exportertest.WaitFor(t, 30*time.Second, cond)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
