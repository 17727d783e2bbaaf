// Package docker reads container resources. The Docker Engine API
// (github.com/docker/docker/client) tells which containers exist and what
// they are: a list, an inspect of each new or changed one, and the event
// stream, which keeps the list current between full lists. Running
// containers' figures come from their cgroups and their network namespace
// (/proc/<pid>/net/dev), as cAdvisor reads them, where the host's cgroup
// hierarchy is readable; elsewhere (a remote daemon, a rootless engine, no
// cgroup mount) from one one-shot stats call per container per interval.
// Everything is read in the background; scrapes only read snapshots.
package docker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/energy"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// Engine is the part of the Docker Engine API client the source uses
// (*Client here, or *client.Client from github.com/docker/docker/client,
// satisfies it), so tests can stand in for the daemon where the real one
// cannot misbehave on demand.
type Engine interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error)
	ContainerStatsOneShot(ctx context.Context, id string) (container.StatsResponseReader, error)
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	DaemonHost() string
	Close() error
}

// Config is what the source needs.
type Config struct {
	Client        Engine        // Run closes it when it ends
	Interval      time.Duration // between collections
	Timeout       time.Duration // per Engine API call
	Concurrency   int           // containers collected at once
	MaxContainers int           // containers served at most; those past it are left out and counted (0: no bound)
	Labels        []string      // container labels carried as attributes (an allowlist)
	Filter        Filter
	Procfs        string        // the host's /proc: the engine's own CPU use, containers' network figures; empty: not read
	Cgroupfs      string        // the host's cgroup hierarchy (/sys/fs/cgroup); empty: figures from stats calls only
	ListInterval  time.Duration // between full lists while the event stream is up (a safety net); 0: every collection
	Meter         Meter         // the CPU's energy, to charge containers theirs; nil: not charged
	Log           *slog.Logger
}

// Filter chooses containers by name or image; nil patterns match everything.
type Filter struct {
	IncludeName, ExcludeName, IncludeImage, ExcludeImage *regexp.Regexp
}

func (f Filter) match(name, image string) bool {
	in := func(re *regexp.Regexp, s string, empty bool) bool {
		if re == nil {
			return empty
		}
		return re.MatchString(s)
	}
	return in(f.IncludeName, name, true) && in(f.IncludeImage, image, true) &&
		!in(f.ExcludeName, name, false) && !in(f.ExcludeImage, image, false)
}

// States are the container states a Container can be in, as the API names them.
var States = []string{"created", "running", "paused", "restarting", "removing", "exited", "dead"}

// HealthStatuses are the health a running container can report; none is a
// container without a healthcheck.
var HealthStatuses = []string{"starting", "healthy", "unhealthy", "none"}

// Container is one container at the latest collection. Each Has flag says
// whether the daemon told the figures after it: unknown figures are left
// out, never served as 0.
type Container struct {
	ID, Name, Image, State string
	Labels                 []Label // allowlisted labels present on the container, by key
	OOMKills               uint64  // seen in the event stream since the exporter started

	// Where a running container's figures come from (PathCgroup or
	// PathStats; empty until decided) and, on the stats path, why.
	Path, PathWhy string

	// From inspect, of every container.
	HasInspect   bool
	RestartCount float64
	Health       string    // one of HealthStatuses; empty when the daemon said something else
	ExitCode     float64   // of the last run
	StartedAt    time.Time // zero: never started

	// The figures of a running container, from its cgroup or its stats.
	HasStats         bool // the figures were read
	HasCPU           bool // two samples exist, so CPU% can be computed
	CPUPercent       float64
	HasCPUUsage      bool
	CPUSeconds       float64
	HasThrottling    bool // the container has a CPU quota whose periods the daemon reports
	ThrottledPeriods float64
	ThrottledSeconds float64
	HasMemory        bool
	MemoryBytes      float64 // usage less inactive page cache, as docker stats shows it
	HasMemoryLimit   bool
	MemoryLimitBytes float64
	HasNetwork       bool
	RxBytes, TxBytes float64
	Rx, Tx           Packets
	BlockReadBytes   float64
	BlockWriteBytes  float64
	HasPIDs          bool
	PIDs             float64

	// Energy is the CPU energy charged to the container since the exporter
	// first read it, by mode (energy.Dynamic, energy.Idle), once HasEnergy.
	HasEnergy bool
	Energy    [2]float64
}

