package docker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
)

// readFigures reads the figures of the running containers among es: from
// their cgroups where they are readable, else by stats calls.
func (s *Source) readFigures(ctx context.Context, es []*entry) {
	var byStats []*entry
	s.regMu.Lock()
	for _, e := range es {
		if e.c.State != "running" {
			e.c.Path, e.c.PathWhy = "", ""
			continue
		}
		if s.cgroups != nil && e.cg == nil && e.lookCg {
			s.findCgroup(e)
		}
		if e.cg != nil && s.readCgroup(e) {
			e.figErr = nil
			continue
		}
		if s.cgroups == nil {
			e.c.PathWhy = s.noCgroups
		}
		byStats = append(byStats, e)
	}
	s.regMu.Unlock()
	s.statsCalls(ctx, byStats)
}

// findCgroup looks for e's cgroup once after each inspect; it holds regMu.
func (s *Source) findCgroup(e *entry) {
	e.lookCg = false
	if e.pid <= 0 {
		e.c.PathWhy = "no init process to read the network of"
		return
	}
	dirs, err := s.cgroups.find(e.c.ID, e.pid, e.parent)
	if err != nil {
		e.c.PathWhy = err.Error()
		return
	}
	e.cg = &dirs
}

// readCgroup fills e's figures from its cgroup and network namespace;
// false: they are not readable (e goes by stats calls, and its cgroup is
// looked for again at its next inspect). It holds regMu.
func (s *Source) readCgroup(e *entry) bool {
	f, err := s.cgroups.figures(e.cg)
	var n netFigures
	if err == nil && !e.netHost {
		n, err = s.cgroups.netDev(e.pid)
	}
	if err != nil {
		e.cg, e.c.PathWhy = nil, "cgroup not readable: "+err.Error()
		return false
	}
	c := &e.c
	c.Path, c.PathWhy, c.HasStats = PathCgroup, "", true
	c.HasCPUUsage, c.CPUSeconds = true, float64(f.cpuNanos)/1e9
	c.HasThrottling = f.periods > 0
	c.ThrottledPeriods, c.ThrottledSeconds = float64(f.throttled), float64(f.throttledNanos)/1e9
	c.HasMemory, c.MemoryBytes = f.memUsage > 0, float64(f.memUsage)
	if f.memInactiveFile < f.memUsage {
		c.MemoryBytes = float64(f.memUsage - f.memInactiveFile) // as memoryUsage: docker stats' figure
	}
	limit := f.memLimit
	if s.hostMemory > 0 && (limit == 0 || limit > s.hostMemory) {
		limit = s.hostMemory // as docker stats shows an unlimited container
	}
	c.HasMemoryLimit, c.MemoryLimitBytes = limit > 0, float64(limit)
	c.BlockReadBytes, c.BlockWriteBytes = float64(f.blockRead), float64(f.blockWrite)
	c.HasPIDs, c.PIDs = f.pids > 0, float64(f.pids)
	c.HasNetwork, c.RxBytes, c.TxBytes, c.Rx, c.Tx = n.known, float64(n.rxBytes), float64(n.txBytes), n.rx, n.tx
	e.cpuPercent(cpuSample{usage: f.cpuNanos, read: f.read})
	return true
}

// cpuPercent sets CPU% from e's previous sample: 100 per busy core, over
// the time between the two reads (podman sends no precpu_stats, and its
// system_cpu_usage counts busy time only). It holds regMu.
func (e *entry) cpuPercent(cur cpuSample) {
	prev, ok := e.prev, e.hasPrev
	e.prev, e.hasPrev = cur, true
	e.c.HasCPU = false
	if ok && cur.read.After(prev.read) && cur.usage >= prev.usage {
		e.c.HasCPU = true
		e.c.CPUPercent = float64(cur.usage-prev.usage) / float64(cur.read.Sub(prev.read).Nanoseconds()) * 100
	}
}

// statsCalls takes one-shot stats of es. The collection waits for the
// answers of containers that answer, for at most one interval (or the
// call timeout, if shorter): calls still out then are cancelled, and their
// containers' later calls go by a lane of their own (a quarter of the
// slots, the longest untried first, each call as bounded) that no
// collection waits on. So a container whose calls hang costs its own
// figures only, never the others' freshness, and one that failed once
// comes back within a few collections.
func (s *Source) statsCalls(ctx context.Context, es []*entry) {
	wait := min(s.cfg.Timeout, cmp.Or(s.cfg.Interval, s.cfg.Timeout))
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	// Containers that answered last time first, then new ones.
	s.regMu.Lock()
	es = slices.Clone(es)
	slices.SortStableFunc(es, func(a, b *entry) int { return cmp.Or(cmp.Compare(rank(a), rank(b)), a.tried.Compare(b.tried)) })
	s.regMu.Unlock()
	waited := make(chan struct{}, len(es))
	n := 0
	for _, e := range es {
		s.regMu.Lock()
		busy, failing := e.busy, e.failing
		e.busy = true
		s.regMu.Unlock()
		switch {
		case busy: // its previous call has not answered yet: it keeps its figures and its error
		case failing:
			select {
			case s.slow <- struct{}{}:
				s.calls.Go(func() { s.statsCall(ctx, e, s.slow, wait, nil) })
			default: // it keeps its error until a call of it answers
				s.regMu.Lock()
				e.busy = false
				s.regMu.Unlock()
			}
		default:
			select {
			case s.main <- struct{}{}:
				n++
				s.calls.Go(func() { s.statsCall(waitCtx, e, s.main, wait, waited) })
			case <-waitCtx.Done(): // not its fault: it stays in the lane of those that answer
				s.cutShort(e, fmt.Errorf("stats: no call slot free within %v (--docker.concurrency)", wait))
			}
		}
	}
	for range n {
		<-waited
	}
}

