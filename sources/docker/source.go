// Package docker reads container resources through the Docker Engine API
// (github.com/docker/docker/client). It lists containers, inspects each and
// takes one-shot stats of the running ones in the background, concurrently
// with a bound and a per-call timeout, and publishes snapshots that scrapes
// only read.
package docker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

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
	Procfs        string // where /proc is, for the engine's own CPU use; empty: not measured
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

	// From inspect, of every container.
	HasInspect   bool
	RestartCount float64
	Health       string    // one of HealthStatuses; empty when the daemon said something else
	ExitCode     float64   // of the last run
	StartedAt    time.Time // zero: never started

	// From the one-shot stats of a running container.
	HasStats         bool // the stats call succeeded
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
}

// Packets are one direction's packet counters, summed over the interfaces.
type Packets struct {
	Known                    bool
	Packets, Errors, Dropped float64
}

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
}

// Source collects container stats. Its health is nil when the daemon
// answered and every call about every container succeeded.
type Source struct {
	*sampling.Tracker
	snap atomic.Pointer[Snapshot]
	cfg  Config

	mu            sync.Mutex // serialises Sample
	engine        *engineCPU
	inspectErrors uint64

	prevMu sync.Mutex
	prev   map[string]cpuSample // container ID → last CPU sample

	oomMu sync.Mutex
	oom   map[string]*oomCount // container ID → OOM kills
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
		prev:    map[string]cpuSample{},
		oom:     map[string]*oomCount{},
	}
	s.snap.Store(&Snapshot{})
	return s
}

// Snapshot returns the latest snapshot; it never touches the daemon.
func (s *Source) Snapshot() *Snapshot { return s.snap.Load() }

// Run collects every Interval and follows OOM events until ctx ends,
// reconnecting by itself when the daemon goes away and comes back. Then it
// closes the client.
func (s *Source) Run(ctx context.Context) {
	defer s.cfg.Client.Close()
	var watching sync.WaitGroup
	defer watching.Wait()
	started := false
	sampling.Every(ctx, func() time.Duration { return s.cfg.Interval }, func(ctx context.Context) {
		s.Sample(ctx)
		// The event stream starts once the daemon has answered: by then the
		// client has negotiated its API version, which it otherwise does
		// lazily, racing with Events.
		if !started && s.Snapshot().Up {
			started = true
			watching.Go(func() { s.watchOOM(ctx) })
		}
	})
}

// Sample lists containers, inspects each and takes one-shot stats of the
// running ones. What the list says is served at once; the figures follow
// when every call has answered or timed out.
func (s *Source) Sample(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	snap := Snapshot{InspectErrors: s.inspectErrors}
	snap.EngineCPUPercent, snap.HasEngineCPU = s.engine.sample()
	listCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	list, err := s.cfg.Client.ContainerList(listCtx, container.ListOptions{All: true})
	cancel()
	if err != nil {
		hint := " (is it running, and may this user read its socket? add the user to the docker group)"
		if errors.As(err, new(*tooLarge)) {
			hint = ""
		}
		s.publish(&snap, fmt.Errorf("docker daemon at %s: %w%s", s.cfg.Client.DaemonHost(), err, hint), start)
		return
	}
	snap.Up = true
	var cs []Container
	cs, snap.Skipped = s.choose(list)
	s.serveListed(snap, cs)

	var (
		wg            sync.WaitGroup
		sem           = make(chan struct{}, s.cfg.Concurrency)
		errs          = make([]error, len(cs)) // each worker writes its own
		gone          = make([]bool, len(cs))  // removed since the list
		inspectFailed = make([]bool, len(cs))
	)
	for i := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			gone[i], inspectFailed[i], errs[i] = s.collect(ctx, &cs[i])
		}()
	}
	wg.Wait()

	kept := cs[:0]
	var problems []error
	if snap.Skipped > 0 {
		problems = append(problems, fmt.Errorf("%d containers left out: more match than the %d allowed (--docker.max-containers)", snap.Skipped, s.cfg.MaxContainers))
	}
	named := 0
	for i, c := range cs { // in name order, so the same problem reads the same every time
		if inspectFailed[i] {
			s.inspectErrors++
		}
		if errs[i] != nil {
			if named++; named <= maxNamed {
				problems = append(problems, fmt.Errorf("container %s: %w", c.Name, errs[i]))
			}
		}
		if !gone[i] {
			kept = append(kept, c)
		}
	}
	if named > maxNamed {
		problems = append(problems, fmt.Errorf("and %d more containers", named-maxNamed))
	}
	snap.InspectErrors = s.inspectErrors
	snap.Containers = kept
	s.forget(kept)
	s.publish(&snap, errors.Join(problems...), start)
}