// Packets are one direction's packet counters, summed over the interfaces.
type Packets struct {
	Known                    bool
	Packets, Errors, Dropped float64
}

// The paths a running container's figures come by.
const (
	PathCgroup = "cgroup" // its cgroup files and /proc/<pid>/net/dev, read here
	PathStats  = "stats"  // one one-shot stats call per interval
)

// Paths are the paths, in the order the series and /health list them.
var Paths = []string{PathCgroup, PathStats}

// Label is a container label carried as an attribute.
type Label struct{ Key, Value string }

// Snapshot is what the latest collection saw.
type Snapshot struct {
	Up               bool // the daemon answered the list
	Containers       []Container
	Skipped          int    // matching containers left out: more than MaxContainers
	InspectErrors    uint64 // failed inspect calls since the exporter started
	HasEngineCPU     bool
	EngineCPUPercent float64 // the engine's own process, 100 per busy core
	// IdlePower is the CPU idle power the latest window split off before
	// charging containers their dynamic energy (Config.Meter set).
	IdlePower    energy.IdlePower
	HasIdlePower bool
}

// Notes say, for /health, which path the running containers' figures
// come by, naming a few containers of each and why the stats path.
func (s *Snapshot) Notes() []string {
	var notes []string
	for _, path := range Paths {
		var names []string
		whys := map[string]bool{}
		for _, c := range s.Containers {
			if c.Path == path {
				names = append(names, c.Name)
				if c.PathWhy != "" && len(whys) < 3 {
					whys[c.PathWhy] = true
				}
			}
		}
		if len(names) == 0 {
			continue
		}
		how := "from their cgroups"
		if path == PathStats {
			how = "from a stats call each per interval"
		}
		note := fmt.Sprintf("%d running containers' figures %s (%s): %s", len(names), how, path, nameList(names))
		if len(whys) > 0 {
			note += "; " + strings.Join(slices.Sorted(maps.Keys(whys)), "; ")
		}
		notes = append(notes, note)
	}
	return notes
}

// nameList joins names, at most maxNamed of them.
func nameList(names []string) string {
	if len(names) <= maxNamed {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:maxNamed], ", "), len(names)-maxNamed)
}

// Source collects container figures. Its health is nil when the daemon
// answered and every call and read about every container succeeded.
type Source struct {
	*sampling.Tracker
	snap atomic.Pointer[Snapshot]
	cfg  Config

	mu            sync.Mutex // serialises Sample
	engine        *engineCPU
	cgroups       *cgroupFS // nil: figures from stats calls only
	noCgroups     string    // why cgroups is nil
	hostMemory    uint64    // caps the limit of a container without one, as docker stats shows it
	inspectErrors uint64
	lastList      time.Time
	main, slow    chan struct{} // stats call slots: containers that answer, and those that did not
	calls         sync.WaitGroup

	// Containers' energy (Config.Meter): the previous reading, and the idle
	// power estimated from the collections' windows.
	meter        MeterReading
	meterOK      bool
	idle         energy.IdleModel
	idlePower    energy.IdlePower
	hasIdlePower bool

	// The containers known, by ID. Sample changes the set; stats calls
	// that outlive their collection write their figures under regMu.
	regMu sync.Mutex
	known map[string]*entry

	events eventState

	oomMu sync.Mutex
	oom   map[string]*oomCount // container ID → OOM kills
}

