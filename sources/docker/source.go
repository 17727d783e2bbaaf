// Package docker reads container resources through the Docker Engine API
// (github.com/docker/docker/client). It lists containers and takes one-shot
// stats in the background, concurrently with a bound and a per-call
// timeout, and publishes a snapshot that scrapes only read.
package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// Engine is the part of the Docker Engine API client the source uses
// (*client.Client from github.com/docker/docker/client satisfies it), so
// tests can stand in for the daemon where the real one cannot misbehave on
// demand.
type Engine interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error)
	ContainerStatsOneShot(ctx context.Context, id string) (container.StatsResponseReader, error)
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	DaemonHost() string
}

// Config is what the source needs.
type Config struct {
	Client      Engine
	Interval    time.Duration // between collections
	Timeout     time.Duration // per Engine API call
	Concurrency int           // stats calls in flight at once
	Labels      []string      // container labels carried as attributes (an allowlist)
	Filter      Filter
	Log         *slog.Logger
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

// Container is one container at the latest collection.
type Container struct {
	ID, Name, Image, State string
	Labels                 []Label // allowlisted labels present on the container, by key
	RestartCount           float64
	OOMKills               uint64 // seen in the event stream since the exporter started

	HasStats         bool // a running container whose stats call succeeded
	HasCPU           bool // two samples exist, so CPU% can be computed
	CPUPercent       float64
	MemoryBytes      float64 // usage less inactive page cache, as docker stats shows it
	MemoryLimitBytes float64
	HasNetwork       bool
	RxBytes, TxBytes float64
	BlockReadBytes   float64
	BlockWriteBytes  float64
	PIDs             float64
}

// Label is a container label carried as an attribute.
type Label struct{ Key, Value string }

// Snapshot is what the latest collection saw.
type Snapshot struct {
	Up         bool // the daemon answered the list
	Containers []Container
}

// Source collects container stats. Its health is nil when the daemon
// answered and every stats call succeeded.
type Source struct {
	*sampling.Latest[Snapshot]
	cfg Config

	mu sync.Mutex // serialises Sample

	prevMu sync.Mutex
	prev   map[string]cpuSample // container ID → last CPU sample

	oomMu sync.Mutex
	oom   map[string]uint64 // container ID → OOM kills
}

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
	return &Source{
		cfg:    cfg,
		Latest: sampling.NewLatest(cfg.Log, "docker", &Snapshot{}, errors.New("docker not sampled yet")),
		prev:   map[string]cpuSample{},
		oom:    map[string]uint64{},
	}
}

// Run collects every Interval and follows OOM events until ctx ends,
// reconnecting by itself when the daemon goes away and comes back.
func (s *Source) Run(ctx context.Context) {
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

// Sample lists containers and takes one-shot stats of the running ones.
func (s *Source) Sample(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	listCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	list, err := s.cfg.Client.ContainerList(listCtx, container.ListOptions{All: true})
	cancel()
	if err != nil {
		s.Publish(&Snapshot{}, fmt.Errorf("docker daemon at %s: %w (is it running, and may this user read its socket? add the user to the docker group)", s.cfg.Client.DaemonHost(), err), start)
		return
	}

	var cs []Container
	for _, c := range list {
		name := strings.TrimPrefix(firstOr(c.Names, c.ID), "/")
		if !s.cfg.Filter.match(name, c.Image) {
			continue
		}
		cs = append(cs, Container{ID: c.ID, Name: name, Image: c.Image, State: c.State, Labels: s.labels(c.Labels)})
	}

	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, s.cfg.Concurrency)
		errMu sync.Mutex
		errs  []error
		seen  = map[string]bool{}
		gone  = make([]bool, len(cs)) // removed since the list; each worker writes its own
	)
	for i := range cs {
		c := &cs[i]
		seen[c.ID] = true
		if c.State != "running" {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := s.stats(ctx, c)
			if cerrdefs.IsNotFound(err) {
				gone[i] = true // not an error, and no series
				return
			}
			if err != nil {
				errMu.Lock()
				errs = append(errs, fmt.Errorf("container %s: %w", c.Name, err))
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	kept := cs[:0]
	for i, c := range cs {
		if !gone[i] {
			kept = append(kept, c)
		}
	}
	cs = kept

	s.prevMu.Lock()
	for id := range s.prev { // removed containers' series go, and their state with them
		if !seen[id] {
			delete(s.prev, id)
		}
	}
	s.prevMu.Unlock()
	s.oomMu.Lock()
	for i := range cs {
		cs[i].OOMKills = s.oom[cs[i].ID]
	}
	for id := range s.oom {
		if !seen[id] {
			delete(s.oom, id)
		}
	}
	s.oomMu.Unlock()
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	s.Publish(&Snapshot{Up: true, Containers: cs}, errors.Join(errs...), start)
}

// stats fills c from one one-shot stats call and an inspect (restart count).
func (s *Source) stats(ctx context.Context, c *Container) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if info, err := s.cfg.Client.ContainerInspect(ctx, c.ID); err == nil {
		c.RestartCount = float64(info.RestartCount)
	}
	resp, err := s.cfg.Client.ContainerStatsOneShot(ctx, c.ID)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return fmt.Errorf("decoding stats: %w", err)
	}
	s.fill(c, &st)
	return nil
}

// fill computes a container's figures from its stats, as docker stats does.
func (s *Source) fill(c *Container, st *container.StatsResponse) {
	c.HasStats = true
	mem := st.MemoryStats
	c.MemoryBytes = float64(memoryUsage(mem))
	c.MemoryLimitBytes = float64(mem.Limit)
	for _, n := range st.Networks {
		c.HasNetwork = true
		c.RxBytes += float64(n.RxBytes)
		c.TxBytes += float64(n.TxBytes)
	}
	for _, e := range st.BlkioStats.IoServiceBytesRecursive {
		switch strings.ToLower(e.Op) {
		case "read":
			c.BlockReadBytes += float64(e.Value)
		case "write":
			c.BlockWriteBytes += float64(e.Value)
		}
	}
	c.PIDs = float64(st.PidsStats.Current)

	// CPU% from this container's previous sample: one-shot stats (and
	// podman) send no precpu_stats. The elapsed time is the daemon's own
	// "read" timestamps, which keeps 100% = one busy core on any daemon.
	cur := cpuSample{usage: st.CPUStats.CPUUsage.TotalUsage, read: st.Read}
	s.prevMu.Lock()
	prev, ok := s.prev[c.ID]
	s.prev[c.ID] = cur
	s.prevMu.Unlock()
	if ok && cur.read.After(prev.read) && cur.usage >= prev.usage {
		c.HasCPU = true
		c.CPUPercent = float64(cur.usage-prev.usage) / float64(cur.read.Sub(prev.read).Nanoseconds()) * 100
	}
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
				s.oom[m.Actor.ID]++
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
