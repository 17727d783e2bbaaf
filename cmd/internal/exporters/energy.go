package exporters

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/encodeprofile"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/energy"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// energyFlags configure energy per encode, served on the ffmpeg port.
type energyFlags struct {
	interval   time.Duration
	idleWatts  [energy.NumDevices]float64
	maxLadders int
}

func (f *energyFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.interval, "energy.interval", time.Second, "energy per encode: sampling window (0 turns it off)")
	fs.Float64Var(&f.idleWatts[energy.CPU], "energy.idle-watts.cpu", 0, "energy per encode: idle power of the CPU packages and their memory (RAPL package + dram), W; 0: estimated from the windows")
	fs.Float64Var(&f.idleWatts[energy.GPU], "energy.idle-watts.gpu", 0, "energy per encode: idle power of each GPU, W; 0: estimated from the windows")
	fs.IntVar(&f.maxLadders, "energy.max-ladders", encodeprofile.DefaultMaxLadders, "the leaderboard keeps this many distinct output ladders apart; later ones count as other")
}

// open builds energy per encode over hub and the process's readers: its
// windows follow the shared RAPL reader's samples, so that the energy and
// the CPU times they are shared by cover the same window, and take the
// shared NVML reader's latest samples. nil when turned off.
func (f energyFlags) open(r *Readers, hub *ffmpeg.Hub, log *slog.Logger) (*energy.Source, error) {
	if f.interval < 0 {
		return nil, fmt.Errorf("--energy.interval %v: must not be negative", f.interval)
	}
	if f.interval == 0 {
		return nil, nil
	}
	if f.maxLadders < 1 {
		return nil, fmt.Errorf("--energy.max-ladders %d: must be at least 1", f.maxLadders)
	}
	for d, w := range f.idleWatts {
		if !(w >= 0 && w < 1e6) {
			return nil, fmt.Errorf("--energy.idle-watts.%s %v: must be 0 (estimate) or a power in watts", energy.Devices[d], w)
		}
	}
	proc, err := r.Procfs()
	if err != nil {
		return nil, err
	}
	meter := r.RAPL()
	return energy.New(energy.Config{
		Proc:       proc,
		Streams:    hub,
		RAPL:       meter,
		Windows:    meter.Follow,
		GPUs:       r.GPUs(),
		Interval:   f.interval,
		IdleWatts:  f.idleWatts,
		MaxLadders: f.maxLadders,
		Packages:   r.Sockets(),
		Log:        log,
	}), nil
}

// withEnergy is the ffmpeg source with energy per encode: both run as long
// as the port, and report as one.
type withEnergy struct {
	sampling.Source // the hub, or the hub fed from stdin
	energy          *energy.Source
	gpus            *GPUReader // sampled while energy per encode runs
	ready           chan struct{}
}

func newWithEnergy(s sampling.Source, e *energy.Source, gpus *GPUReader) *withEnergy {
	return &withEnergy{Source: s, energy: e, gpus: gpus, ready: make(chan struct{})}
}

// Run runs both until ctx ends or the ffmpeg source ends by itself
// (--stdin at the end of its input).
func (w *withEnergy) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	go func() { defer func() { done <- struct{}{} }(); w.energy.Run(ctx) }()
	go func() { defer func() { done <- struct{}{} }(); w.gpus.Run(ctx) }()
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