// entry is what the source keeps of one container.
type entry struct {
	c       Container // identity, inspect and the latest figures
	created int64
	inspect bool // to inspect at the next collection

	pid     int    // its init process, from inspect
	netHost bool   // in the host's network namespace: no network figures of its own
	parent  string // its --cgroup-parent
	cg      *cgroupDirs
	lookCg  bool // look for its cgroup at the next collection

	prev       cpuSample // the previous CPU sample, for CPU%
	hasPrev    bool
	lastCPU    float64 // CPU seconds at the previous collection, for its energy
	hasLastCPU bool
	inspectErr error // of its latest inspect
	figErr     error // of its latest figures

	busy    bool      // a stats call of it is out
	failing bool      // its latest stats call failed: its calls wait on no one
	tried   time.Time // when its latest stats call began
}

// oomCount is a container's OOM kills. The event can come before the
// container is first listed, so the count waits a few collections for it.
type oomCount struct {
	kills  uint64
	served bool // the container's series have been served
	missed int  // collections since it was last served, or since the first kill
}

// unservedCollections is how long an OOM count waits for its container to
// be served: one created after a list is in the next. Past that, it is a
// container left out (filtered, or over --docker.max-containers).
const unservedCollections = 3

// maxPending bounds what the event stream keeps between collections: the
// containers it names (past it, the next collection lists them all
// instead) and the OOM counts of containers not served yet.
const maxPending = 4096

// cpuSample is a container's CPU counter at a moment, for the next CPU%.
type cpuSample struct {
	usage uint64 // ns of CPU time
	read  time.Time
}

// New returns a source; nothing is read until Sample or Run.
func New(cfg Config) *Source {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	s := &Source{
		cfg:     cfg,
		Tracker: sampling.NewTracker(cfg.Log, "docker", errors.New("docker not sampled yet")),
		engine:  newEngineCPU(cfg.Procfs, cfg.Client.DaemonHost(), cfg.Log),
		main:    make(chan struct{}, cfg.Concurrency),
		slow:    make(chan struct{}, max(1, cfg.Concurrency/4)),
		known:   map[string]*entry{},
		oom:     map[string]*oomCount{},
	}
	s.events.dirty = map[string]string{}
	s.cgroups, s.noCgroups = openLocalCgroups(cfg)
	if s.cgroups != nil {
		s.hostMemory = hostMemory(cfg.Procfs)
		cfg.Log.Debug("container figures from cgroups where readable", "root", cfg.Cgroupfs, "v2", s.cgroups.v2)
	} else {
		cfg.Log.Debug("container figures from stats calls", "reason", s.noCgroups)
	}
	s.snap.Store(&Snapshot{})
	return s
}

// openLocalCgroups opens the cgroup hierarchy when the daemon's containers
// are this host's: the daemon is on a unix socket, and /proc and the
// hierarchy are there to read.
func openLocalCgroups(cfg Config) (*cgroupFS, string) {
	host := cfg.Client.DaemonHost()
	switch {
	case cfg.Cgroupfs == "":
		return nil, "cgroups not read (--docker.cgroups=false)"
	case cfg.Procfs == "":
		return nil, "no procfs to read containers' network from"
	case !strings.HasPrefix(host, "unix://"):
		return nil, "the daemon at " + host + " is not on this host's unix socket"
	}
	g, err := openCgroups(cfg.Cgroupfs, cfg.Procfs)
	if err != nil {
		return nil, err.Error()
	}
	return g, ""
}

// Snapshot returns the latest snapshot; it never touches the daemon.
func (s *Source) Snapshot() *Snapshot { return s.snap.Load() }

// Run collects every Interval and follows the daemon's events until ctx
// ends, reconnecting by itself when the daemon goes away and comes back.
// Then it closes the client.
func (s *Source) Run(ctx context.Context) {
	defer s.cfg.Client.Close()
	defer s.calls.Wait() // stats calls that outlived their collection end with ctx
	var watching sync.WaitGroup
	defer watching.Wait()
	started := false
	s.Every(ctx, func() time.Duration { return s.cfg.Interval }, func(ctx context.Context) {
		s.Sample(ctx)
		// The event stream starts once the daemon has answered: by then the
		// client has negotiated its API version, which it otherwise does
		// lazily, racing with Events.
		if !started && s.Snapshot().Up {
			started = true
			watching.Go(func() { s.watch(ctx) })
		}
	})
}

