package rapl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// MaxPlausibleWatts is more than any one zone draws. It bounds the sampling
// interval, so that no counter can wrap twice between two samples, and every
// reading: a change larger than this power could count in the time since
// the previous reading is no energy but a faulty counter.
const MaxPlausibleWatts = 1000

// MinInterval is the shortest sampling interval, whatever is configured.
// Every zone's range allows it (minRange), so it never costs a wrap.
const MinInterval = 50 * time.Millisecond

// clockSlack is how far the time measured between two readings may fall
// short of the time the counter counted in: the counter updates about every
// millisecond, and the clock is read just after energy_uj, not at the same
// instant.
const clockSlack = 10 * time.Millisecond

// MaxZones bounds the zones one source serves: far more than any machine
// has (eight sockets with package, core, uncore and dram, and psys, make
// 33). A zone past it is refused and named on health. Each zone is one
// series per instrument, so MaxZones+1 (the SDK's overflow series) is a
// cardinality limit that folds no zone served.
const MaxZones = 256

// Config is what the source needs.
type Config struct {
	// FS is rooted at sysfs; nil reads the sysfs at Root through SysFS,
	// where nothing can block a sample.
	FS       fs.FS
	Root     string        // that root (/sys), for messages
	Interval time.Duration // sampling interval; shortened if a zone could wrap twice in it
	Clock    func() time.Time
	Log      *slog.Logger
}

// ZoneReading is one zone at the latest sample.
type ZoneReading struct {
	Package, Zone  string
	EnergyJoules   float64 // kernel's first reading plus every wrap-corrected delta since
	PowerWatts     float64 // mean power over the latest sampling window
	HasPower       bool    // false until two samples exist
	MaxRangeJoules float64
	Implausible    uint64 // readings not counted: above the range, or a change beyond MaxPlausibleWatts
}

// Snapshot is what the latest sample saw.
type Snapshot struct {
	Zones      []ZoneReading // zones read successfully at least once
	Discovered int           // zones found, readable or not
	Available  bool          // at least one zone's energy is readable now
}

// Source samples RAPL zones. Its health is why RAPL is not (fully)
// readable; nil when all is well.
type Source struct {
	*sampling.Latest[Snapshot]
	cfg Config

	interval atomic.Int64 // the sampling interval in effect; read without waiting on a sample

	mu       sync.Mutex // serialises Sample
	zones    []zone
	states   map[string]*state // by zone Dir, so they outlive rediscovery
	complete bool              // every zone under powercap was identified
	refused  []error           // zones identified but not served, for good
}

// state is a zone's counter between samples.
type state struct {
	firstKnown bool   // first is known: a plausible reading has been taken
	hasRaw     bool   // raw is a reading the next one can be measured from
	raw        uint64 // last energy_uj
	// The total is first plus counted, kept apart so that a first reading
	// near 2^64 cannot wrap the sum: µJ the kernel had counted at the
	// first plausible reading, and wrap-corrected µJ since.
	first, counted uint64
	at             time.Time
	watts          float64
	hasPower       bool
	implausible    uint64
	implausibleErr error // the first of the latest implausible readings; nil since a plausible one
}

// New returns a source that has sampled once.
func New(cfg Config) *Source {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.FS == nil {
		cfg.FS = SysFS(cfg.Root)
	}
	s := &Source{cfg: cfg, Latest: sampling.NewLatest(cfg.Log, "RAPL", &Snapshot{}, errors.New("RAPL not sampled yet"))}
	s.interval.Store(int64(intervalFor(cfg.Interval, nil)))
	s.Sample()
	return s
}

// Interval is the sampling interval in effect: the configured one, or
// shorter where a zone's counter could wrap twice at MaxPlausibleWatts.
// It never waits on a sample in flight.
func (s *Source) Interval() time.Duration { return time.Duration(s.interval.Load()) }

func intervalFor(iv time.Duration, zones []zone) time.Duration {
	iv = max(iv, MinInterval)
	for _, z := range zones {
		// The counter wraps after MaxRange/MaxPlausibleWatts µs at the
		// soonest; in integers, as a range near 2^64 µJ overflows a
		// Duration in ns.
		half := z.MaxRange / MaxPlausibleWatts / 2
		if half < uint64(iv/time.Microsecond) {
			iv = time.Duration(half) * time.Microsecond
		}
	}
	return max(iv, MinInterval)
}

// Run samples until ctx ends (New took the first sample). A sample stuck
// on sysfs is reported on health and does not hold Run past ctx.
func (s *Source) Run(ctx context.Context) {
	first := true
	s.Every(ctx, s.Interval, func(context.Context) {
		if !first {
			s.Sample()
		}
		first = false
	})
}

// Sample reads every zone once and publishes a new snapshot. Until every
// zone is identified it looks for them again each time, so powercap
// appearing (a module loaded), access granted later or a zone that failed
// at discovery needs no restart.
func (s *Source) Sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	var errs []error
	if !s.complete {
		errs = append(errs, s.discover()...)
	}
	errs = append(errs, s.refused...)

	snap := &Snapshot{Discovered: len(s.zones)}
	for _, z := range s.zones {
		file := path.Join(z.Dir, "energy_uj")
		raw, err := readUint(s.cfg.FS, file)
		st := s.states[z.Dir]
		if err != nil {
			errs = append(errs, err)
		} else {
			snap.Available = true
			st.advance(file, raw, z.MaxRange, s.cfg.Clock())
		}
		if st.implausibleErr != nil {
			errs = append(errs, st.implausibleErr)
		}
		if st.firstKnown {
			snap.Zones = append(snap.Zones, ZoneReading{
				Package:        z.Package,
				Zone:           z.Zone,
				EnergyJoules:   st.joules(),
				PowerWatts:     st.watts,
				HasPower:       st.hasPower && err == nil,
				MaxRangeJoules: float64(z.MaxRange) / 1e6,
				Implausible:    st.implausible,
			})
		}
	}
	s.Publish(snap, explain(errors.Join(errs...)), start)
}

