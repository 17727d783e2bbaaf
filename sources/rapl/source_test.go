package rapl

// These machines have no RAPL: every test runs the real code on a sysfs
// tree built by internal/testkit/raplfixture as the kernel lays it out.

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newSource(t *testing.T, root string, fsys fs.FS) (*Source, *clock, *bytes.Buffer) {
	t.Helper()
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	var logs bytes.Buffer
	// fsys nil: the sysfs at root, read as the exporter reads it (SysFS).
	src := New(Config{FS: fsys, Root: root, Interval: time.Second, Clock: c.now, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	return src, c, &logs
}

func labels(s *Snapshot) []string {
	var out []string
	for _, z := range s.Zones {
		out = append(out, z.Package+"/"+z.Zone)
	}
	sort.Strings(out)
	return out
}

func TestDiscovery(t *testing.T) {
	for _, tc := range []struct {
		name  string
		host  []raplfixture.Zone
		zones string
	}{
		{"one socket", raplfixture.OneSocket, "0/package"},
		{"two sockets", raplfixture.TwoSockets, "0/dram 0/package 1/dram 1/package"},
		{"core uncore dram psys and an mmio duplicate", raplfixture.Laptop, "/psys 0/core 0/dram 0/package 0/uncore"},
		{"AMD", raplfixture.AMD, "0/core 0/package"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := raplfixture.Build(t, t.TempDir(), tc.host)
			src, _, _ := newSource(t, root, nil)
			snap := src.Snapshot()
			if got := strings.Join(labels(snap), " "); got != tc.zones {
				t.Errorf("zones %q, want %q", got, tc.zones)
			}
			if snap.Discovered != len(snap.Zones) || !snap.Available || src.Health() != nil {
				t.Errorf("discovered %d, available %v, err %v", snap.Discovered, snap.Available, src.Health())
			}
			// Before any wrap the total is the kernel's reading.
			for _, z := range snap.Zones {
				for _, fz := range tc.host {
					if fz.Name == z.Zone || fz.Name == "package-"+z.Package && z.Zone == "package" {
						if z.EnergyJoules == float64(fz.EnergyUJ)/1e6 && z.MaxRangeJoules == float64(fz.MaxUJ)/1e6 {
							goto found
						}
					}
				}
				t.Errorf("zone %s/%s reads %v J, not its fixture's value", z.Package, z.Zone, z.EnergyJoules)
			found:
			}
		})
	}
}

func zoneReading(t *testing.T, s *Source, pkg, zone string) ZoneReading {
	t.Helper()
	for _, z := range s.Snapshot().Zones {
		if z.Package == pkg && z.Zone == zone {
			return z
		}
	}
	t.Fatalf("no zone %s/%s in %v", pkg, zone, labels(s.Snapshot()))
	return ZoneReading{}
}

func TestWrap(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.AMD)
	const max = raplfixture.AMDMaxUJ
	raplfixture.SetEnergy(t, root, "intel-rapl:0", max-1_000_000) // 1 J before the wrap
	src, c, _ := newSource(t, root, nil)
	before := zoneReading(t, src, "0", "package").EnergyJoules
	if before != float64(max-1_000_000)/1e6 {
		t.Fatalf("start %v J, want the kernel's reading", before)
	}

	raplfixture.SetEnergy(t, root, "intel-rapl:0", 3_000_000) // wrapped, then 3 J more
	c.advance(time.Second)
	src.Sample()
	after := zoneReading(t, src, "0", "package")
	// Exactly (max − previous + current) µJ more.
	wantUJ := uint64(max) - (max - 1_000_000) + 3_000_000
	if got := microjoules(after.EnergyJoules - before); got != wantUJ {
		t.Errorf("rose by %v µJ across the wrap, want %v µJ", got, wantUJ)
	}
	if after.PowerWatts != 4 {
		t.Errorf("power across the wrap %v W, want 4", after.PowerWatts)
	}

	// And it keeps rising afterwards.
	raplfixture.SetEnergy(t, root, "intel-rapl:0", 5_000_000)
	c.advance(time.Second)
	src.Sample()
	if got := microjoules(zoneReading(t, src, "0", "package").EnergyJoules - after.EnergyJoules); got != 2_000_000 {
		t.Errorf("rose by %v µJ after the wrap, want 2 J", got)
	}
}

// microjoules undoes the float64 joules' rounding at the scale of a 65 kJ total.
func microjoules(j float64) uint64 { return uint64(math.Round(j * 1e6)) }

