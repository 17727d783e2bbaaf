package energy

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
)

// attribute shares out the energy counted since the previous window. The
// error says which GPUs' samples have gone stale.
func (s *Source) attribute(cur readings, gpus *nvml.Snapshot) error {
	prev := s.prev
	// A process linked to several streams (one ffmpeg sending two
	// progress streams) is shared between them, so that it counts once.
	users := map[procfs.Process]int{}
	byPID := map[uint32]int{}
	for _, e := range s.encodes {
		for _, p := range e.procs {
			if p.linkedInWindow {
				users[p.Process]++
				byPID[uint32(p.PID)]++
			}
		}
	}

	if prev.ok && cur.ok && cur.zones != nil {
		if s.perSocket() && cur.cpus != nil && prev.cpus != nil {
			s.attributeSockets(prev, cur, users)
		} else {
			s.attributeCPU(prev, cur, users)
		}
	}
	var err error
	if gpus != nil {
		err = s.attributeGPUs(cur.at, gpus, byPID)
	}
	for _, e := range s.encodes {
		for _, p := range e.procs {
			p.prev = p.cpu
			p.linkedInWindow = p.linked
			clear(p.onPackage)
		}
	}
	return err
}

// attributeCPU shares out RAPL's energy with every socket as one pool.
func (s *Source) attributeCPU(prev, cur readings, users map[procfs.Process]int) {
	machine := cur.cpu.TotalSeconds - prev.cpu.TotalSeconds
	if machine <= 0 {
		return
	}
	joules := delta(prev.zones, cur.zones, "")
	busy := max(machine-(cur.cpu.IdleSeconds-prev.cpu.IdleSeconds), 0)
	s.cpuIdle.Add(busy/machine, joules, cur.at.Sub(prev.at))
	idle := s.cpuIdle.Estimate()
	s.setIdle(idle)
	dyn, idl := map[*encode]float64{}, map[*encode]float64{}
	for _, e := range s.encodes {
		if !e.inWindow() {
			continue
		}
		var seconds float64
		for _, p := range e.procs {
			if p.linkedInWindow && p.cpu > p.prev {
				seconds += (p.cpu - p.prev) / float64(users[p.Process])
			}
		}
		if busy > 0 {
			dyn[e] = seconds / busy
		}
		idl[e] = seconds / machine
	}
	s.share(CPU, joules, idle.Watts*cur.at.Sub(prev.at).Seconds(), dyn, idl)
}

// attributeSockets shares out each socket's zones by the time spent on
// that socket's CPUs: an idle socket's power never lands on streams
// running on the other. A process's time its threads do not account for
// (children waited for, threads gone within the window) is spread like
// its threads' time, or like the machine's busy time if none ran.
func (s *Source) attributeSockets(prev, cur readings, users map[procfs.Process]int) {
	type socket struct{ machine, busy float64 }
	sockets := map[string]*socket{}
	for cpu, c := range cur.cpus {
		pc, ok := prev.cpus[cpu]
		pkg, known := s.cfg.Packages[cpu]
		if !ok || !known {
			continue
		}
		so := sockets[pkg]
		if so == nil {
			so = &socket{}
			sockets[pkg] = so
		}
		total := c.TotalSeconds - pc.TotalSeconds
		so.machine += total
		so.busy += max(total-(c.IdleSeconds-pc.IdleSeconds), 0)
	}
	var allBusy float64
	for _, so := range sockets {
		allBusy += so.busy
	}
	dt := cur.at.Sub(prev.at)
	for _, pkg := range slices.Sorted(maps.Keys(sockets)) {
		so := sockets[pkg]
		if so.machine <= 0 {
			continue
		}
		joules := delta(prev.zones, cur.zones, pkg)
		model := s.pkgIdle[pkg]
		if model == nil {
			model = &IdleModel{Configured: s.cfg.IdleWatts[CPU] / float64(len(sockets))}
			s.pkgIdle[pkg] = model
		}
		model.Add(so.busy/so.machine, joules, dt)
		idle := model.Estimate()
		idle.Device, idle.Package = CPU, pkg
		s.setIdle(idle)
		dyn, idl := map[*encode]float64{}, map[*encode]float64{}
		for _, e := range s.encodes {
			if !e.inWindow() {
				continue
			}
			var seconds float64
			for _, p := range e.procs {
				if !p.linkedInWindow || p.cpu <= p.prev {
					continue
				}
				used := p.cpu - p.prev
				var threads float64
				for _, v := range p.onPackage {
					threads += v
				}
				var here float64
				switch {
				case threads > 0:
					here = used * p.onPackage[pkg] / threads
				case allBusy > 0:
					here = used * so.busy / allBusy
				}
				seconds += here / float64(users[p.Process])
			}
			if so.busy > 0 {
				dyn[e] = seconds / so.busy
			}
			idl[e] = seconds / so.machine
		}
		s.share(CPU, joules, idle.Watts*dt.Seconds(), dyn, idl)
	}
}