// Sample brings the known containers up to date (a full list when one is
// due, an inspect of each new or changed one) and reads the running ones'
// figures. What is known is served at once; the figures follow when every
// read and call has answered, or timed out.
func (s *Source) Sample(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	snap := Snapshot{InspectErrors: s.inspectErrors}
	snap.EngineCPUPercent, snap.HasEngineCPU = s.engine.sample()

	trusted := s.events.trusted()
	if !trusted || s.cfg.ListInterval <= 0 || time.Since(s.lastList) >= s.cfg.ListInterval {
		if err := s.list(ctx, !trusted); err != nil {
			s.events.relistLater()
			hint := " (is it running, and may this user read its socket? add the user to the docker group)"
			if errors.As(err, new(*tooLarge)) {
				hint = ""
			}
			s.publish(&snap, fmt.Errorf("docker daemon at %s: %w%s", s.cfg.Client.DaemonHost(), err, hint), start)
			return
		}
		s.lastList = time.Now()
	}
	snap.Up = true
	s.applyEvents()
	s.inspectMarked(ctx, s.unnamed()) // containers the events named: what are they?
	served, skipped := s.choose()
	snap.Skipped = skipped
	s.serve(snap, served) // what is known, before any call

	s.inspectMarked(ctx, served)
	s.readFigures(ctx, served)
	s.chargeEnergy(served)
	snap.IdlePower, snap.HasIdlePower = s.idlePower, s.hasIdlePower

	var problems []error
	if snap.Skipped > 0 {
		problems = append(problems, fmt.Errorf("%d containers left out: more match than the %d allowed (--docker.max-containers)", snap.Skipped, s.cfg.MaxContainers))
	}
	named := 0
	s.regMu.Lock()
	for _, e := range served { // in name order, so the same problem reads the same every time
		if err := errors.Join(e.inspectErr, e.figErr); err != nil && s.known[e.c.ID] == e {
			if named++; named <= maxNamed {
				problems = append(problems, fmt.Errorf("container %s: %w", e.c.Name, err))
			}
		}
	}
	s.regMu.Unlock()
	if named > maxNamed {
		problems = append(problems, fmt.Errorf("and %d more containers", named-maxNamed))
	}
	snap.InspectErrors = s.inspectErrors
	s.publish(s.served(snap, served), errors.Join(problems...), start)
}

// maxNamed is how many failing containers the health error names, so that
// it stays readable with hundreds of them.
const maxNamed = 10

// list lists every container and brings the known set to it: new ones
// are inspected, gone ones dropped, and those whose state changed (or
// all, when the event stream cannot be trusted to tell changes) inspected
// again.
func (s *Source) list(ctx context.Context, inspectAll bool) error {
	listCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	list, err := s.cfg.Client.ContainerList(listCtx, container.ListOptions{All: true})
	cancel()
	if err != nil {
		s.regMu.Lock()
		clear(s.known) // the daemon is gone: so are its containers' series
		s.known = map[string]*entry{}
		s.regMu.Unlock()
		return err
	}
	listed := make(map[string]bool, len(list))
	s.regMu.Lock()
	defer s.regMu.Unlock()
	for _, l := range list {
		name := strings.TrimPrefix(firstOr(l.Names, l.ID), "/")
		if !s.cfg.Filter.match(name, l.Image) {
			continue
		}
		listed[l.ID] = true
		e := s.known[l.ID]
		if e == nil {
			e = &entry{inspect: true}
			s.known[l.ID] = e
		}
		if e.c.State != l.State || inspectAll {
			e.inspect = true
		}
		e.setState(l.State)
		e.c.ID, e.c.Name, e.c.Image, e.c.Labels, e.created = l.ID, name, l.Image, s.labels(l.Labels), l.Created
	}
	for id := range s.known {
		if !listed[id] {
			delete(s.known, id)
		}
	}
	return nil
}