func TestPower(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	src, c, _ := newSource(t, root, nil)
	if zoneReading(t, src, "1", "package").HasPower {
		t.Error("power from a single sample")
	}
	// Package 1 at 85 W for 2 s, its dram at 7.5 W.
	for i := 1; i <= 4; i++ {
		c.advance(500 * time.Millisecond)
		raplfixture.SetEnergy(t, root, "intel-rapl:1", 20_000_000+uint64(i)*42_500_000)
		raplfixture.SetEnergy(t, root, "intel-rapl:1:0", 3_000_000+uint64(i)*3_750_000)
		src.Sample()
		// Every reader sees the same figure; reading does not reset the window.
		for range 3 {
			if p := zoneReading(t, src, "1", "package"); !p.HasPower || p.PowerWatts != 85 {
				t.Fatalf("sample %d: package power %v (%v), want 85 W", i, p.PowerWatts, p.HasPower)
			}
		}
		if p := zoneReading(t, src, "1", "dram").PowerWatts; p != 7.5 {
			t.Fatalf("sample %d: dram power %v W, want 7.5", i, p)
		}
	}
	if p := zoneReading(t, src, "0", "package").PowerWatts; p != 0 {
		t.Errorf("idle package 0 reads %v W", p)
	}
	if e := zoneReading(t, src, "1", "package").EnergyJoules; e != 20+4*42.5 {
		t.Errorf("package 1 energy %v J, want %v", e, 20+4*42.5)
	}
}

// denyFS answers "permission denied" for energy_uj while deny is set, as
// the kernel does for a non-root reader since 5.10. Tests run as root in CI,
// where chmod 000 denies nothing, so the denial is injected here.
type denyFS struct {
	fs.FS
	mu   sync.Mutex
	deny bool
}

func (d *denyFS) Open(name string) (fs.File, error) {
	d.mu.Lock()
	deny := d.deny
	d.mu.Unlock()
	if deny && filepath.Base(name) == "energy_uj" {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	return d.FS.Open(name)
}

func TestPermissionDeniedThenGranted(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	fsys := &denyFS{FS: os.DirFS(root), deny: true}
	src, c, logs := newSource(t, root, fsys)

	snap := src.Snapshot()
	if snap.Available || len(snap.Zones) != 0 || snap.Discovered != 4 {
		t.Errorf("denied: available %v, %d zones read, %d discovered", snap.Available, len(snap.Zones), snap.Discovered)
	}
	err := src.Health()
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "CAP_DAC_READ_SEARCH") || !strings.Contains(err.Error(), "setfacl") {
		t.Errorf("health %v: should name the cause and the fixes", err)
	}
	if n := strings.Count(err.Error(), "CVE-2020-8694"); n != 1 {
		t.Errorf("the advice appears %d times in %q, want once", n, err)
	}
	c.advance(time.Second)
	src.Sample()
	if n := strings.Count(logs.String(), "RAPL not fully readable"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}

	// Access granted (setcap, ACL) while running: picked up at the next sample.
	fsys.mu.Lock()
	fsys.deny = false
	fsys.mu.Unlock()
	c.advance(time.Second)
	src.Sample()
	if err := src.Health(); err != nil || !src.Snapshot().Available || len(src.Snapshot().Zones) != 4 {
		t.Errorf("after access granted: health %v, zones %v", err, labels(src.Snapshot()))
	}
	if !strings.Contains(logs.String(), "RAPL readable again") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
}

func TestNoPowercapThenLoaded(t *testing.T) {
	root := t.TempDir()
	src, c, _ := newSource(t, root, nil)
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "no powercap") {
		t.Errorf("health %v, want no powercap", err)
	}
	if s := src.Snapshot(); s.Available || s.Discovered != 0 {
		t.Errorf("snapshot %+v", s)
	}
	// The module loads after boot.
	raplfixture.Build(t, root, raplfixture.OneSocket)
	c.advance(time.Second)
	src.Sample()
	if err := src.Health(); err != nil || len(src.Snapshot().Zones) != 1 {
		t.Errorf("after the module loaded: %v, %v", err, labels(src.Snapshot()))
	}
}

func TestEmptyPowercap(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "class", "powercap"), 0o755)
	src, _, _ := newSource(t, root, nil)
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "no RAPL zones") {
		t.Errorf("health %v", err)
	}
}

