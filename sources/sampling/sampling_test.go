package sampling

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
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
