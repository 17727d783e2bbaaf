// Package sampling is the contract every source keeps with the exporters,
// and the pieces each source would otherwise write for itself: the one
// interval loop (Every), and the record of its latest sample (Tracker,
// Latest) with its health, collection figures, first-sample signal and
// generation.
//
// A source reads the world in the background and publishes snapshots;
// instruments only read the latest one. Nothing here imports OpenTelemetry.
package sampling

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Source is what an exporter runs and watches.
type Source interface {
	// Run samples until ctx ends. A source that finishes by itself (the
	// ffmpeg source at the end of --stdin) returns early.
	Run(ctx context.Context)
	// Health is nil when the latest sample read everything it should.
	Health() error
	// Stats are the collection figures for the self-metrics.
	Stats() Stats
	// Ready is closed once the first sample is published, healthy or not.
	Ready() <-chan struct{}
	// Generation rises whenever what the source serves may have changed.
	Generation() uint64
}

// Stats are a source's collection figures.
type Stats struct {
	Duration    time.Duration // of the latest collection
	Errors      uint64        // collections that failed, wholly or in part
	LastSuccess time.Time     // end of the latest collection without error
}

// Every calls sample at once and then, each time it returns, again after
// interval() until ctx ends. interval is asked anew each round, so a source
// can shorten it (RAPL near a counter wrap) or lengthen it (NVML missing).
//
// Every returns once ctx ends even if a sample never does (a read blocked
// on a hung mount or a driver): it gives the sample in flight up to Settle
// to see ctx and finish, none if it is stuck already, then leaves it to
// finish on its own. It never starts a sample while one is in flight.
func Every(ctx context.Context, interval func() time.Duration, sample func(context.Context)) {
	every(ctx, interval, sample, nil)
}

// Settle is the longest Every waits, once ctx ends, for the sample in
// flight: samples that heed ctx end well within it.
const Settle = 500 * time.Millisecond

// StuckAfter is how many intervals a sample may run before it is stuck,
// and MinStuck the least time: a busy machine delays a sample of a short
// interval that much with nothing wrong.
const (
	StuckAfter = 2
	MinStuck   = time.Second
)

// Every is the package's Every, watched by t: a sample that has run for
// StuckAfter intervals (MinStuck at least) is stuck, and Health says so,
// naming how long it has run, until it finishes (logged once each way).
func (t *Tracker) Every(ctx context.Context, interval func() time.Duration, sample func(context.Context)) {
	every(ctx, interval, sample, t)
}

func every(ctx context.Context, interval func() time.Duration, sample func(context.Context), t *Tracker) {
	iv := interval() // what the first sample is measured against
	timer := time.NewTimer(0)
	defer timer.Stop()
	done := make(chan struct{}, 1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if ctx.Err() != nil {
			return
		}
		begin := time.Now()
		stuckAt := begin.Add(max(StuckAfter*iv, MinStuck))
		t.begin(begin, stuckAt)
		go func() {
			sample(ctx)
			done <- struct{}{}
		}()
		if !await(ctx, done, stuckAt, t) {
			return
		}
		iv = interval()
		timer.Reset(iv)
	}
}

// await waits for the sample that is stuck from stuckAt to signal done,
// telling t when it is stuck and when it ends; false when ctx ended first.
func await(ctx context.Context, done <-chan struct{}, stuckAt time.Time, t *Tracker) bool {
	stuck := time.NewTimer(time.Until(stuckAt))
	defer stuck.Stop()
	for {
		select {
		case <-done:
			t.end()
			return true
		case <-stuck.C:
			t.stuck()
		case <-ctx.Done():
			settle := time.NewTimer(min(Settle, time.Until(stuckAt)))
			defer settle.Stop()
			select {
			case <-done:
				t.end()
			case <-settle.C:
			}
			return false
		}
	}
}

// Tracker records every sample of one source: it keeps the health and the
// figures, signals the first sample, and logs health changes once when a
// problem starts or changes and once when it clears, not once per sample,
// so an outage does not flood the log.
type Tracker struct {
	log   *slog.Logger
	what  string
	ready chan struct{}
	once  sync.Once
	gen   atomic.Uint64

	mu    sync.Mutex
	err   error
	text  string
	stats Stats
	// The sample in flight under Every: when it began and when it is
	// stuck from. Zero when none is.
	began, stuckAt time.Time
	saidStuck      bool // the log has said the sample in flight is stuck
}