// maxNamed is how many failing containers the health error names, so that
// it stays readable with hundreds of them.
const maxNamed = 10

// choose filters the list and, past MaxContainers, keeps the running
// containers first, then the oldest, so the served set changes little as
// containers come and go. The result is in name order.
func (s *Source) choose(list []container.Summary) ([]Container, int) {
	type listed struct {
		Container
		created int64
	}
	var ls []listed
	for _, c := range list {
		name := strings.TrimPrefix(firstOr(c.Names, c.ID), "/")
		if !s.cfg.Filter.match(name, c.Image) {
			continue
		}
		ls = append(ls, listed{Container{ID: c.ID, Name: name, Image: c.Image, State: c.State, Labels: s.labels(c.Labels)}, c.Created})
	}
	skipped := 0
	if max := s.cfg.MaxContainers; max > 0 && len(ls) > max {
		slices.SortFunc(ls, func(a, b listed) int {
			if ar, br := a.State == "running", b.State == "running"; ar != br {
				if ar {
					return -1
				}
				return 1
			}
			return cmp.Or(cmp.Compare(a.created, b.created), strings.Compare(a.Name, b.Name))
		})
		skipped, ls = len(ls)-max, ls[:max]
	}
	cs := make([]Container, len(ls))
	for i, l := range ls {
		cs[i] = l.Container
	}
	slices.SortFunc(cs, func(a, b Container) int { return strings.Compare(a.Name, b.Name) })
	return cs, skipped
}

// serveListed serves the listed containers at once, each with its figures
// of the previous collection while its state has not changed, so that
// containers whose calls are slow delay nobody's series, nor daemon_up.
func (s *Source) serveListed(snap Snapshot, cs []Container) {
	prev := map[string]*Container{}
	old := s.Snapshot().Containers
	for i := range old {
		prev[old[i].ID] = &old[i]
	}
	snap.Containers = make([]Container, len(cs))
	for i, c := range cs {
		if p, ok := prev[c.ID]; ok && p.State == c.State {
			figures := *p
			figures.Name, figures.Image, figures.Labels = c.Name, c.Image, c.Labels
			c = figures
		}
		snap.Containers[i] = c
	}
	s.snap.Store(&snap)
	s.Changed()
}

// publish serves snap as the collection's result and records it.
func (s *Source) publish(snap *Snapshot, err error, start time.Time) {
	s.snap.Store(snap)
	now := time.Now()
	s.Observe(err, now, now.Sub(start))
}

// collect inspects c and, when it runs, takes its stats. gone: the
// container was removed since the list (not an error, and no series).
func (s *Source) collect(ctx context.Context, c *Container) (gone, inspectFailed bool, err error) {
	callCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	info, inspectErr := s.cfg.Client.ContainerInspect(callCtx, c.ID)
	cancel()
	switch {
	case cerrdefs.IsNotFound(inspectErr):
		return true, false, nil
	case inspectErr == nil && (info.ContainerJSONBase == nil || info.State == nil):
		inspectErr = errors.New("inspect: the answer has no state")
	case inspectErr != nil:
		inspectErr = fmt.Errorf("inspect: %w", inspectErr)
	default:
		fillInspect(c, info)
	}
	if c.State != "running" {
		return false, inspectErr != nil, inspectErr
	}
	statsErr := s.stats(ctx, c)
	if cerrdefs.IsNotFound(statsErr) {
		return true, false, nil
	}
	if statsErr != nil {
		statsErr = fmt.Errorf("stats: %w", statsErr)
	}
	return false, inspectErr != nil, errors.Join(inspectErr, statsErr)
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
	if t, err := time.Parse(time.RFC3339Nano, st.StartedAt); err == nil && t.Year() > 1 {
		c.StartedAt = t
	}
}

// stats fills c from one one-shot stats call.
func (s *Source) stats(ctx context.Context, c *Container) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	resp, err := s.cfg.Client.ContainerStatsOneShot(ctx, c.ID)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return fmt.Errorf("decoding: %w", err)
	}
	s.fill(c, &st)
	return nil
}

