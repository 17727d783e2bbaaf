package docker

import (
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/energy"
)

// Meter is the CPU packages' energy and the machine's CPU time, read
// together (the runner's shared RAPL reader): what charging containers
// their energy needs.
type Meter interface {
	Read() (MeterReading, bool)
}

// MeterReading is one reading of a Meter.
type MeterReading struct {
	At                        time.Time
	Joules                    float64 // RAPL's package and dram zones, cumulative and wrap-corrected
	TotalSeconds, IdleSeconds float64 // the machine's CPU time, all CPUs, idle (and iowait) apart
}

// Modes of a container's energy, as energy per encode names them.
const (
	dynamic = int(energy.Dynamic)
	idle    = int(energy.Idle)
)

// chargeEnergy shares out the CPU energy counted since the previous
// collection among the containers by their cgroup CPU time, as energy per
// encode does among encodes (Kepler's split): each container's dynamic
// share is its CPU time over the machine's busy CPU time, its idle share
// its CPU time over all of the machine's, so neither depends on what runs
// beside it. Idle power is estimated from the collections' windows, as
// energy per encode estimates it from its own. GPU energy is not charged
// to containers.
func (s *Source) chargeEnergy(es []*entry) {
	if s.cfg.Meter == nil {
		return
	}
	cur, ok := s.cfg.Meter.Read()
	prev, had := s.meter, s.meterOK
	s.meter, s.meterOK = cur, ok
	s.regMu.Lock() // stats calls that outlive their collection write figures under it
	defer s.regMu.Unlock()
	seconds := make(map[*entry]float64, len(es))
	for _, e := range es {
		if !e.c.HasCPUUsage {
			continue
		}
		if e.hasLastCPU && e.c.CPUSeconds >= e.lastCPU {
			seconds[e] = e.c.CPUSeconds - e.lastCPU
		}
		e.lastCPU, e.hasLastCPU = e.c.CPUSeconds, true
	}
	machine := cur.TotalSeconds - prev.TotalSeconds
	joules := cur.Joules - prev.Joules
	if !ok || !had || !cur.At.After(prev.At) || machine <= 0 || joules < 0 {
		return
	}
	busy := max(machine-(cur.IdleSeconds-prev.IdleSeconds), 0)
	window := cur.At.Sub(prev.At)
	s.idle.Add(busy/machine, joules, window)
	power := s.idle.Estimate()
	s.idlePower, s.hasIdlePower = power, true
	parts := [2]float64{dynamic: joules - min(power.Watts*window.Seconds(), joules)}
	parts[idle] = joules - parts[dynamic]
	var shares [2]float64 // of the busy time, of all the time
	for _, v := range seconds {
		if busy > 0 {
			shares[dynamic] += v / busy
		}
		shares[idle] += v / machine
	}
	for e, v := range seconds {
		for m, of := range [2]float64{dynamic: busy, idle: machine} {
			if of > 0 {
				e.c.Energy[m] += parts[m] * v / of / max(shares[m], 1) // CPU times read apart in ticks: never charge more than was counted
			}
		}
		e.c.HasEnergy = true
	}
}
