package energy

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// Streams is the ffmpeg hub whose streams are linked.
type Streams interface{ Snapshot() ffmpeg.Snapshot }

// RAPL is a RAPL source of this source's own: sampled at each window, so
// that its energy and the CPU times cover the same window.
type RAPL interface {
	Sample()
	Snapshot() *rapl.Snapshot
	Interval() time.Duration
	Health() error
}

// GPUs is an NVML source of this source's own, sampled at each window for
// the same reason (and because NVML's per-process utilisation covers the
// time since the previous sample).
type GPUs interface {
	Sample(context.Context)
	Snapshot() *nvml.Snapshot
	Health() error
	Close()
}

// Config is what the source needs.
type Config struct {
	Proc     *procfs.FS
	Streams  Streams
	RAPL     RAPL          // nil: no CPU energy
	GPUs     GPUs          // nil: no GPU energy
	Interval time.Duration // sampling window
	// Retry is how often a live stream that could not be linked is tried
	// again (linking reads every process's descriptors); default 30 s.
	Retry time.Duration
	// GPURetry is how often NVML is tried while it is not available;
	// default 30 s.
	GPURetry time.Duration
	Log      *slog.Logger
}

// MaxProcesses bounds the processes one encode keeps: far more than a
// connection or pipe is ever shared by.
const MaxProcesses = 16

// Source links streams to processes and attributes energy to them.
type Source struct {
	*sampling.Latest[Snapshot]
	cfg Config

	window sync.Mutex // serialises Sample

	mu       sync.Mutex // guards what follows; Sample and Closed take it
	encodes  map[string]*encode
	prev     readings
	failures [NumReasons]uint64
	warned   bool // of missing permission
	gpuTry   time.Time
	said     [NumDevices]bool // a device's availability has been logged
	was      [NumDevices]bool // and what it was
}

// encode is one stream's current encode.
type encode struct {
	serial  uint64 // the hub's Encode and Started: either changing is a new encode
	started time.Time
	peer    ffmpeg.Peer // of the connection being linked
	active  bool        // the hub says the stream is live and sending
	closed  bool        // the connection has closed: its processes are no longer read
	procs   []*proc     // every process linked in this encode
	// connLinked: a process was linked for this connection, so not finding
	// one now means it exited.
	connLinked bool
	reason     Reason
	hasReason  bool
	retryAt    time.Time

	energy     [NumDevices]float64
	hasEnergy  [NumDevices]bool
	gpu        bool
	gpuSeconds [NumEngines]float64
}

// proc is a process linked to an encode at some time.
type proc struct {
	procfs.Process
	comm   string
	cpu    float64 // seconds at the latest reading
	prev   float64 // seconds already shared out in earlier windows
	linked bool    // linked now: read at each window
	window bool    // linked at some time in the current window (for GPU shares)
}

func (e *encode) linked() bool {
	return slices.ContainsFunc(e.procs, func(p *proc) bool { return p.linked })
}

// inWindow reports whether a process was linked to e in the current window.
func (e *encode) inWindow() bool {
	return slices.ContainsFunc(e.procs, func(p *proc) bool { return p.window })
}

// readings are the machine's counters at the end of a window.
type readings struct {
	ok     bool // the machine's CPU time was read
	at     time.Time
	cpu    procfs.CPU
	uptime float64
	zones  map[[2]string]float64 // package and dram zones: (package, zone) → joules
	gpus   map[string]float64    // GPU UUID → joules
}

var never = time.Unix(1<<62, 0)

// New returns a source; nothing is read until Sample or Run.
func New(cfg Config) *Source {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 30 * time.Second
	}
	if cfg.GPURetry <= 0 {
		cfg.GPURetry = 30 * time.Second
	}
	return &Source{
		cfg:     cfg,
		encodes: map[string]*encode{},
		Latest:  sampling.NewLatest(cfg.Log, "energy per encode", &Snapshot{}, errors.New("energy per encode not sampled yet")),
	}
}

// Run samples every window until ctx ends.
func (s *Source) Run(ctx context.Context) {
	if s.cfg.GPUs != nil {
		defer s.cfg.GPUs.Close()
	}
	sampling.Every(ctx, s.interval, s.Sample)
}

func (s *Source) interval() time.Duration {
	if s.cfg.RAPL != nil {
		return min(s.cfg.Interval, s.cfg.RAPL.Interval())
	}
	return s.cfg.Interval
}

// Sample runs one window: link new streams, read the linked processes and
// the machine's counters, share out the energy counted since the previous
// window, and publish.
func (s *Source) Sample(ctx context.Context) {
	s.window.Lock()
	defer s.window.Unlock()
	start := time.Now()
	hub := s.cfg.Streams.Snapshot()

	s.mu.Lock()
	s.reconcile(hub.Streams)
	errs := s.link(start)
	for _, e := range s.encodes {
		if !e.closed {
			s.readProcesses(e)
		}
	}
	s.mu.Unlock()

	// The hardware, outside the lock: NVML may take its time, and a
	// connection closing must not wait for it.
	cur, gpus, err := s.readMachine(ctx)
	errs = append(errs, err)

	s.mu.Lock()
	s.attribute(cur, gpus)
	snap := s.snapshot(hub, cur, gpus)
	if cur.ok {
		s.prev = cur
	}
	s.mu.Unlock()
	s.sayAvailability(snap.Available)
	s.Publish(snap, errors.Join(errs...), start)
}

