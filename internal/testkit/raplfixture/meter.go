package raplfixture

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Meter advances the counters of a tree built by Build as hardware
// drawing constant power would: at each Advance, every zone by its watts
// times the time since the previous Advance, wrapping at its range. Tests
// of energy attribution know from it exactly what the zones counted.
type Meter struct {
	t    testing.TB
	root string

	mu    sync.Mutex
	zones []metered
	last  time.Time
}

type metered struct {
	Zone
	watts float64
	added float64 // joules since NewMeter
}

// NewMeter starts counting now on the zones of root (as Build laid them
// out), each at watts[zone ID] (zones not named stay still).
func NewMeter(t testing.TB, root string, zones []Zone, watts map[string]float64) *Meter {
	m := &Meter{t: t, root: root, last: time.Now()}
	for _, z := range zones {
		m.zones = append(m.zones, metered{Zone: z, watts: watts[z.ID]})
	}
	return m
}

// Advance adds the energy drawn since the previous Advance, and returns
// why a counter could not be written.
func (m *Meter) Advance() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	dt := now.Sub(m.last).Seconds()
	m.last = now
	for i := range m.zones {
		z := &m.zones[i]
		if z.watts == 0 {
			continue
		}
		uj := uint64(z.watts * dt * 1e6)
		z.added += float64(uj) / 1e6
		z.EnergyUJ = (z.EnergyUJ + uj) % (z.MaxUJ + 1)
		if err := WriteEnergy(m.root, z.ID, z.EnergyUJ); err != nil {
			return fmt.Errorf("meter: %w", err)
		}
	}
	return nil
}

// Added returns the joules added to zone id so far.
func (m *Meter) Added(id string) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, z := range m.zones {
		if z.ID == id {
			return z.added
		}
	}
	return 0
}

// Start advances the counters every interval, as the hardware updates
// them on its own while they are read, until the test ends. It stops at
// the first write that fails, which the test reports as an error when it
// ends (t.Fatal is only for the test's own goroutine).
func (m *Meter) Start(interval time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error // written by the goroutine, read after done
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err = m.Advance(); err != nil {
					return
				}
			}
		}
	}()
	m.t.Cleanup(func() {
		cancel()
		<-done
		if err != nil {
			m.t.Error(err)
		}
	})
}