// discover looks for zones, keeping the counters of those already known,
// and returns why any could not be identified.
func (s *Source) discover() []error {
	zones, failed, refused, err := discover(s.cfg.FS, s.zones)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return []error{fmt.Errorf("no powercap at %s: %s", path.Join(s.cfg.Root, powercapDir), loadHint)}
	case err != nil:
		return []error{err}
	case len(zones) == 0 && len(failed) == 0 && len(refused) == 0:
		return []error{fmt.Errorf("no RAPL zones under %s: this CPU or kernel exposes none", path.Join(s.cfg.Root, powercapDir))}
	}
	states := make(map[string]*state, len(zones))
	for _, z := range zones {
		st := s.states[z.Dir]
		if st == nil {
			st = &state{}
		}
		states[z.Dir] = st
	}
	if len(zones) > len(s.zones) {
		s.cfg.Log.Info("RAPL zones found", "zones", len(zones), "sampling_interval", intervalFor(s.cfg.Interval, zones))
	}
	s.zones, s.states, s.complete, s.refused = zones, states, len(failed) == 0, refused
	s.interval.Store(int64(intervalFor(s.cfg.Interval, zones)))
	return failed
}

// loadHint is what makes powercap appear. Since Linux 5.3 the powercap
// RAPL driver is intel_rapl_msr (on intel_rapl_common; the old intel_rapl
// module is gone), and since Linux 5.11 it drives AMD Zen (families 17h
// and later) too. amd_energy, a hwmon driver removed in 5.13, never gave
// powercap zones.
const loadHint = "load the intel_rapl_msr module (Intel, and AMD Zen since Linux 5.11: modprobe intel_rapl_msr), or enable RAPL in the BIOS"

// advance takes a new raw reading of file. A counter that fell has wrapped
// at maxRange: the energy since the last reading is (max − previous +
// current). A reading above maxRange, or a change more than
// MaxPlausibleWatts could count since the last reading, is implausible: it
// is counted as such, named on health until a plausible one follows, and
// adds nothing. The next change is measured from it, unless it was above
// the range.
func (st *state) advance(file string, raw, maxRange uint64, now time.Time) {
	dt := now.Sub(st.at)
	var delta uint64
	var doubt error
	switch {
	case raw > maxRange:
		doubt = fmt.Errorf("%s: implausible reading, not counted: %d µJ is above max_energy_range_uj %d µJ", file, raw, maxRange)
	case !st.hasRaw || st.raw > maxRange:
		// The first reading, the first after one above the range, or the
		// range shrank at rediscovery: nothing to measure from.
	case raw >= st.raw:
		delta = raw - st.raw
	default:
		delta = maxRange - st.raw + raw
	}
	if bound := plausible(dt); st.hasRaw && doubt == nil && delta > bound {
		verb, asWrap := "rose", ""
		if raw < st.raw {
			verb, asWrap = "fell", fmt.Sprintf("as a wrap at max_energy_range_uj %d µJ that is ", maxRange)
		}
		doubt = fmt.Errorf("%s: implausible reading, not counted: %s from %d to %d µJ in %v; %s%d µJ, more than %d W could count in that time (%d µJ)",
			file, verb, st.raw, raw, dt.Round(time.Millisecond), asWrap, delta, MaxPlausibleWatts, bound)
	}

	if doubt != nil {
		st.implausible++
		if st.implausibleErr == nil {
			st.implausibleErr = doubt // the first of a run: health and the log keep to it
		}
		st.hasRaw, st.hasPower = raw <= maxRange, false
		st.raw, st.at = raw, now
		return
	}
	if !st.firstKnown {
		st.firstKnown, st.first = true, raw
	}
	st.hasPower = st.hasRaw && dt > 0
	if st.hasPower {
		st.watts = float64(delta) / 1e6 / dt.Seconds()
	}
	st.counted += delta // at most plausible(dt) a reading: 584 years at MaxPlausibleWatts to wrap
	st.hasRaw, st.implausibleErr = true, nil
	st.raw, st.at = raw, now
}

// joules is the zone's total: the kernel's first reading plus every change
// counted since. Each part is exact and the sum of their float64s never
// falls as counted rises.
func (st *state) joules() float64 {
	if st.first <= math.MaxUint64-st.counted {
		return float64(st.first+st.counted) / 1e6 // one rounding, as node_exporter's: the same figure for the same counter
	}
	return float64(st.first)/1e6 + float64(st.counted)/1e6
}

// plausible is the most energy, in µJ, a zone can count in dt.
func plausible(dt time.Duration) uint64 {
	return uint64(MaxPlausibleWatts * max(dt+clockSlack, 0).Seconds() * 1e6)
}

// explain adds, once, what to do about a permission error.
func explain(err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: since Linux 5.10 energy_uj is readable by root only (CVE-2020-8694); "+
			"grant the exporter CAP_DAC_READ_SEARCH (setcap cap_dac_read_search=+ep BINARY, or AmbientCapabilities=CAP_DAC_READ_SEARCH in its systemd unit), "+
			"or an ACL (setfacl -R -m u:USER:r /sys/class/powercap); access granted later is picked up without a restart", err)
	}
	return err
}