func TestMissingEnergyFile(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	src, c, _ := newSource(t, root, nil)
	os.Remove(filepath.Join(raplfixture.Dir(root, "intel-rapl:1:0"), "energy_uj"))
	raplfixture.SetEnergy(t, root, "intel-rapl:0", 12_000_000)
	c.advance(time.Second)
	src.Sample()
	if err := src.Health(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("health %v, want the missing file", err)
	}
	// The others keep reporting; the broken zone keeps its last total but
	// shows no power it cannot measure.
	if p := zoneReading(t, src, "0", "package"); p.PowerWatts != 2 {
		t.Errorf("package 0 power %v, want 2", p.PowerWatts)
	}
	if d := zoneReading(t, src, "1", "dram"); d.HasPower || d.EnergyJoules != 3 {
		t.Errorf("broken dram: %+v", d)
	}
	if !src.Snapshot().Available {
		t.Error("unavailable while three zones read fine")
	}
}

func TestGarbageFiles(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.OneSocket)
	os.WriteFile(filepath.Join(raplfixture.Dir(root, "intel-rapl:0"), "max_energy_range_uj"), []byte("lots\n"), 0o444)
	src, _, _ := newSource(t, root, nil)
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "max_energy_range_uj") {
		t.Errorf("health %v, want the bad file named", err)
	}
}

func TestIntervalBoundByWrap(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), []raplfixture.Zone{
		{ID: "intel-rapl:0", Name: "package-0", EnergyUJ: 1, MaxUJ: 1_000_000_000}, // 1000 J: wraps in 1 s at 1 kW
	})
	src, _, _ := newSource(t, root, nil)
	if got := src.Interval(); got != 500*time.Millisecond {
		t.Errorf("interval %v, want 500ms (half the fastest possible wrap)", got)
	}
	root = raplfixture.Build(t, t.TempDir(), raplfixture.AMD)
	src, _, _ = newSource(t, root, nil)
	if got := src.Interval(); got != time.Second {
		t.Errorf("AMD interval %v, want the configured 1s (65 kJ wraps in 65 s at 1 kW)", got)
	}
}

// TestZoneFailingAtDiscoveryIsRediscovered: a zone whose files cannot be
// read when the exporter starts is named on health, and found once it can
// be read, while the other zones keep their counters.
func TestZoneFailingAtDiscoveryIsRediscovered(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	maxFile := filepath.Join(raplfixture.Dir(root, "intel-rapl:1"), "max_energy_range_uj")
	good, err := os.ReadFile(maxFile)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(maxFile, []byte("garbage\n"), 0o444)
	src, c, _ := newSource(t, root, nil)
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "intel-rapl:1") {
		t.Errorf("health %v, want the failing zone named", err)
	}
	if got := labels(src.Snapshot()); strings.Join(got, " ") != "0/dram 0/package 1/dram" {
		t.Errorf("zones %v while package 1 is unreadable", got)
	}
	before := zoneReading(t, src, "0", "package").EnergyJoules

	os.WriteFile(maxFile, good, 0o444)
	raplfixture.SetEnergy(t, root, "intel-rapl:0", 12_000_000)
	c.advance(time.Second)
	src.Sample()
	if err := src.Health(); err != nil {
		t.Errorf("health %v after the zone became readable", err)
	}
	if got := labels(src.Snapshot()); len(got) != 4 {
		t.Errorf("zones %v, want all four", got)
	}
	if after := zoneReading(t, src, "0", "package"); after.EnergyJoules != 12 || !after.HasPower || before == 0 {
		t.Errorf("package 0 lost its counter across rediscovery: %v J then %+v", before, after)
	}
}

// failFS fails reads of one file while fail is set: a known zone's
// attribute failing once (EIO, a hotplug race) while rediscovery runs.
type failFS struct {
	fs.FS
	file string
	mu   sync.Mutex
	fail bool
}

func (f *failFS) set(fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fail
}

func (f *failFS) Open(name string) (fs.File, error) {
	f.mu.Lock()
	fail := f.fail && name == f.file
	f.mu.Unlock()
	if fail {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("input/output error")}
	}
	return f.FS.Open(name)
}

