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

// link tries to link every live stream that has no process: by ?pid=, by
// the writers of its pipe (--stdin), or by the process holding the other
// end of its loopback connection. The connections and pipes wanted are
// found in one pass over /proc.
func (s *Source) link(now time.Time) []error {
	var (
		errs    []error
		tcp     []procfs.TCPConn
		byConn  = map[procfs.TCPConn][]*encode{}
		targets = map[procfs.Target][]*encode{}
	)
	for _, e := range s.encodes {
		if e.closed || !e.active || e.linked() || now.Before(e.retryAt) {
			continue
		}
		p := e.peer
		switch {
		case p.PID < 0:
			s.fail(e, BadPID, now)
		case p.Pipe != 0:
			targets[procfs.Pipe(p.Pipe)] = append(targets[procfs.Pipe(p.Pipe)], e)
		case !p.Remote.IsValid():
			s.fail(e, NoPeer, now)
		case !p.Remote.Addr().Unmap().IsLoopback():
			s.fail(e, Remote, now)
		case p.PID > 0:
			s.linkPID(e, p.PID, now)
		default:
			c := procfs.TCPConn{Local: p.Local, Remote: p.Remote}
			if byConn[c] == nil {
				tcp = append(tcp, c)
			}
			byConn[c] = append(byConn[c], e)
		}
	}
	if len(tcp) > 0 {
		inodes, err := s.cfg.Proc.ClientInodes(tcp)
		errs = append(errs, err)
		for _, c := range tcp {
			if ino, ok := inodes[c]; ok {
				targets[procfs.Socket(ino)] = append(targets[procfs.Socket(ino)], byConn[c]...)
			} else {
				for _, e := range byConn[c] {
					s.fail(e, NotFound, now)
				}
			}
		}
	}
	if len(targets) == 0 {
		return errs
	}
	want := make(map[procfs.Target]bool, len(targets))
	for t := range targets {
		want[t] = true
	}
	h, err := s.cfg.Proc.FindHolders(want)
	errs = append(errs, err)
	for t, es := range targets {
		for _, e := range es {
			switch {
			case s.linkTo(e, h.Found[t], now):
			case h.Denied > 0:
				s.fail(e, Permission, now)
			default:
				s.fail(e, NotFound, now)
			}
		}
	}
	return errs
}

// linkPID links e to the process ?pid= names. Once linked, the stream
// keeps to that process: a later process under the same PID is another
// program and never inherits it.
func (s *Source) linkPID(e *encode, pid int, now time.Time) {
	st, err := s.cfg.Proc.Stat(pid)
	if err != nil || st.Exited {
		s.fail(e, NoProcess, now)
		return
	}
	for _, p := range e.procs {
		if p.PID == pid && p.Start != st.Start {
			s.fail(e, Exited, now) // the PID was reused
			return
		}
	}
	if !s.linkTo(e, []procfs.Process{st.Process}, now) {
		s.fail(e, NoProcess, now)
	}
}

// linkTo links e to the processes that are still the ones found, and
// reports whether any was.
func (s *Source) linkTo(e *encode, found []procfs.Process, now time.Time) bool {
	for _, want := range found {
		st, err := s.cfg.Proc.Stat(want.PID)
		if err != nil || st.Process != want || st.Exited {
			continue // gone, or its PID already reused
		}
		var p *proc
		for _, q := range e.procs {
			if q.Process == st.Process {
				p = q
			}
		}
		if p == nil {
			if len(e.procs) >= MaxProcesses {
				continue
			}
			// A process that started at most a window before the previous
			// one (ffmpeg starts up before it connects, and the link waits
			// for a window) is charged from its start: its CPU time so far
			// is shared out in this window, at this window's rate. An older
			// one is charged from now.
			prev := st.CPUSeconds
			if s.prev.ok && float64(st.Start)/procfs.UserHZ >= s.prev.uptime-s.cfg.Interval.Seconds() {
				prev = 0
			}
			p = &proc{Process: st.Process, comm: st.Comm, prev: prev}
			e.procs = append(e.procs, p)
		}
		p.cpu, p.comm, p.linked, p.window = max(p.cpu, st.CPUSeconds), st.Comm, true, true
	}
	if !e.linked() {
		return false
	}
	e.connLinked, e.hasReason = true, false
	return true
}

// fail records why e could not be linked. A failure that cannot change for
// this connection is not retried; others are, after Retry.
func (s *Source) fail(e *encode, r Reason, now time.Time) {
	if e.connLinked && (r == NotFound || r == NoProcess) {
		r = Exited
	}
	if !e.hasReason || e.reason != r {
		s.failures[r]++
		s.cfg.Log.Debug("stream not linked to a process", "reason", Reasons[r], "peer", e.peer.Remote, "pid", e.peer.PID)
	}
	if r == Permission && !s.warned {
		s.warned = true
		s.cfg.Log.Warn("cannot read other users' /proc/PID/fd: streams whose encoder runs as another user are not linked; " +
			"grant CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE (or run as that user), or name the process with ?pid=N on the ingest URL")
	}
	e.reason, e.hasReason = r, true
	switch r {
	case Remote, BadPID, NoPeer, Exited:
		e.retryAt = never
	default:
		e.retryAt = now.Add(s.cfg.Retry)
	}
}

// readProcesses takes a reading of each process linked to e. A process
// that has exited, or whose PID now belongs to another, is unlinked; its
// last reading stands (a zombie's is final). When the last one goes while
// the connection is open, the link is checked again at the next window.
func (s *Source) readProcesses(e *encode) {
	had := e.linked()
	for _, p := range e.procs {
		if p.linked {
			s.read(p)
		}
	}
	if had && !e.linked() {
		e.retryAt = time.Time{}
	}
}

