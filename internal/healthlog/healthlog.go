// Package healthlog logs a source's health as it changes — once when a
// problem starts or changes, once when it clears — instead of once per
// sample, so an outage does not flood the log.
package healthlog

import "log/slog"

// Log remembers the last error it was told about.
type Log struct {
	Logger *slog.Logger
	What   string // e.g. "RAPL", "NVIDIA GPUs", "docker"
	last   string
}

// Observe takes the latest sample's health (nil: healthy).
func (l *Log) Observe(err error) {
	text := ""
	if err != nil {
		text = err.Error()
	}
	switch {
	case text == l.last:
	case text != "":
		l.Logger.Warn(l.What+" not fully readable; serving what can be read and retrying", "err", err)
	default:
		l.Logger.Info(l.What + " readable again")
	}
	l.last = text
}
