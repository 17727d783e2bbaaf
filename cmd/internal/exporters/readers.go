package exporters

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/docker"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// Reads names the readers of the machine a source needs.
type Reads uint8

const (
	ReadsRAPL   Reads = 1 << iota // powercap under --path.sysfs
	ReadsNVML                     // the NVIDIA driver
	ReadsProcfs                   // --path.procfs
)

// Readers are the process's readers of the machine, each built once and
// handed to every port and join that reads it, as node_exporter registers
// --path.* once for all its collectors. worker-exporter's cpu port and
// energy per encode share one RAPL sampler (one wrap and plausibility
// state: what streams are charged can be checked against
// rapl_energy_joules_total), its gpu port and energy per encode one NVML
// sampler (one sweep per interval, one XID event set).
type Readers struct {
	sysfs, procfs string
	raplInterval  time.Duration
	nvml          nvml.Config

	// SysFS and NVML are what RAPL and NVML read through: nil for the
	// machine's own (rapl.SysFS(--path.sysfs), libnvidia-ml). Tests set them.
	SysFS fs.FS
	NVML  nvml.Lib

	log    *slog.Logger
	logged map[string]bool // the sources whose port is served: a reader logs under its own source's name only then

	mu   sync.Mutex
	rapl *RAPLReader
	gpus *GPUReader
	proc *procfs.FS
}

// NewReaders returns readers with the defaults of their flags.
func NewReaders() *Readers {
	return &Readers{
		sysfs: "/sys", procfs: "/proc", raplInterval: time.Second,
		nvml: nvml.Config{Interval: time.Second, Timeout: 5 * time.Second, RetryInterval: 30 * time.Second},
		log:  slog.New(slog.DiscardHandler),
	}
}

// Register adds the flags of the readers reads names, once however many
// sources read them.
func (r *Readers) Register(fs *flag.FlagSet, reads Reads) {
	if reads&ReadsRAPL != 0 {
		fs.StringVar(&r.sysfs, "path.sysfs", r.sysfs, "sysfs mount point")
		fs.DurationVar(&r.raplInterval, "rapl.interval", r.raplInterval, "RAPL sampling interval (shortened automatically so no counter wrap is missed; never below "+rapl.MinInterval.String()+")")
	}
	if reads&ReadsNVML != 0 {
		fs.DurationVar(&r.nvml.Interval, "nvml.interval", r.nvml.Interval, "NVML sampling interval")
		fs.DurationVar(&r.nvml.Timeout, "nvml.timeout", r.nvml.Timeout, "an NVML sample taking longer is reported as stuck; scrapes keep the previous values")
		fs.DurationVar(&r.nvml.RetryInterval, "nvml.retry-interval", r.nvml.RetryInterval, "how often to retry loading NVML while it is missing")
	}
	if reads&ReadsProcfs != 0 {
		fs.StringVar(&r.procfs, "path.procfs", r.procfs, "procfs mount point")
	}
}

// serving sets the process's logger and the sources it serves a port for,
// and checks the paths they read: a typo in --path.sysfs is an error at
// start, as one in --path.procfs is, not "no powercap" for good.
func (r *Readers) serving(log *slog.Logger, ports []Port) error {
	r.log, r.logged = log, map[string]bool{}
	var reads Reads
	for _, p := range ports {
		r.logged[p.Source.Name] = true
		reads |= p.Source.Reads
	}
	if reads&ReadsRAPL != 0 && r.SysFS == nil {
		if fi, err := os.Stat(r.sysfs); err != nil {
			return fmt.Errorf("--path.sysfs %s is not a sysfs mount: %w", r.sysfs, err)
		} else if !fi.IsDir() {
			return fmt.Errorf("--path.sysfs %s is not a sysfs mount: not a directory", r.sysfs)
		}
	}
	if reads&ReadsProcfs != 0 {
		if _, err := r.Procfs(); err != nil {
			return err
		}
	}
	return nil
}

// logFor is the logger of the reader of source's figures: that source's
// when its port is served, else quiet (energy per encode says itself what
// it misses).
func (r *Readers) logFor(source string) *slog.Logger {
	if r.logged[source] {
		return r.log.With("source", source)
	}
	return slog.New(slog.DiscardHandler)
}

// RAPL is the process's RAPL reader, built on first use.
func (r *Readers) RAPL() *RAPLReader {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rapl == nil {
		fsys := r.SysFS
		if fsys == nil {
			fsys = rapl.SysFS(r.sysfs)
		}
		src := rapl.New(rapl.Config{FS: fsys, Root: r.sysfs, Interval: r.raplInterval, Log: r.logFor("cpu")})
		r.rapl = &RAPLReader{Source: src}
		r.rapl.users.run = r.rapl.loop
	}
	return r.rapl
}

// GPUs is the process's NVML reader, built on first use.
func (r *Readers) GPUs() *GPUReader {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gpus == nil {
		cfg := r.nvml
		cfg.Lib, cfg.Log = r.NVML, r.logFor("gpu")
		src := nvml.New(cfg)
		r.gpus = &GPUReader{Source: src}
		r.gpus.users.run = src.Run
	}
	return r.gpus
}

// Procfs is the process's procfs; an error when --path.procfs is not one.
func (r *Readers) Procfs() (*procfs.FS, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		proc, err := procfs.New(r.procfs)
		if err != nil {
			return nil, err
		}
		r.proc = proc
	}
	return r.proc, nil
}

// users runs a reader's sampling loop while at least one of its users runs:
// the first to come starts it, the last to leave stops it and waits for it.
type users struct {
	run func(context.Context)

	mu   sync.Mutex
	n    int
	stop context.CancelFunc
	done chan struct{}
}

