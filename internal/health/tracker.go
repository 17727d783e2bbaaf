// Package health follows a sampling source's health: it logs changes — once
// when a problem starts or changes, once when it clears — instead of once
// per sample, so an outage does not flood the log; and it keeps the figures
// of the exporter's self-metrics (last collection duration, errors, time of
// the last good sample).
package health

import (
	"log/slog"
	"sync"
	"time"
)

// Tracker observes every sample of one source.
type Tracker struct {
	Logger *slog.Logger
	What   string // e.g. "RAPL", "NVIDIA GPUs", "docker"

	mu    sync.Mutex
	last  string
	stats Stats
}

// Stats are a source's collection figures.
type Stats struct {
	Duration    time.Duration // of the latest collection
	Errors      uint64        // collections that failed, wholly or in part
	LastSuccess time.Time     // end of the latest collection without error
}

// Observe takes the latest sample's health (nil: healthy), when it ended and how long it took.
func (t *Tracker) Observe(err error, end time.Time, took time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.Duration = took
	if err != nil {
		t.stats.Errors++
	} else {
		t.stats.LastSuccess = end
	}
	text := ""
	if err != nil {
		text = err.Error()
	}
	switch {
	case text == t.last:
	case text != "":
		t.Logger.Warn(t.What+" not fully readable; serving what can be read and retrying", "err", err)
	default:
		t.Logger.Info(t.What + " readable again")
	}
	t.last = text
}

// Stats returns the figures so far.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}