// TestKnownZoneFailingAtRediscoveryKeepsItsCounter: while one zone fails
// for good, every sample rediscovers; a known zone whose name cannot be read
// once keeps its labels and its total (a counter must never fall), its
// subzones too, and the intel-rapl-mmio view of it does not stand in.
func TestKnownZoneFailingAtRediscoveryKeepsItsCounter(t *testing.T) {
	host := append([]raplfixture.Zone(nil), raplfixture.Laptop...)
	const max = raplfixture.IntelMaxUJ
	host[0].EnergyUJ = max - 1_000_000 // package 0, 1 J before the wrap
	root := raplfixture.Build(t, t.TempDir(), host)
	// psys fails for good, so discovery runs at every sample.
	os.WriteFile(filepath.Join(raplfixture.Dir(root, "intel-rapl:1"), "max_energy_range_uj"), []byte("lots\n"), 0o444)
	fsys := &failFS{FS: os.DirFS(root), file: "class/powercap/intel-rapl:0/name"}
	src, c, _ := newSource(t, root, fsys)
	want := "0/core 0/dram 0/package 0/uncore"
	if got := strings.Join(labels(src.Snapshot()), " "); got != want {
		t.Fatalf("zones %q, want %q", got, want)
	}

	last := zoneReading(t, src, "0", "package").EnergyJoules
	for i, step := range []struct {
		uj   uint64
		fail bool
	}{{1_000_000, true}, {2_000_000, false}} {
		fsys.set(step.fail)
		raplfixture.SetEnergy(t, root, "intel-rapl:0", step.uj)
		c.advance(time.Second)
		src.Sample()
		if got := strings.Join(labels(src.Snapshot()), " "); got != want {
			t.Errorf("sample %d: zones %q, want %q", i, got, want)
		}
		if err := src.Health(); step.fail && (err == nil || !strings.Contains(err.Error(), "intel-rapl:0/name")) {
			t.Errorf("sample %d: health %v, want the failing file named", i, err)
		}
		for _, z := range src.Snapshot().Zones {
			if z.Package != "0" || z.Zone != "package" {
				continue
			}
			if z.EnergyJoules < last {
				t.Errorf("sample %d: package 0 fell from %v J to %v J", i, last, z.EnergyJoules)
			}
			last = z.EnergyJoules
		}
	}
	if wantJ := float64(max+2_000_000) / 1e6; last != wantJ {
		t.Errorf("package 0 at %v J, want %v J (across the wrap)", last, wantJ)
	}
}

// TestBackwardsCounterIsImplausible: a counter that falls far from its range
// is no wrap (it would add 262,141 J in a second). It is reported, counted
// and not integrated; the next change is measured from the new reading.
func TestBackwardsCounterIsImplausible(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.OneSocket)
	raplfixture.SetEnergy(t, root, "intel-rapl:0", 5_000_000)
	src, c, logs := newSource(t, root, nil)

	raplfixture.SetEnergy(t, root, "intel-rapl:0", 3_000_000)
	c.advance(time.Second)
	src.Sample()
	z := zoneReading(t, src, "0", "package")
	if z.EnergyJoules != 5 || z.HasPower || z.Implausible != 1 {
		t.Errorf("after 5 J → 3 J: %v J, power %v (%v), %d implausible; want 5 J, no power, 1", z.EnergyJoules, z.PowerWatts, z.HasPower, z.Implausible)
	}
	err := src.Health()
	if err == nil || !strings.Contains(err.Error(), "intel-rapl:0") || !strings.Contains(err.Error(), "5000000") || !strings.Contains(err.Error(), "3000000") {
		t.Errorf("health %v: should name the zone and both readings", err)
	}
	if !strings.Contains(logs.String(), "implausible") {
		t.Errorf("not logged:\n%s", logs)
	}

	// Re-baselined at 3 J: 1 J more is 1 J, and health clears.
	raplfixture.SetEnergy(t, root, "intel-rapl:0", 4_000_000)
	c.advance(time.Second)
	src.Sample()
	z = zoneReading(t, src, "0", "package")
	if z.EnergyJoules != 6 || !z.HasPower || z.PowerWatts != 1 || z.Implausible != 1 {
		t.Errorf("next sample: %+v, want 6 J at 1 W", z)
	}
	if err := src.Health(); err != nil {
		t.Errorf("health %v after a plausible reading", err)
	}
}