func (s *Source) read(p *proc) {
	st, err := s.cfg.Proc.Stat(p.PID)
	if err != nil || st.Start != p.Start {
		p.linked = false
		return
	}
	p.cpu, p.window = max(p.cpu, st.CPUSeconds), true
	if st.Exited {
		p.linked = false
	}
}

// Closed takes the final reading of the processes of stream's connection
// conn as it closes: the encode is over, and what its processes do after
// (tearing down, exiting) is not the encode's.
func (s *Source) Closed(stream string, conn uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.encodes[stream]
	if e == nil || e.peer.Conn != conn {
		return
	}
	e.closed = true
	for _, p := range e.procs {
		if p.linked {
			s.read(p)
			p.linked = false
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

// attribute shares out the energy counted since the previous window.
func (s *Source) attribute(cur readings, gpus *nvml.Snapshot) {
	prev := s.prev
	// A process linked to several streams (one ffmpeg sending two
	// progress streams) is shared between them, so that it counts once.
	users := map[procfs.Process]int{}
	byPID := map[uint32]int{}
	for _, e := range s.encodes {
		for _, p := range e.procs {
			if p.window {
				users[p.Process]++
				byPID[uint32(p.PID)]++
			}
		}
	}

	if machine := cur.cpu.TotalSeconds - prev.cpu.TotalSeconds; prev.ok && cur.ok && machine > 0 && cur.zones != nil {
		joules, shares, total := delta(prev.zones, cur.zones), map[*encode]float64{}, 0.0
		for _, e := range s.encodes {
			var share float64
			for _, p := range e.procs {
				if p.window && p.cpu > p.prev {
					share += (p.cpu - p.prev) / float64(users[p.Process]) / machine
				}
			}
			if e.inWindow() {
				shares[e] = share
				total += share
			}
		}
		// CPU times are read a moment apart from the machine's, and in
		// ticks: never share out more than the zones counted.
		scale := 1.0
		if total > 1 {
			scale = 1 / total
		}
		for e, share := range shares {
			e.energy[CPU] += joules * share * scale
			e.hasEnergy[CPU] = true
		}
	}
	if gpus != nil {
		s.attributeGPUs(prev, cur, gpus, byPID)
	}
	for _, e := range s.encodes {
		for _, p := range e.procs {
			p.prev = p.cpu
			p.window = p.linked
		}
	}
}

// attributeGPUs shares out each GPU's energy: the GPU's active part (its
// busiest engine's utilisation) goes to its processes by their use of the
// engines; the rest, idle power, stays with the GPU, as for the CPU.
func (s *Source) attributeGPUs(prev, cur readings, gpus *nvml.Snapshot, users map[uint32]int) {
	dt := cur.at.Sub(prev.at).Seconds()
	for i := range gpus.GPUs {
		g := &gpus.GPUs[i]
		use := engineUse(g)
		var sum [NumEngines]float64
		var weight float64
		for _, u := range use {
			for k := range u {
				sum[k] += u[k]
				weight += u[k]
			}
		}
		before, had := prev.gpus[g.UUID]
		after, has := cur.gpus[g.UUID]
		joules := after - before
		ok := had && has && joules >= 0 // a driver reload restarts the counter
		active := min(1, slices.Max(sum[:])/100)
		for _, e := range s.encodes {
			if !e.inWindow() {
				continue
			}
			e.gpu = true
			if ok {
				e.hasEnergy[GPU] = true
			}
			for _, p := range e.procs {
				pid := uint32(p.PID)
				u, used := use[pid]
				if !p.window || !used {
					continue
				}
				n := float64(users[pid])
				var w float64
				for k := range u {
					w += u[k]
					if prev.ok {
						e.gpuSeconds[k] += u[k] / 100 * dt / n
					}
				}
				if ok && weight > 0 {
					e.energy[GPU] += joules * active * w / weight / n
				}
			}
		}
	}
}

// engineUse is each process's use of g's engines, in percent of the
// window. Where NVML gives no per-process encoder use but the GPU's
// encoder is busy, the encoder's utilisation is shared among the
// processes' NVENC sessions by the pixels each encodes per second.
func engineUse(g *nvml.GPU) map[uint32][NumEngines]float64 {
	use := make(map[uint32][NumEngines]float64, len(g.ProcessUtilization))
	var enc float64
	for _, p := range g.ProcessUtilization {
		use[p.PID] = [NumEngines]float64{p.SMPercent, p.EncoderPercent, p.DecoderPercent}
		enc += p.EncoderPercent
	}
	if enc > 0 || !g.Has(nvml.EncoderPercent) || g.Values[nvml.EncoderPercent] <= 0 || len(g.EncoderSessions) == 0 {
		return use
	}
	rate := func(es nvml.EncoderSession) float64 {
		return float64(es.Width) * float64(es.Height) * max(es.AverageFPS, 1)
	}
	var total float64
	for _, es := range g.EncoderSessions {
		total += rate(es)
	}
	for _, es := range g.EncoderSessions {
		u := use[es.PID]
		if total > 0 {
			u[Encoder] += g.Values[nvml.EncoderPercent] * rate(es) / total
		}
		use[es.PID] = u
	}
	return use
}

// delta is the energy counted between two readings of the zones, over the
// zones both have (a zone found or lost between them counts from the next).
func delta(prev, cur map[[2]string]float64) float64 {
	var sum float64
	for k, v := range cur {
		if p, ok := prev[k]; ok && v > p {
			sum += v - p
		}
	}
	return sum
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