// attributeGPUs shares out each GPU's energy since the sample taken in an
// earlier window: the GPU's active part (its busiest engine's utilisation)
// goes to its processes by their use of the engines; the rest, idle power,
// stays with the GPU, as for the CPU. A GPU whose sample is the one taken
// before (NVML is slow or hangs) is left for a later window.
func (s *Source) attributeGPUs(now time.Time, gpus *nvml.Snapshot, users map[uint32]int) error {
	var errs []error
	for i := range gpus.GPUs {
		g := &gpus.GPUs[i]
		prev, seen := s.gpuSeen[g.UUID]
		if seen && !g.LastSample.After(prev.at) {
			if age := now.Sub(prev.at); age > staleWindows*s.cfg.Interval {
				errs = append(errs, fmt.Errorf("GPU %s: NVML has not answered for %v; its energy is not attributed meanwhile", g.UUID, age.Round(time.Millisecond)))
			}
			continue
		}
		cur := gpuSample{at: g.LastSample, joules: g.Values[nvml.EnergyJoules], hasJoules: g.Has(nvml.EnergyJoules)}
		s.gpuSeen[g.UUID] = cur
		dt := cur.at.Sub(prev.at).Seconds()
		use := engineUse(g)
		var sum [NumEngines]float64
		var weight float64
		for _, u := range use {
			for k := range u {
				sum[k] += u[k]
				weight += u[k]
			}
		}
		joules := cur.joules - prev.joules
		ok := prev.hasJoules && cur.hasJoules && joules >= 0 // a driver reload restarts the counter
		active := min(1, slices.Max(sum[:])/100)
		model := s.gpuIdle[g.UUID]
		if model == nil {
			model = &IdleModel{Configured: s.cfg.IdleWatts[GPU]}
			s.gpuIdle[g.UUID] = model
		}
		dyn, idl := map[*encode]float64{}, map[*encode]float64{}
		for _, e := range s.encodes {
			if !e.inWindow() {
				continue
			}
			e.gpu = true
			dyn[e], idl[e] = 0, 0 // charged, if only nothing: the GPU's energy is known for it
			for _, p := range e.procs {
				pid := uint32(p.PID)
				u, used := use[pid]
				if !p.linkedInWindow || !used {
					continue
				}
				n := float64(users[pid])
				var w float64
				for k := range u {
					w += u[k]
					if seen {
						e.gpuSeconds[k] += u[k] / 100 * dt / n
					}
				}
				if weight > 0 {
					dyn[e] += w / weight / n
				}
				idl[e] += min(1, slices.Max(u[:])/100) / n
			}
		}
		if ok && seen {
			window := cur.at.Sub(prev.at)
			model.Add(active, joules, window)
			idle := model.Estimate()
			idle.Device, idle.GPU = GPU, strconv.Itoa(g.Index)
			s.setIdle(idle)
			s.share(GPU, joules, idle.Watts*window.Seconds(), dyn, idl)
		}
	}
	return errors.Join(errs...)
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

// share charges each encode its dynamic and idle shares of a device's
// window of joules, of which idleJoules is idle power; what no encode is
// charged is unattributed. CPU times are read a moment apart from the
// machine's, and in ticks: shares are scaled so that no more than the
// device counted is ever charged.
func (s *Source) share(d Device, joules, idleJoules float64, dyn, idl map[*encode]float64) {
	idleJoules = min(max(idleJoules, 0), joules)
	parts := [NumModes]float64{Dynamic: joules - idleJoules, Idle: idleJoules}
	for m, shares := range [NumModes]map[*encode]float64{Dynamic: dyn, Idle: idl} {
		var total float64
		for _, v := range shares {
			total += v
		}
		scale := 1.0
		if total > 1 {
			scale = 1 / total
		}
		for e, v := range shares {
			j := parts[m] * v * scale
			e.energy[d] += j
			e.windowEnergy[d][m] += j
			if Mode(m) == Dynamic {
				e.dynamic[d] += j
			}
			e.hasEnergy[d] = true
		}
		s.unattributed[d][m] += parts[m] * (1 - min(total*scale, 1))
	}
	s.counted[d] += joules
}

// setIdle records the idle power a device's window used.
func (s *Source) setIdle(p IdlePower) {
	for i := range s.idle {
		if s.idle[i].Device == p.Device && s.idle[i].Package == p.Package && s.idle[i].GPU == p.GPU {
			s.idle[i] = p
			return
		}
	}
	s.idle = append(s.idle, p)
	slices.SortFunc(s.idle, func(a, b IdlePower) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Package, b.Package), cmp.Compare(len(a.GPU), len(b.GPU)), cmp.Compare(a.GPU, b.GPU))
	})
}

// delta is the energy counted between two readings of the zones of
// package pkg (every package: ""), over the zones both have (a zone found
// or lost between them counts from the next).
func delta(prev, cur map[[2]string]float64, pkg string) float64 {
	var sum float64
	for k, v := range cur {
		if pkg != "" && k[0] != pkg {
			continue
		}
		if p, ok := prev[k]; ok && v > p {
			sum += v - p
		}
	}
	return sum
}
