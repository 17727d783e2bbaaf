//go:build !cgo

package nvml

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/health"
)

var errNoCgo = errors.New("this gpu-exporter was built without cgo (CGO_ENABLED=0) and has no NVML support: rebuild with CGO_ENABLED=1")

// Config mirrors the cgo build's; this build only reports that it cannot read GPUs.
type Config struct {
	Interval, Timeout, RetryInterval time.Duration
	Log                              *slog.Logger
}

// Source is the no-cgo source: it serves no GPUs and says why.
type Source struct{ snap Snapshot }

// New returns a source that reports the missing NVML support.
func New(cfg Config) *Source {
	if cfg.Log != nil {
		cfg.Log.Error(errNoCgo.Error())
	}
	return &Source{snap: Snapshot{Err: errNoCgo}}
}

func (s *Source) Snapshot() *Snapshot     { return &s.snap }
func (s *Source) Health() error           { return errNoCgo }
func (s *Source) Sample(context.Context)  {}
func (s *Source) Run(ctx context.Context) { <-ctx.Done() }
func (s *Source) Close()                  {}

// Stats are empty: this build never collects.
func (s *Source) Stats() health.Stats { return health.Stats{} }