// TestReadingAboveRangeIsImplausible: a counter above max_energy_range_uj
// and then a small one would make the total fall (5000 J to 2000 J) and the
// power read 1.8e13 W. A reading above the range is never counted nor
// measured from.
func TestReadingAboveRangeIsImplausible(t *testing.T) {
	const max = 2_000_000_000 // 2000 J
	root := raplfixture.Build(t, t.TempDir(), []raplfixture.Zone{
		{ID: "intel-rapl:0", Name: "package-0", EnergyUJ: 1_000_000_000, MaxUJ: max},
	})
	src, c, _ := newSource(t, root, nil)
	for i, step := range []struct {
		uj          uint64
		joules      float64
		implausible uint64
		healthy     bool
	}{
		{5_000_000_000, 1000, 1, false}, // above the range: not counted
		{1_000_000, 1000, 1, true},      // measured from nothing: a new baseline
		{3_000_000, 1002, 1, true},
		{max + 1, 1002, 2, false},
		{max + 2, 1002, 3, false},
		{4_000_000, 1002, 3, true},
	} {
		raplfixture.SetEnergy(t, root, "intel-rapl:0", step.uj)
		c.advance(time.Second)
		src.Sample()
		z := zoneReading(t, src, "0", "package")
		if z.EnergyJoules != step.joules || z.Implausible != step.implausible || (src.Health() == nil) != step.healthy {
			t.Errorf("step %d (%d µJ): %v J, %d implausible, health %v; want %v J, %d, healthy %v",
				i, step.uj, z.EnergyJoules, z.Implausible, src.Health(), step.joules, step.implausible, step.healthy)
		}
		if z.HasPower && (z.PowerWatts < 0 || z.PowerWatts > MaxPlausibleWatts) {
			t.Errorf("step %d: power %v W", i, z.PowerWatts)
		}
	}
	if err := src.Health(); err != nil {
		t.Fatal(err)
	}

	// A first reading above the range is no baseline: the zone is left out
	// until a plausible one arrives.
	root = raplfixture.Build(t, t.TempDir(), []raplfixture.Zone{
		{ID: "intel-rapl:0", Name: "package-0", EnergyUJ: 5_000_000_000, MaxUJ: max},
	})
	src, c, _ = newSource(t, root, nil)
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "above max_energy_range_uj") {
		t.Errorf("health %v, want the reading above the range named", err)
	}
	if got := labels(src.Snapshot()); len(got) != 0 {
		t.Errorf("zones %v served from a reading above the range", got)
	}
	raplfixture.SetEnergy(t, root, "intel-rapl:0", 1_000_000)
	c.advance(time.Second)
	src.Sample()
	if z := zoneReading(t, src, "0", "package"); z.EnergyJoules != 1 || z.Implausible != 1 || src.Health() != nil {
		t.Errorf("after a plausible reading: %+v, health %v", z, src.Health())
	}
}

// TestJumpBeyondPhysicsIsImplausible: a counter may rise by no more than
// MaxPlausibleWatts could count in the time between readings.
func TestJumpBeyondPhysicsIsImplausible(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.OneSocket) // 1 J
	src, c, _ := newSource(t, root, nil)
	raplfixture.SetEnergy(t, root, "intel-rapl:0", 1_000_000+2*MaxPlausibleWatts*1_000_000) // 2 kJ in 1 s
	c.advance(time.Second)
	src.Sample()
	if z := zoneReading(t, src, "0", "package"); z.EnergyJoules != 1 || z.Implausible != 1 || z.HasPower {
		t.Errorf("2 kJ in 1 s counted: %+v", z)
	}
	// 999 J in 1 s is within the bound.
	raplfixture.SetEnergy(t, root, "intel-rapl:0", 1_000_000+2*MaxPlausibleWatts*1_000_000+999_000_000)
	c.advance(time.Second)
	src.Sample()
	if z := zoneReading(t, src, "0", "package"); z.EnergyJoules != 1000 || z.PowerWatts != 999 || z.Implausible != 1 {
		t.Errorf("999 J in 1 s: %+v", z)
	}
}

// TestGenuineWrapAfterImplausible: a wrap within the physical bound stays a
// wrap, also right after an implausible reading re-baselined the zone.
func TestGenuineWrapAfterImplausible(t *testing.T) {
	const max = raplfixture.AMDMaxUJ
	root := raplfixture.Build(t, t.TempDir(), raplfixture.AMD)
	src, c, _ := newSource(t, root, nil)
	before := zoneReading(t, src, "0", "package").EnergyJoules
	raplfixture.SetEnergy(t, root, "intel-rapl:0", max-2_000_000) // 530 J in 10 ms: implausible
	c.advance(10 * time.Millisecond)
	src.Sample()
	raplfixture.SetEnergy(t, root, "intel-rapl:0", 1_000_000) // 3 J across the wrap in 1 s
	c.advance(time.Second)
	src.Sample()
	z := zoneReading(t, src, "0", "package")
	if got := microjoules(z.EnergyJoules - before); got != 3_000_000 || z.PowerWatts != 3 || z.Implausible != 1 {
		t.Errorf("rose by %v µJ at %v W with %d implausible, want 3 J at 3 W and 1", got, z.PowerWatts, z.Implausible)
	}
}