// use runs the loop, if it is not running yet, until ctx ends.
func (u *users) use(ctx context.Context) {
	u.mu.Lock()
	if u.n == 0 {
		loopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		u.stop, u.done = stop, done
		go func() { defer close(done); u.run(loopCtx) }()
	}
	u.n++
	u.mu.Unlock()

	<-ctx.Done()

	u.mu.Lock()
	u.n--
	last, stop, done := u.n == 0, u.stop, u.done
	u.mu.Unlock()
	if last {
		stop()
		<-done
	}
}

// RAPLReader is the process's one RAPL sampler. The cpu port serves its
// snapshots; energy per encode follows its samples.
type RAPLReader struct {
	*rapl.Source
	users users

	mu        sync.Mutex
	followers map[*follower]bool
	proc      *procfs.FS          // set: the machine's CPU time is read with each sample (Read)
	last      docker.MeterReading // of the latest sample
	lastOK    bool
}

// ReadCPUWith has each sample read the machine's CPU time from proc as
// well, for Read.
func (r *RAPLReader) ReadCPUWith(proc *procfs.FS) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.proc = proc
}

// Read is the package and dram zones' cumulative energy and the machine's
// CPU time at the latest sample: the docker source charges containers
// their energy from it, at its own interval, however often RAPL is
// sampled.
func (r *RAPLReader) Read() (docker.MeterReading, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.lastOK
}

// remember keeps what Read answers: the sample just taken, and the
// machine's CPU time read right after it.
func (r *RAPLReader) remember() {
	r.mu.Lock()
	proc := r.proc
	r.mu.Unlock()
	if proc == nil {
		return
	}
	snap := r.Snapshot()
	cpu, err := proc.CPU()
	reading := docker.MeterReading{At: time.Now(), TotalSeconds: cpu.TotalSeconds, IdleSeconds: cpu.IdleSeconds}
	for _, z := range snap.Zones {
		if z.Zone == "package" || z.Zone == "dram" { // psys overlaps both; core and uncore are inside package
			reading.Joules += z.EnergyJoules
		}
	}
	r.mu.Lock()
	r.last, r.lastOK = reading, err == nil && snap.Available
	r.mu.Unlock()
}

// follower is a window run right after a RAPL sample, at most every interval.
type follower struct {
	every  time.Duration
	window func(context.Context)
	last   time.Time
}

// Run samples RAPL while ctx lasts (or longer, for another user).
func (r *RAPLReader) Run(ctx context.Context) { r.users.use(ctx) }

// Follow calls window right after each RAPL sample, at most every
// interval, until ctx ends; it samples RAPL meanwhile. A window reads the
// reader's cumulative, wrap-corrected totals back to back with what it
// shares them by, and takes its own deltas: other users in between change
// nothing, and RAPL is read once per interval for all of them.
func (r *RAPLReader) Follow(ctx context.Context, interval time.Duration, window func(context.Context)) {
	f := &follower{every: interval, window: window}
	r.mu.Lock()
	if r.followers == nil {
		r.followers = map[*follower]bool{}
	}
	r.followers[f] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.followers, f)
		r.mu.Unlock()
	}()
	r.users.use(ctx)
}

// loop samples at the shortest interval any user asks for, then runs the
// followers whose interval is over.
func (r *RAPLReader) loop(ctx context.Context) {
	r.Every(ctx, r.interval, func(ctx context.Context) {
		r.Sample()
		r.remember()
		now := time.Now()
		r.mu.Lock()
		var due []*follower
		for f := range r.followers {
			// A window ends on the sample nearest its interval: a timer
			// that fires a little early does not skip a whole round.
			if now.Sub(f.last) >= f.every-f.every/10 {
				f.last = now
				due = append(due, f)
			}
		}
		r.mu.Unlock()
		for _, f := range due {
			f.window(ctx)
		}
	})
}

func (r *RAPLReader) interval() time.Duration {
	iv := r.Interval()
	r.mu.Lock()
	defer r.mu.Unlock()
	for f := range r.followers {
		iv = min(iv, max(f.every, rapl.MinInterval))
	}
	return iv
}

// GPUReader is the process's one NVML sampler. The gpu port serves its
// snapshots; energy per encode takes each GPU's latest sample.
type GPUReader struct {
	*nvml.Source
	users users
}

// Run samples the GPUs while ctx lasts (or longer, for another user), then
// shuts NVML down.
func (g *GPUReader) Run(ctx context.Context) { g.users.use(ctx) }

// Sockets maps each CPU to its socket (physical package) as sysfs topology
// says, for charging each socket's RAPL zones apart; nil where there is
// one socket or the topology cannot be read (every socket is then one
// pool). RAPL's package-N zones are numbered by the same id.
func (r *Readers) Sockets() map[int]string {
	paths, _ := filepath.Glob(filepath.Join(r.sysfs, "devices", "system", "cpu", "cpu[0-9]*", "topology", "physical_package_id"))
	cpus := map[int]string{}
	ids := map[string]bool{}
	for _, p := range paths {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(filepath.Dir(filepath.Dir(p))), "cpu"))
		b, rerr := os.ReadFile(p)
		if err != nil || rerr != nil {
			continue
		}
		id := strings.TrimSpace(string(b))
		cpus[n], ids[id] = id, true
	}
	if len(ids) < 2 {
		return nil
	}
	return cpus
}

// alongside is a source run together with the shared readers it needs:
// they sample while it runs.
type alongside struct {
	sampling.Source
	readers []interface{ Run(context.Context) }
}

func (a alongside) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, r := range a.readers {
		wg.Go(func() { r.Run(ctx) })
	}
	a.Source.Run(ctx)
	cancel() // a source that ends by itself ends its readers' use too
	wg.Wait()
}