// fill computes a container's figures from its stats, as docker stats
// does. The API omits zero memory, limit and PID figures, so a zero there
// is a figure the daemon did not give.
func (s *Source) fill(c *Container, st *container.StatsResponse) {
	c.HasStats = true
	mem := st.MemoryStats
	c.HasMemory, c.MemoryBytes = mem.Usage > 0, float64(memoryUsage(mem))
	c.HasMemoryLimit, c.MemoryLimitBytes = mem.Limit > 0, float64(mem.Limit)
	for _, n := range st.Networks {
		c.HasNetwork = true
		c.RxBytes += float64(n.RxBytes)
		c.TxBytes += float64(n.TxBytes)
		c.Rx.add(n.RxPackets, n.RxErrors, n.RxDropped)
		c.Tx.add(n.TxPackets, n.TxErrors, n.TxDropped)
	}
	// Bytes moved in no packets are counters the daemon does not fill
	// (podman sends zeros): unknown, not zero.
	c.Rx.Known = c.HasNetwork && (c.Rx.Packets > 0 || c.RxBytes == 0)
	c.Tx.Known = c.HasNetwork && (c.Tx.Packets > 0 || c.TxBytes == 0)
	for _, e := range st.BlkioStats.IoServiceBytesRecursive {
		switch strings.ToLower(e.Op) {
		case "read":
			c.BlockReadBytes += float64(e.Value)
		case "write":
			c.BlockWriteBytes += float64(e.Value)
		}
	}
	c.HasPIDs, c.PIDs = st.PidsStats.Current > 0, float64(st.PidsStats.Current)

	cpu := st.CPUStats
	c.HasCPUUsage, c.CPUSeconds = cpu.CPUUsage.TotalUsage > 0, float64(cpu.CPUUsage.TotalUsage)/1e9
	// Without a CPU quota there are no periods to be throttled in; podman
	// sends zeros even with one. Either way there is nothing to tell.
	if th := cpu.ThrottlingData; th.Periods > 0 {
		c.HasThrottling, c.ThrottledPeriods, c.ThrottledSeconds = true, float64(th.ThrottledPeriods), float64(th.ThrottledTime)/1e9
	}
	if !c.HasCPUUsage {
		return
	}
	// CPU% from this container's previous sample: one-shot stats (and
	// podman) send no precpu_stats. The elapsed time is the daemon's own
	// "read" timestamps, which keeps 100% = one busy core on any daemon.
	cur := cpuSample{usage: cpu.CPUUsage.TotalUsage, read: st.Read}
	s.prevMu.Lock()
	prev, ok := s.prev[c.ID]
	s.prev[c.ID] = cur
	s.prevMu.Unlock()
	if ok && cur.read.After(prev.read) && cur.usage >= prev.usage {
		c.HasCPU = true
		c.CPUPercent = float64(cur.usage-prev.usage) / float64(cur.read.Sub(prev.read).Nanoseconds()) * 100
	}
}

func (p *Packets) add(packets, errs, dropped uint64) {
	p.Packets += float64(packets)
	p.Errors += float64(errs)
	p.Dropped += float64(dropped)
}

// memoryUsage is usage less inactive page cache, as the docker CLI computes
// it: total_inactive_file on cgroup v1, inactive_file on cgroup v2.
func memoryUsage(m container.MemoryStats) uint64 {
	if v, v1 := m.Stats["total_inactive_file"]; v1 && v < m.Usage {
		return m.Usage - v
	}
	if v := m.Stats["inactive_file"]; v < m.Usage {
		return m.Usage - v
	}
	return m.Usage
}

// forget drops what is kept about containers no longer served: their CPU
// samples and OOM counts go with their series. An OOM count of a container
// not served yet waits unservedCollections for it. It sets the OOM counts
// of the ones served.
func (s *Source) forget(cs []Container) {
	served := map[string]bool{}
	for _, c := range cs {
		served[c.ID] = true
	}
	s.prevMu.Lock()
	for id := range s.prev {
		if !served[id] {
			delete(s.prev, id)
		}
	}
	s.prevMu.Unlock()
	s.oomMu.Lock()
	for i := range cs {
		if c := s.oom[cs[i].ID]; c != nil {
			cs[i].OOMKills = c.kills
			c.served, c.missed = true, 0
		}
	}
	for id, c := range s.oom {
		if served[id] {
			continue
		}
		if c.missed++; c.served || c.missed > unservedCollections {
			delete(s.oom, id)
		}
	}
	s.oomMu.Unlock()
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

// watchOOM counts OOM kills from the daemon's event stream, reconnecting
// after the daemon goes away.
func (s *Source) watchOOM(ctx context.Context) {
	opts := events.ListOptions{Filters: filters.NewArgs(filters.Arg("type", "container"), filters.Arg("event", "oom"))}
	for ctx.Err() == nil {
		msgs, errs := s.cfg.Client.Events(ctx, opts)
	read:
		for {
			select {
			case m := <-msgs:
				s.oomMu.Lock()
				c := s.oom[m.Actor.ID]
				if c == nil {
					c = &oomCount{}
					s.oom[m.Actor.ID] = c
				}
				c.kills++
				s.oomMu.Unlock()
			case err := <-errs:
				s.cfg.Log.Debug("docker event stream ended; reconnecting", "err", err)
				break read
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(s.cfg.Interval):
		}
	}
}