// rank orders stats calls: containers that answered, new ones, failing ones.
func rank(e *entry) int {
	switch {
	case e.failing:
		return 2
	case !e.hasPrev:
		return 1
	}
	return 0
}

// statsCall takes e's stats, within wait, holding a token of lane, which
// it gives back; waited: the collection waits for it.
func (s *Source) statsCall(ctx context.Context, e *entry, lane chan struct{}, wait time.Duration, waited chan<- struct{}) {
	defer func() {
		<-lane
		if waited != nil {
			waited <- struct{}{}
		}
	}()
	s.regMu.Lock()
	id := e.c.ID
	start := time.Now()
	e.tried = start
	s.regMu.Unlock()
	callCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	st, err := s.stats(callCtx, id)
	if err != nil && ctx.Err() != nil && time.Since(start) < wait/2 {
		// The collection ended before this call had most of its own wait
		// (it started late, behind others): not the container's fault, so
		// it stays in the lane of those that answer. A call that hung for
		// half a wait or more is its container's.
		s.cutShort(e, fmt.Errorf("stats: the collection's wait (%v) ended %v into its call", wait, time.Since(start).Round(time.Millisecond)))
		return
	}
	if err != nil && errors.Is(callCtx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("no answer within %v", wait)
	}
	s.done(e, st, err)
}

// cutShort records a call of e that ended for want of time or a slot, not
// by its own failure: e has no figures this collection but is not failing.
func (s *Source) cutShort(e *entry, err error) {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	e.busy = false
	e.figErr = err
	e.clearFigures()
}

// done records the end of a stats call of e: its figures, or its error.
func (s *Source) done(e *entry, st *container.StatsResponse, err error) {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	e.busy = false
	if cerrdefs.IsNotFound(err) { // removed since it was listed
		if s.known[e.c.ID] == e {
			delete(s.known, e.c.ID)
		}
		return
	}
	e.failing = err != nil
	if err != nil {
		e.figErr = fmt.Errorf("stats: %w", err)
		e.clearFigures()
		return
	}
	e.figErr = nil
	if st != nil && e.c.State == "running" {
		e.c.Path = PathStats
		e.fill(st)
	}
}

// stats is one one-shot stats call. Bodies are read under the client's
// bounds: each body's, and the bytes of all bodies being read at once.
func (s *Source) stats(ctx context.Context, id string) (*container.StatsResponse, error) {
	resp, err := s.cfg.Client.ContainerStatsOneShot(ctx, id)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	return &st, nil
}

// fill computes a container's figures from its stats, as docker stats
// does. The API omits zero memory, limit and PID figures, so a zero there
// is a figure the daemon did not give. It holds regMu.
func (e *entry) fill(st *container.StatsResponse) {
	c := &e.c
	c.HasStats = true
	mem := st.MemoryStats
	c.HasMemory, c.MemoryBytes = mem.Usage > 0, float64(memoryUsage(mem))
	c.HasMemoryLimit, c.MemoryLimitBytes = mem.Limit > 0, float64(mem.Limit)
	c.HasNetwork, c.RxBytes, c.TxBytes, c.Rx, c.Tx = false, 0, 0, Packets{}, Packets{}
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
	c.BlockReadBytes, c.BlockWriteBytes = 0, 0
	for _, b := range st.BlkioStats.IoServiceBytesRecursive {
		switch strings.ToLower(b.Op) {
		case "read":
			c.BlockReadBytes += float64(b.Value)
		case "write":
			c.BlockWriteBytes += float64(b.Value)
		}
	}
	c.HasPIDs, c.PIDs = st.PidsStats.Current > 0, float64(st.PidsStats.Current)

	cpu := st.CPUStats
	c.HasCPUUsage, c.CPUSeconds = cpu.CPUUsage.TotalUsage > 0, float64(cpu.CPUUsage.TotalUsage)/1e9
	// Without a CPU quota there are no periods to be throttled in; podman
	// sends zeros even with one. Either way there is nothing to tell.
	c.HasThrottling = cpu.ThrottlingData.Periods > 0
	c.ThrottledPeriods, c.ThrottledSeconds = float64(cpu.ThrottlingData.ThrottledPeriods), float64(cpu.ThrottlingData.ThrottledTime)/1e9
	c.HasCPU = false
	if c.HasCPUUsage {
		// The elapsed time is the daemon's own "read" timestamps, which
		// keeps 100% = one busy core on any daemon.
		e.cpuPercent(cpuSample{usage: cpu.CPUUsage.TotalUsage, read: st.Read})
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