// setState records the container's state; figures of another state are
// not served.
func (e *entry) setState(state string) {
	if e.c.State == state {
		return
	}
	e.c.State = state
	e.clearFigures()
	e.c.Path, e.c.PathWhy = "", ""
	e.hasPrev, e.cg, e.lookCg, e.figErr = false, nil, true, nil
}

// clearFigures leaves e's figures out: they are not known now.
func (e *entry) clearFigures() {
	c := &e.c
	c.HasStats, c.HasCPU, c.HasCPUUsage, c.HasThrottling, c.HasMemory, c.HasMemoryLimit, c.HasNetwork, c.HasPIDs = false, false, false, false, false, false, false, false
	c.Rx, c.Tx = Packets{}, Packets{}
}

// choose picks the containers served and, past MaxContainers, keeps the
// running containers first, then the oldest, so the served set changes
// little as containers come and go. The result is in name order.
func (s *Source) choose() ([]*entry, int) {
	s.regMu.Lock()
	es := slices.Collect(maps.Values(s.known))
	s.regMu.Unlock()
	skipped := 0
	if max := s.cfg.MaxContainers; max > 0 && len(es) > max {
		slices.SortFunc(es, func(a, b *entry) int {
			if ar, br := a.c.State == "running", b.c.State == "running"; ar != br {
				if ar {
					return -1
				}
				return 1
			}
			return cmp.Or(cmp.Compare(a.created, b.created), strings.Compare(a.c.Name, b.c.Name), strings.Compare(a.c.ID, b.c.ID))
		})
		skipped, es = len(es)-max, es[:max]
	}
	slices.SortFunc(es, func(a, b *entry) int {
		return cmp.Or(strings.Compare(a.c.Name, b.c.Name), strings.Compare(a.c.ID, b.c.ID))
	})
	return es, skipped
}

// unnamed are the containers known from events only, not inspected yet.
func (s *Source) unnamed() []*entry {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	var es []*entry
	for _, e := range s.known {
		if e.c.Name == "" {
			es = append(es, e)
		}
	}
	return es
}

// serve serves the chosen containers at once, each with its latest
// figures, so that containers whose calls are slow delay nobody's series,
// nor daemon_up.
func (s *Source) serve(snap Snapshot, es []*entry) {
	s.snap.Store(s.snapshot(snap, es, false))
	s.Changed()
}

// served is the collection's result: snap with the containers es still
// known, as they are now.
func (s *Source) served(snap Snapshot, es []*entry) *Snapshot {
	return s.snapshot(snap, es, true)
}

// snapshot is snap with the containers es as they are now; collected:
// the collection is over, so OOM counts of containers gone are dropped.
func (s *Source) snapshot(snap Snapshot, es []*entry, collected bool) *Snapshot {
	snap.Containers = make([]Container, 0, len(es))
	s.regMu.Lock()
	for _, e := range es {
		if s.known[e.c.ID] == e && e.c.Name != "" {
			snap.Containers = append(snap.Containers, e.c)
		}
	}
	s.regMu.Unlock()
	s.countOOM(snap.Containers, collected)
	return &snap
}

// publish serves snap as the collection's result and records it.
func (s *Source) publish(snap *Snapshot, err error, start time.Time) {
	s.snap.Store(snap)
	now := time.Now()
	s.Observe(err, now, now.Sub(start))
}