// TestUndecodableZoneName: a package named with invalid UTF-8 cannot be a
// label value. Its zones are refused at discovery, naming the file; the
// other package keeps serving, and the log says so once.
func TestUndecodableZoneName(t *testing.T) {
	host := append([]raplfixture.Zone(nil), raplfixture.TwoSockets...)
	host[2].Name = "package-\xff\xfe" // intel-rapl:1; its dram takes its package from it
	root := raplfixture.Build(t, t.TempDir(), host)
	src, c, logs := newSource(t, root, nil)
	for range 3 {
		c.advance(time.Second)
		src.Sample()
	}
	if got := strings.Join(labels(src.Snapshot()), " "); got != "0/dram 0/package" {
		t.Errorf("zones %q, want package 0's", got)
	}
	for _, z := range src.Snapshot().Zones {
		if !utf8.ValidString(z.Package) || !utf8.ValidString(z.Zone) {
			t.Errorf("label not UTF-8: %q %q", z.Package, z.Zone)
		}
	}
	err := src.Health()
	if err == nil || !strings.Contains(err.Error(), "class/powercap/intel-rapl:1/name") || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("health %v, want the file and the reason", err)
	}
	if n := strings.Count(logs.String(), "not fully readable"); n != 1 || !strings.Contains(logs.String(), "UTF-8") {
		t.Errorf("logged %d times, want once, with the reason:\n%s", n, logs)
	}
}

// TestTinyRangeRefused: a max_energy_range_uj of 1 µJ would have the sampler
// spin every millisecond; no real zone counts so little, so the zone is
// refused at discovery and the interval stays as configured.
func TestTinyRangeRefused(t *testing.T) {
	host := append([]raplfixture.Zone(nil), raplfixture.TwoSockets...)
	host[2].MaxUJ = 1 // intel-rapl:1
	root := raplfixture.Build(t, t.TempDir(), host)
	src, _, _ := newSource(t, root, nil)
	if got := src.Interval(); got != time.Second {
		t.Errorf("interval %v, want the configured 1s", got)
	}
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "intel-rapl:1/max_energy_range_uj") {
		t.Errorf("health %v, want the zone's range named", err)
	}
	if got := strings.Join(labels(src.Snapshot()), " "); got != "0/dram 0/package 1/dram" {
		t.Errorf("zones %q", got)
	}
	// Nor does a configured interval go below the floor.
	src = New(Config{FS: os.DirFS(root), Root: root, Interval: time.Nanosecond})
	if got := src.Interval(); got != MinInterval {
		t.Errorf("interval %v for a configured 1ns, want %v", got, MinInterval)
	}
}

// TestOversizedFile: a 100 MB energy_uj is not read whole: sysfs values fit
// in a page, so reading stops past 4 KiB with an error naming the file.
func TestOversizedFile(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	src, c, _ := newSource(t, root, nil)
	big := filepath.Join(raplfixture.Dir(root, "intel-rapl:1"), "energy_uj")
	os.Remove(big)
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(100 << 20); err != nil { // sparse: 100 MB of zeros
		t.Fatal(err)
	}
	f.Close()

	c.advance(time.Second)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	src.Sample()
	runtime.ReadMemStats(&after)
	grew := after.TotalAlloc - before.TotalAlloc
	if grew > 1<<20 {
		t.Errorf("one sample allocated %d bytes with a 100 MB energy_uj", grew)
	}
	t.Logf("one sample with a 100 MB energy_uj allocated %d bytes", grew)
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "intel-rapl:1/energy_uj") || !strings.Contains(err.Error(), "4096 bytes") || len(err.Error()) > 1000 {
		t.Errorf("health %.300q (%d bytes), want the oversized file named, briefly", err, len(fmt.Sprint(err)))
	}
	if got := len(src.Snapshot().Zones); got != 4 {
		t.Errorf("%d zones served, want all four (the oversized one keeps its last total)", got)
	}
}
