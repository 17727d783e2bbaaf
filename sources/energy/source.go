package energy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/encodeprofile"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// Streams is the ffmpeg hub whose streams are linked.
type Streams interface{ Snapshot() ffmpeg.Snapshot }

// RAPL is the process's RAPL reader, shared with the cpu port: a window
// reads its cumulative, wrap-corrected totals right after it samples (see
// Config.Windows) and takes its own deltas, so other readers of it change
// nothing.
type RAPL interface {
	Snapshot() *rapl.Snapshot
	Health() error
}

// GPUs is the process's NVML reader, shared with the gpu port and sampling
// on its own: a driver that hangs must not hold a window up. Each window
// takes the latest sample of each GPU that is newer than the one taken
// before (NVML's per-process utilisation covers the time since the
// previous sample).
type GPUs interface {
	Snapshot() *nvml.Snapshot
	Health() error
	Ready() <-chan struct{} // closed once NVML has been tried
}

// Config is what the source needs.
type Config struct {
	Proc     *procfs.FS
	Streams  Streams
	RAPL     RAPL          // nil: no CPU energy
	GPUs     GPUs          // nil: no GPU energy
	Interval time.Duration // sampling window
	// Windows runs window at each interval until ctx ends, right after
	// each sample of RAPL (the shared reader's Follow), so that a window's
	// energy and the CPU times read in it cover the same time. nil: a
	// window each Interval.
	Windows func(ctx context.Context, interval time.Duration, window func(context.Context))
	// Retry is how often a live stream that could not be linked is tried
	// again (linking reads every process's descriptors); default 30 s.
	Retry time.Duration
	// IdleWatts is each device's idle power as the operator knows it (a
	// GPU's applies to every GPU); 0: estimated from the windows.
	IdleWatts [NumDevices]float64
	// Packages maps each CPU to the RAPL package (socket) it belongs to,
	// from sysfs topology. With more than one package each socket's zones
	// are charged by the time spent on its CPUs; nil: every socket is one
	// pool.
	Packages map[int]string
	// MaxLadders bounds the distinct ladders kept apart in the
	// configurations' totals; later ones count as other. 0: 32.
	MaxLadders int
	Log        *slog.Logger
}

// MaxProcesses bounds the processes one encode keeps: far more than a
// connection or pipe is ever shared by.
const MaxProcesses = 16

// Source links streams to processes and attributes energy to them.
type Source struct {
	*sampling.Latest[Snapshot]
	cfg Config

	sampleMu sync.Mutex // serialises Sample

	mu       sync.Mutex // guards what follows; Sample and Closed take it
	encodes  map[string]*encode
	prev     readings
	failures [NumReasons]uint64
	warned   bool                 // of missing permission
	gpuSeen  map[string]gpuSample // GPU UUID → the sample taken last
	ladders  *encodeprofile.Ladders
	configs  map[configKey]*Configuration
	cpuIdle  *IdleModel            // every socket as one pool
	pkgIdle  map[string]*IdleModel // by RAPL package, where sockets are charged apart
	gpuIdle  map[string]*IdleModel // by GPU UUID
	idle     []IdlePower           // what the latest window used, the CPU's first
	// counted is every device's energy the windows shared out;
	// unattributed, what of it no stream was charged.
	counted             [NumDevices]float64
	unattributed        [NumDevices][NumModes]float64
	availabilityLogged  [NumDevices]bool // a device's availability has been logged
	availableWhenLogged [NumDevices]bool // and what it was
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
	leftOut    int // processes found at the latest link beyond MaxProcesses

	// The encode's profile (encodeprofile): from its command line once
	// linked, and merged with what the hub heard; the frames and pixels it
	// encoded; the energy the current window charged it.
	cmdline      encodeprofile.Profile
	hasCmdline   bool
	profile      encodeprofile.Profile
	labels       [4]string // encoder, preset, ladder as its configuration's, and the places that told them
	frames       float64
	pixels       float64
	hasPixels    bool
	windowEnergy [NumDevices][NumModes]float64

	energy     [NumDevices]float64 // dynamic and idle share
	dynamic    [NumDevices]float64
	hasEnergy  [NumDevices]bool
	gpu        bool
	gpuSeconds [NumEngines]float64
}

// proc is a process linked to an encode at some time.
type proc struct {
	procfs.Process
	ppid int
	comm string
	// threads are its threads' CPU seconds at the latest reading, and
	// onPackage what they used on each socket's CPUs since the previous
	// window, where sockets are charged apart.
	threads        map[int]float64
	onPackage      map[string]float64
	cpu            float64 // seconds at the latest reading, with its reaped children's, less those linked on their own (reaped)
	reaped         float64 // seconds of its linked children that are gone
	base           float64 // seconds before it was charged to the encode
	prev           float64 // seconds already shared out in earlier windows
	linked         bool    // linked now: read at each window
	linkedInWindow bool    // linked at some time in the current window (for GPU shares)
}

func (e *encode) linked() bool {
	return slices.ContainsFunc(e.procs, func(p *proc) bool { return p.linked })
}

// inWindow reports whether a process was linked to e in the current window.
func (e *encode) inWindow() bool {
	return slices.ContainsFunc(e.procs, func(p *proc) bool { return p.linkedInWindow })
}

// readings are the machine's counters at the end of a window.
type readings struct {
	ok     bool // the machine's CPU time was read
	at     time.Time
	cpu    procfs.CPU
	uptime float64
	zones  map[[2]string]float64 // package and dram zones: (package, zone) → joules
	cpus   map[int]procfs.CPU    // each CPU's time, where sockets are charged apart
}

// gpuSample is a GPU's sample as a window took it.
type gpuSample struct {
	at        time.Time // the GPU's LastSample
	joules    float64
	hasJoules bool
}