// NewTracker returns a tracker for the source described by what (as the
// log names it: "RAPL", "NVIDIA GPUs", "docker"). Until the first Observe
// its health is notYet.
func NewTracker(log *slog.Logger, what string, notYet error) *Tracker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tracker{log: log, what: what, ready: make(chan struct{}), err: notYet}
}

// Observe records a sample that ended at end, took took and left err
// (nil: healthy).
func (t *Tracker) Observe(err error, end time.Time, took time.Duration) {
	t.mu.Lock()
	t.err = err
	t.stats.Duration = took
	text := ""
	if err != nil {
		t.stats.Errors++
		text = err.Error()
	} else {
		t.stats.LastSuccess = end
	}
	switch {
	case text == t.text:
	case text != "":
		t.log.Warn(t.what+" not fully readable; serving what can be read and retrying", "err", err)
	default:
		t.log.Info(t.what + " readable again")
	}
	t.text = text
	t.mu.Unlock()
	t.Changed()
	t.once.Do(func() { close(t.ready) })
}

// Changed marks that what the source serves may have changed without a
// sample (an ingest line moved a stream).
func (t *Tracker) Changed() { t.gen.Add(1) }

// Health is the latest sample's error, or that the sample in flight is
// stuck.
func (t *Tracker) Health() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := time.Now(); !t.began.IsZero() && !now.Before(t.stuckAt) {
		return t.stuckError(now)
	}
	return t.err
}

func (t *Tracker) stuckError(now time.Time) error {
	err := fmt.Errorf("%s sampling is stuck: a sample has run for %v, past %d sampling intervals, and not returned; serving the last complete sample",
		t.what, now.Sub(t.began).Round(time.Millisecond), StuckAfter)
	if t.err != nil {
		err = fmt.Errorf("%w, whose error was: %w", err, t.err)
	}
	return err
}

// begin records that a sample began, and when it is stuck from.
func (t *Tracker) begin(begin, stuckAt time.Time) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.began, t.stuckAt = begin, stuckAt
	t.mu.Unlock()
}

// stuck logs, once per sample, that the sample in flight is stuck.
func (t *Tracker) stuck() {
	if t == nil {
		return
	}
	t.mu.Lock()
	err := t.stuckError(time.Now())
	t.saidStuck = true
	t.mu.Unlock()
	t.log.Warn(t.what+" sampling stuck; /health reports it until the sample returns", "err", err)
	t.Changed()
}

// end records that the sample in flight returned.
func (t *Tracker) end() {
	if t == nil {
		return
	}
	t.mu.Lock()
	began, wasStuck := t.began, t.saidStuck
	t.began, t.stuckAt, t.saidStuck = time.Time{}, time.Time{}, false
	t.mu.Unlock()
	if wasStuck {
		t.log.Info(t.what+" sampling no longer stuck: the sample returned", "after", time.Since(began).Round(time.Millisecond))
		t.Changed()
	}
}

// Stats returns the figures so far.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// Ready is closed by the first Observe.
func (t *Tracker) Ready() <-chan struct{} { return t.ready }

// Generation counts the samples and changes so far.
func (t *Tracker) Generation() uint64 { return t.gen.Load() }

// Latest is a Tracker that also holds the latest snapshot of type S.
type Latest[S any] struct {
	*Tracker
	snap atomic.Pointer[S]
}

// NewLatest returns a Latest serving empty until the first Publish, with
// notYet as its health.
func NewLatest[S any](log *slog.Logger, what string, empty *S, notYet error) *Latest[S] {
	l := &Latest[S]{Tracker: NewTracker(log, what, notYet)}
	l.snap.Store(empty)
	return l
}

// Publish makes snap the latest snapshot, then records the sample. start is
// when the sample began.
func (l *Latest[S]) Publish(snap *S, err error, start time.Time) {
	l.snap.Store(snap)
	now := time.Now()
	l.Observe(err, now, now.Sub(start))
}

// Snapshot returns the latest snapshot; it never touches the world.
func (l *Latest[S]) Snapshot() *S { return l.snap.Load() }
