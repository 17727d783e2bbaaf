package rapl

import (
	"encoding/binary"
	"math"
	"testing"
	"testing/fstest"
	"time"
	"unicode/utf8"
)

// FuzzAdvance: whatever a counter reads, and however far apart, the total
// never falls, never rises by more than MaxPlausibleWatts could count in the
// time, and the power shown is one that the total's rise accounts for.
func FuzzAdvance(f *testing.F) {
	step := func(uj uint64, ms uint16) []byte {
		return binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint64(nil, uj), ms)
	}
	seq := func(steps ...[]byte) (b []byte) {
		for _, s := range steps {
			b = append(b, s...)
		}
		return b
	}
	const intel, small = 262143328850, 2_000_000_000
	f.Add(uint64(intel), seq(step(5_000_000, 0), step(3_000_000, 1000), step(4_000_000, 1000)))         // backwards, no wrap
	f.Add(uint64(small), seq(step(5_000_000_000, 0), step(1_000_000, 1000), step(3_000_000, 1000)))     // above the range, then small
	f.Add(uint64(intel), seq(step(intel-1_000_000, 0), step(3_000_000, 1000), step(5_000_000, 1000)))   // a genuine wrap
	f.Add(uint64(1), seq(step(1, 0), step(0, 1), step(1, 1)))                                           // a range refused at discovery
	f.Add(uint64(intel), seq(step(1_000_000, 0), step(1_000_000+2e9, 1000), step(1_000_000+2e9, 0)))    // a jump; no time
	f.Add(uint64(math.MaxUint64), seq(step(math.MaxUint64-1000, 0), step(500, 1000), step(9000, 1000))) // starts near 2^64, wraps

	f.Fuzz(func(t *testing.T, maxRange uint64, data []byte) {
		var st state
		now := time.Unix(1_800_000_000, 0)
		for ; len(data) >= 10; data = data[10:] {
			raw := binary.LittleEndian.Uint64(data)
			if maxRange < math.MaxUint64-maxRange/8-1 {
				raw %= maxRange + maxRange/8 + 2 // mostly within the range, some above
			}
			dt := time.Duration(binary.LittleEndian.Uint16(data[8:])) * time.Millisecond
			now = now.Add(dt)
			before := st
			st.advance("energy_uj", raw, maxRange, now)

			if st.counted < before.counted || st.joules() < before.joules() || before.firstKnown && st.first != before.first {
				t.Fatalf("total fell from %d+%d to %d+%d µJ (%v to %v J) on reading %d (range %d)",
					before.first, before.counted, st.first, st.counted, before.joules(), st.joules(), raw, maxRange)
			}
			rise := st.counted - before.counted
			if before.firstKnown && rise > plausible(dt) {
				t.Fatalf("total rose by %d µJ in %v, more than %d µJ", rise, dt, plausible(dt))
			}
			if raw > maxRange && (rise != 0 || (!before.firstKnown && st.firstKnown)) {
				t.Fatalf("reading %d above the range %d counted", raw, maxRange)
			}
			if st.implausible != before.implausible && (rise != 0 || st.hasPower) {
				t.Fatalf("an implausible reading counted: rose %d µJ, power %v", rise, st.hasPower)
			}
			if st.hasPower && (math.IsNaN(st.watts) || st.watts < 0 || math.Abs(st.watts*dt.Seconds()*1e6-float64(rise)) > 1+1e-9*float64(rise)) {
				t.Fatalf("%v W over %v for a rise of %d µJ", st.watts, dt, rise)
			}
			if (st.implausibleErr != nil) != (st.implausible != before.implausible) {
				t.Fatalf("doubt %v after %d implausible readings, %d before", st.implausibleErr, st.implausible, before.implausible)
			}
		}
	})
}

// FuzzReadZone: whatever a zone's files hold, discovery refuses the zone
// with a short error or yields labels the Prometheus bridge accepts and a
// range the sampler can keep up with.
func FuzzReadZone(f *testing.F) {
	f.Add([]byte("package-0\n"), []byte("dram\n"), []byte("262143328850\n"))
	f.Add([]byte("package-\xff\xfe\n"), []byte("core"), []byte("65532610987"))
	f.Add([]byte("package-1-die-0"), []byte("\xff"), []byte("1"))
	f.Add([]byte("psys"), []byte("uncore"), []byte("lots"))
	f.Fuzz(func(t *testing.T, parentName, name, maxRange []byte) {
		fsys := fstest.MapFS{
			"class/powercap/intel-rapl:0/name":                  {Data: parentName},
			"class/powercap/intel-rapl:0/max_energy_range_uj":   {Data: []byte("262143328850\n")},
			"class/powercap/intel-rapl:0:0/name":                {Data: name},
			"class/powercap/intel-rapl:0:0/max_energy_range_uj": {Data: maxRange},
		}
		zones, failed, refused, err := discover(fsys, nil)
		if err != nil || len(zones)+len(failed)+len(refused) > 2 {
			t.Fatalf("%d zones, %d failed, %d refused, %v", len(zones), len(failed), len(refused), err)
		}
		for _, z := range zones {
			if !utf8.ValidString(z.Package) || !utf8.ValidString(z.Zone) {
				t.Errorf("labels %q %q are not UTF-8", z.Package, z.Zone)
			}
			if z.MaxRange < minRange || intervalFor(time.Hour, []zone{z}) < MinInterval {
				t.Errorf("range %d µJ accepted", z.MaxRange)
			}
		}
		for _, e := range append(failed, refused...) {
			if len(e.Error()) > 500 || !utf8.ValidString(e.Error()) {
				t.Errorf("error of %d bytes for health and the log: %.300q", len(e.Error()), e)
			}
		}
	})
}
