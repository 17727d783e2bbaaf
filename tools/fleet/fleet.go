package fleet

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
)

// Fleet is simulated workers pushing to one endpoint.
type Fleet struct {
	push     Push
	base     pipeline.Config // the process's own, read once
	baseErr  error
	log      *slog.Logger
	problems *problemCounter

	mu      sync.Mutex
	workers []*Worker
}

// New returns an empty fleet that will push as push says. log receives the
// workers' warnings and errors (export outages); Problems counts them.
func New(push Push, log *slog.Logger) *Fleet {
	problems := newProblemCounter(log.Handler())
	base, err := pipeline.ConfigFromEnv()
	return &Fleet{push: push, base: base, baseErr: err, log: slog.New(problems), problems: problems}
}

// Grow starts workers until the fleet has n, their starts spread evenly
// over one push interval, as the pushes of workers started at random
// times are: it returns about an interval later, or when ctx ends.
func (f *Fleet) Grow(ctx context.Context, n int) error {
	if f.baseErr != nil {
		return f.baseErr
	}
	from := f.Len()
	if n <= from {
		return nil
	}
	step := f.push.Interval / time.Duration(n-from)
	next := time.Now()
	for i := from; i < n; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(next)):
		}
		w, err := StartWorker(ctx, i, f.push, f.base, f.log)
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.workers = append(f.workers, w)
		f.mu.Unlock()
		next = next.Add(step)
	}
	return nil
}

// Len is how many workers run.
func (f *Fleet) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.workers)
}

// Workers are the fleet's workers, in the order they started.
func (f *Fleet) Workers() []*Worker {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Worker(nil), f.workers...)
}

// Problems is how many warnings and errors the workers have logged: each
// export outage of a worker counts once when it starts.
func (f *Fleet) Problems() (n int64, last string) { return f.problems.get() }

// Close stops every worker, each flushing a last push within ctx. What
// the workers log from now on is dropped and not counted: a push that was
// under way ends canceled.
func (f *Fleet) Close(ctx context.Context) error {
	f.problems.tally.closing.Store(true)
	f.mu.Lock()
	workers := f.workers
	f.workers = nil
	f.mu.Unlock()
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Go(func() { errs[i] = w.Close(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// problemCounter passes records on to next and counts those at warning
// level and above; the copies WithAttrs and WithGroup make share the count.
type problemCounter struct {
	next  slog.Handler
	tally *tally
}

type tally struct {
	n       atomic.Int64
	last    atomic.Pointer[string]
	closing atomic.Bool
}

func newProblemCounter(next slog.Handler) *problemCounter {
	return &problemCounter{next: next, tally: &tally{}}
}

func (h *problemCounter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *problemCounter) Handle(ctx context.Context, r slog.Record) error {
	if h.tally.closing.Load() {
		return nil
	}
	if r.Level >= slog.LevelWarn {
		h.tally.n.Add(1)
		h.tally.last.Store(&r.Message)
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *problemCounter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &problemCounter{next: h.next.WithAttrs(attrs), tally: h.tally}
}

func (h *problemCounter) WithGroup(name string) slog.Handler {
	return &problemCounter{next: h.next.WithGroup(name), tally: h.tally}
}

func (h *problemCounter) get() (int64, string) {
	if last := h.tally.last.Load(); last != nil {
		return h.tally.n.Load(), *last
	}
	return h.tally.n.Load(), ""
}