// inspectMarked inspects the containers marked for it, concurrently: what
// only inspect tells (restarts, health, exit code, start time) and what
// reading the cgroup needs (init process, network mode, cgroup parent).
func (s *Source) inspectMarked(ctx context.Context, es []*entry) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, s.cfg.Concurrency)
	var failed atomic.Uint64
	for _, e := range es {
		if !e.inspect {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if s.inspect(ctx, e) {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	s.inspectErrors += failed.Load()
}

// inspect inspects one container; failed: the call failed (a container
// removed meanwhile is not a failure: it goes at once).
func (s *Source) inspect(ctx context.Context, e *entry) (failed bool) {
	callCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	info, err := s.cfg.Client.ContainerInspect(callCtx, e.c.ID)
	cancel()
	s.regMu.Lock()
	defer s.regMu.Unlock()
	switch {
	case cerrdefs.IsNotFound(err):
		delete(s.known, e.c.ID)
		return false
	case err == nil && (info.ContainerJSONBase == nil || info.State == nil):
		err = errors.New("inspect: the answer has no state")
	case err != nil:
		err = fmt.Errorf("inspect: %w", err)
	}
	e.inspectErr = err
	if err != nil {
		e.c.HasInspect = false
		return true
	}
	e.inspect = false
	if name := strings.TrimPrefix(info.Name, "/"); name != "" {
		e.c.Name = name
	}
	if cfg := info.Config; cfg != nil {
		e.c.Image, e.c.Labels = cmp.Or(cfg.Image, e.c.Image), s.labels(cfg.Labels)
	}
	if e.c.Name == "" || !s.cfg.Filter.match(e.c.Name, e.c.Image) {
		delete(s.known, e.c.ID) // filtered out (a container the events named, or renamed)
		return false
	}
	if t, err := time.Parse(time.RFC3339Nano, info.Created); err == nil {
		e.created = t.Unix()
	}
	e.setState(string(info.State.Status))
	fillInspect(&e.c, info)
	e.pid = info.State.Pid
	e.netHost, e.parent = false, ""
	if hc := info.HostConfig; hc != nil {
		e.netHost, e.parent = hc.NetworkMode.IsHost(), hc.CgroupParent
	}
	e.cg, e.lookCg = nil, true // found again: its limit or quota may have changed
	return false
}

// fillInspect takes what only inspect tells: restarts, health, exit code
// and start time.
func fillInspect(c *Container, info container.InspectResponse) {
	c.HasInspect = true
	c.RestartCount = float64(info.RestartCount)
	st := info.State
	c.Health = "none" // docker sends no Health without a healthcheck, podman an empty one
	if st.Health != nil && st.Health.Status != "" {
		c.Health = string(st.Health.Status)
	}
	if !slices.Contains(HealthStatuses, c.Health) {
		c.Health = ""
	}
	c.ExitCode = float64(st.ExitCode)
	c.StartedAt = time.Time{}
	if t, err := time.Parse(time.RFC3339Nano, st.StartedAt); err == nil && t.Year() > 1 {
		c.StartedAt = t
	}
}

// countOOM sets the OOM counts of the containers served, and drops the
// counts of containers no longer served. A count of a container not
// served yet waits unservedCollections for it.
func (s *Source) countOOM(cs []Container, collected bool) {
	s.oomMu.Lock()
	defer s.oomMu.Unlock()
	served := map[string]bool{}
	for i := range cs {
		served[cs[i].ID] = true
		if c := s.oom[cs[i].ID]; c != nil {
			cs[i].OOMKills = c.kills
			if collected {
				c.served, c.missed = true, 0
			}
		}
	}
	if !collected {
		return
	}
	for id, c := range s.oom {
		if served[id] {
			continue
		}
		if c.missed++; c.served || c.missed > unservedCollections {
			delete(s.oom, id)
		}
	}
}

// labels picks the allowlisted labels a container carries.
func (s *Source) labels(all map[string]string) []Label {
	var out []Label
	for _, k := range s.cfg.Labels {
		if v, ok := all[k]; ok {
			out = append(out, Label{k, v})
		}
	}
	return out
}

func firstOr(names []string, fallback string) string {
	if len(names) > 0 {
		return names[0]
	}
	return fallback
}
