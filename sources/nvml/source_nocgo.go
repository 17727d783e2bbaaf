//go:build !cgo

package nvml

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

var errNoCgo = errors.New("built without cgo (CGO_ENABLED=0): no NVML support; rebuild with CGO_ENABLED=1")

// Lib stands for the NVML library, which this build cannot call.
type Lib = any

// Config mirrors the cgo build's; this build only reports that it cannot read GPUs.
type Config struct {
	Lib                              Lib // ignored
	Interval, Timeout, RetryInterval time.Duration
	Log                              *slog.Logger
}

// Source is the no-cgo source: it serves no GPUs and says why.
type Source struct{ *sampling.Latest[Snapshot] }

// New returns a source that reports the missing NVML support.
func New(cfg Config) *Source {
	s := &Source{sampling.NewLatest(cfg.Log, "NVIDIA GPUs", &Snapshot{}, errNoCgo)}
	s.Sample(context.Background())
	return s
}

// Sample publishes the reason this build reads no GPU.
func (s *Source) Sample(context.Context)  { s.Publish(&Snapshot{}, errNoCgo, time.Now()) }
func (s *Source) Run(ctx context.Context) { <-ctx.Done() }
func (s *Source) Close()                  {}