// sayAvailability logs, when it changes, whether each device's energy can
// be read: the RAPL and NVML readers of this source are quiet (the cpu and
// gpu ports report on their own), so this is where a single
// ffmpeg-exporter says why its streams have no energy.
func (s *Source) sayAvailability(now [NumDevices]bool) {
	for d, ok := range now {
		if s.said[d] && s.was[d] == ok {
			continue
		}
		s.said[d], s.was[d] = true, ok
		what := [NumDevices]string{"CPU energy from RAPL", "GPU energy from NVML"}[d]
		var why error
		switch {
		case ok:
			s.cfg.Log.Info("energy per encode: " + what + " available")
			continue
		case Device(d) == CPU && s.cfg.RAPL != nil:
			why = s.cfg.RAPL.Health()
		case Device(d) == GPU && s.cfg.GPUs != nil:
			why = s.cfg.GPUs.Health()
		}
		s.cfg.Log.Info("energy per encode: "+what+" unavailable; streams are served without it", "why", why)
	}
}

// reconcile follows the hub: a new encode under a stream's name starts
// from zero, a new connection is linked afresh, a stream the hub forgot is
// forgotten.
func (s *Source) reconcile(streams []ffmpeg.StreamSnapshot) {
	live := make(map[string]bool, len(streams))
	for i := range streams {
		hs := &streams[i]
		live[hs.Name] = true
		e := s.encodes[hs.Name]
		if e == nil || e.serial != hs.Encode || !e.started.Equal(hs.Started) {
			e = &encode{serial: hs.Encode, started: hs.Started}
			s.encodes[hs.Name] = e
		}
		if e.peer.Conn != hs.Peer.Conn {
			for _, p := range e.procs {
				p.linked = false
			}
			*e = encode{serial: e.serial, started: e.started, procs: e.procs, energy: e.energy, hasEnergy: e.hasEnergy, gpu: e.gpu, gpuSeconds: e.gpuSeconds}
			e.peer = hs.Peer
		}
		e.active = hs.Active
	}
	for name := range s.encodes {
		if !live[name] {
			delete(s.encodes, name)
		}
	}
}

// readMachine reads the machine's CPU time and the energy counters.
func (s *Source) readMachine(ctx context.Context) (readings, *nvml.Snapshot, error) {
	cur := readings{at: time.Now()}
	var errs []error
	var err error
	if cur.cpu, err = s.cfg.Proc.CPU(); err != nil {
		errs = append(errs, err)
	} else if cur.uptime, err = s.cfg.Proc.UptimeSeconds(); err != nil {
		errs = append(errs, err)
	} else {
		cur.ok = true
	}
	if s.cfg.RAPL != nil {
		s.cfg.RAPL.Sample()
		if snap := s.cfg.RAPL.Snapshot(); snap.Available {
			cur.zones = map[[2]string]float64{}
			for _, z := range snap.Zones {
				// package and dram: what the socket and its memory draw. psys
				// overlaps both, and core and uncore are inside package.
				if z.Zone == "package" || z.Zone == "dram" {
					cur.zones[[2]string{z.Package, z.Zone}] = z.EnergyJoules
				}
			}
		}
	}
	var gpus *nvml.Snapshot
	if s.cfg.GPUs != nil && (s.cfg.GPUs.Snapshot().Available || !cur.at.Before(s.gpuTry)) {
		s.cfg.GPUs.Sample(ctx)
		if gpus = s.cfg.GPUs.Snapshot(); !gpus.Available {
			s.gpuTry = cur.at.Add(s.cfg.GPURetry)
			gpus = nil
		} else {
			cur.gpus = map[string]float64{}
			for i := range gpus.GPUs {
				if g := &gpus.GPUs[i]; g.Has(nvml.EnergyJoules) {
					cur.gpus[g.UUID] = g.Values[nvml.EnergyJoules]
				}
			}
		}
	}
	return cur, gpus, errors.Join(errs...)
}

// snapshot builds what scrapes read.
func (s *Source) snapshot(hub ffmpeg.Snapshot, cur readings, gpus *nvml.Snapshot) *Snapshot {
	snap := &Snapshot{Failures: s.failures}
	snap.Available[CPU] = len(cur.zones) > 0
	snap.Available[GPU] = len(cur.gpus) > 0
	sessions := map[uint32]int{}
	if gpus != nil {
		for _, g := range gpus.GPUs {
			for _, es := range g.EncoderSessions {
				sessions[es.PID]++
			}
		}
	}
	frames := make(map[string]float64, len(hub.Streams))
	for _, hs := range hub.Streams {
		if hs.Has(ffmpeg.Frames) {
			frames[hs.Name] = hs.Values[ffmpeg.Frames]
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.encodes)) {
		e := s.encodes[name]
		if e.active && !e.linked() && e.hasReason {
			snap.Unlinked = append(snap.Unlinked, Unlinked{Name: name, Reason: e.reason})
		}
		if len(e.procs) == 0 {
			continue
		}
		st := Stream{Name: name, Energy: e.energy, HasEnergy: e.hasEnergy, GPU: e.gpu, GPUSeconds: e.gpuSeconds}
		var joules float64
		var known bool
		for d := range NumDevices {
			if e.hasEnergy[d] {
				joules, known = joules+e.energy[d], true
			}
		}
		if f := frames[name]; known && f > 0 {
			st.JoulesPerFrame, st.HasJoulesPerFrame = joules/f, true
		}
		for _, p := range e.procs {
			st.CPUSeconds += p.cpu
			if p.linked {
				st.Processes = append(st.Processes, Process{Process: p.Process, Command: p.comm})
				st.EncoderSessions += sessions[uint32(p.PID)]
			}
		}
		slices.SortFunc(st.Processes, func(a, b Process) int { return cmp.Compare(a.PID, b.PID) })
		snap.Streams = append(snap.Streams, st)
	}
	return snap
}