// staleWindows is how many windows a GPU's sample may stay the same before
// health says NVML stopped answering.
const staleWindows = 3

var never = time.Unix(1<<62, 0)

// New returns a source; nothing is read until Sample or Run.
func New(cfg Config) *Source {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 30 * time.Second
	}
	return &Source{
		cfg:     cfg,
		encodes: map[string]*encode{},
		gpuSeen: map[string]gpuSample{},
		cpuIdle: &IdleModel{Configured: cfg.IdleWatts[CPU]},
		pkgIdle: map[string]*IdleModel{},
		ladders: encodeprofile.NewLadders(cfg.MaxLadders),
		configs: map[configKey]*Configuration{},
		gpuIdle: map[string]*IdleModel{},
		Latest:  sampling.NewLatest(cfg.Log, "energy per encode", &Snapshot{}, errors.New("energy per encode not sampled yet")),
	}
}

// Run runs a window each interval until ctx ends.
func (s *Source) Run(ctx context.Context) {
	if s.cfg.Windows != nil {
		s.cfg.Windows(ctx, s.cfg.Interval, s.Sample)
		return
	}
	s.Every(ctx, func() time.Duration { return s.cfg.Interval }, s.Sample)
}

// Sample runs one window: link new streams, read the linked processes and
// the machine's counters, share out the energy counted since the previous
// window, and publish. It never waits on NVML.
func (s *Source) Sample(context.Context) {
	s.sampleMu.Lock()
	defer s.sampleMu.Unlock()
	start := time.Now()
	hub := s.cfg.Streams.Snapshot()

	s.mu.Lock()
	s.reconcile(hub.Streams)
	errs := s.link(start)
	for _, e := range s.encodes {
		if !e.closed {
			s.readProcesses(e, start)
		}
	}
	s.mu.Unlock()

	// The hardware, outside the lock: a connection closing must not wait
	// for RAPL's sysfs reads.
	cur, gpus, err := s.readMachine()
	errs = append(errs, err)

	s.mu.Lock()
	errs = append(errs, s.attribute(cur, gpus))
	if cur.ok && s.prev.ok {
		s.account(hub.Streams, cur.at.Sub(s.prev.at))
	}
	snap := s.snapshot(hub, cur, gpus)
	errs = append(errs, leftOut(snap))
	if cur.ok {
		s.prev = cur
	}
	s.mu.Unlock()
	s.sayAvailability(snap.Available)
	s.Publish(snap, errors.Join(errs...), start)
}

// sayAvailability logs, when it changes, whether each device's energy can
// be read: the RAPL and NVML readers are quiet where the process serves
// no cpu or gpu port, so this is where a single ffmpeg-exporter says why
// its streams have no energy. GPUs are judged once NVML has been tried.
func (s *Source) sayAvailability(now [NumDevices]bool) {
	for d, ok := range now {
		if s.availabilityLogged[d] && s.availableWhenLogged[d] == ok {
			continue
		}
		if Device(d) == GPU && s.cfg.GPUs != nil && !closed(s.cfg.GPUs.Ready()) {
			continue
		}
		s.availabilityLogged[d], s.availableWhenLogged[d] = true, ok
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

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
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
			*e = encode{serial: e.serial, started: e.started, procs: e.procs, energy: e.energy, dynamic: e.dynamic, hasEnergy: e.hasEnergy,
				cmdline: e.cmdline, hasCmdline: e.hasCmdline, profile: e.profile, labels: e.labels, frames: e.frames, pixels: e.pixels, hasPixels: e.hasPixels, gpu: e.gpu, gpuSeconds: e.gpuSeconds}
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

// readMachine reads the machine's CPU time and RAPL's energy counters, and
// takes the GPUs' latest sample (nil while NVML is not available).
func (s *Source) readMachine() (readings, *nvml.Snapshot, error) {
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
	if s.perSocket() {
		if cur.cpus, err = s.cfg.Proc.CPUs(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.cfg.RAPL != nil {
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
	if s.cfg.GPUs != nil {
		if gpus = s.cfg.GPUs.Snapshot(); !gpus.Available {
			gpus = nil
		}
	}
	return cur, gpus, errors.Join(errs...)
}

// snapshot builds what scrapes read.
func (s *Source) snapshot(hub ffmpeg.Snapshot, cur readings, gpus *nvml.Snapshot) *Snapshot {
	snap := &Snapshot{Failures: s.failures, Idle: slices.Clone(s.idle), Counted: s.counted, Unattributed: s.unattributed, Configurations: s.configurations()}
	snap.Available[CPU] = len(cur.zones) > 0
	if gpus != nil {
		snap.Available[GPU] = slices.ContainsFunc(gpus.GPUs, func(g nvml.GPU) bool { return g.Has(nvml.EnergyJoules) })
	}
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
		st := Stream{Name: name, Profile: e.profile, Labels: e.labels, Pixels: e.pixels, HasPixels: e.hasPixels, Energy: e.energy, Dynamic: e.dynamic, HasEnergy: e.hasEnergy, GPU: e.gpu, GPUSeconds: e.gpuSeconds, ProcessesLeftOut: e.leftOut}
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
			st.CPUSeconds += p.cpu - p.base
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

// leftOut says which streams have processes beyond MaxProcesses.
func leftOut(snap *Snapshot) error {
	var errs []error
	for _, st := range snap.Streams {
		if st.ProcessesLeftOut > 0 {
			errs = append(errs, fmt.Errorf("stream %q: %d processes beyond the limit of %d per encode are not linked", st.Name, st.ProcessesLeftOut, MaxProcesses))
		}
	}
	return errors.Join(errs...)
}
