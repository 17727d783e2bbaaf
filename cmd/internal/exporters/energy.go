package exporters

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/energy"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// energyFlags configure energy per encode, served on the ffmpeg port.
type energyFlags struct {
	interval      time.Duration
	sysfs, procfs string
}

func (f *energyFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.interval, "energy.interval", time.Second, "energy per encode: sampling window (0 turns it off)")
	SharedStringVar(fs, &f.sysfs, "path.sysfs", "/sys", "sysfs mount point")
	SharedStringVar(fs, &f.procfs, "path.procfs", "/proc", "procfs mount point")
}

// open builds energy per encode over hub: its own RAPL and NVML readers,
// sampled at each window so that the energy and the CPU and GPU use they
// are shared by cover the same window (the cpu and gpu ports sample theirs
// on their own schedules, and may be off). nil when turned off.
func (f energyFlags) open(hub *ffmpeg.Hub, log *slog.Logger) (*energy.Source, error) {
	if f.interval < 0 {
		return nil, fmt.Errorf("--energy.interval %v: must not be negative", f.interval)
	}
	if f.interval == 0 {
		return nil, nil
	}
	proc, err := procfs.New(f.procfs)
	if err != nil {
		return nil, err
	}
	quiet := slog.New(slog.DiscardHandler) // the cpu and gpu ports report on these; energy per encode reports what it misses itself
	return energy.New(energy.Config{
		Proc:     proc,
		Streams:  hub,
		RAPL:     rapl.New(rapl.Config{FS: os.DirFS(f.sysfs), Root: f.sysfs, Interval: f.interval, Log: quiet}),
		GPUs:     nvml.New(nvml.Config{Interval: f.interval, Timeout: 5 * time.Second, RetryInterval: 30 * time.Second, Log: quiet}),
		Interval: f.interval,
		Log:      log,
	}), nil
}

// withEnergy is the ffmpeg source with energy per encode: both run as long
// as the port, and report as one.
type withEnergy struct {
	sampling.Source // the hub, or the hub fed from stdin
	energy          *energy.Source
	ready           chan struct{}
}

func newWithEnergy(s sampling.Source, e *energy.Source) *withEnergy {
	return &withEnergy{Source: s, energy: e, ready: make(chan struct{})}
}

// Run runs both until ctx ends or the ffmpeg source ends by itself
// (--stdin at the end of its input).
func (w *withEnergy) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.energy.Run(ctx) }()
	go func() {
		for _, c := range []<-chan struct{}{w.Source.Ready(), w.energy.Ready()} {
			select {
			case <-c:
			case <-ctx.Done():
				return
			}
		}
		close(w.ready)
	}()
	w.Source.Run(ctx)
	cancel()
	<-done
}

func (w *withEnergy) Health() error { return errors.Join(w.Source.Health(), w.energy.Health()) }

// Stats add up the work of both; the last success is the older of theirs.
func (w *withEnergy) Stats() sampling.Stats {
	a, b := w.Source.Stats(), w.energy.Stats()
	last := a.LastSuccess
	if b.LastSuccess.Before(last) {
		last = b.LastSuccess
	}
	return sampling.Stats{Duration: a.Duration + b.Duration, Errors: a.Errors + b.Errors, LastSuccess: last}
}

func (w *withEnergy) Ready() <-chan struct{} { return w.ready }

// Generation moves whenever either's does: energy per encode publishes a
// window each interval, so a cached scrape never misses one.
func (w *withEnergy) Generation() uint64 { return w.Source.Generation() + w.energy.Generation() }

// ChangesIn is the hub's (a stream going silent changes what it serves with
// no generation bump), so that a cached /metrics expires then.
func (w *withEnergy) ChangesIn() (time.Duration, bool) {
	if e, ok := w.Source.(pipeline.Expiring); ok {
		return e.ChangesIn()
	}
	return 0, false
}
