package rapl

// These machines have no RAPL: every test runs the real code on a sysfs
// tree built by internal/raplfixture as the kernel lays it out.

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/raplfixture"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newSource(t *testing.T, root string, fsys fs.FS) (*Source, *clock, *bytes.Buffer) {
	t.Helper()
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	var logs bytes.Buffer
	if fsys == nil {
		fsys = os.DirFS(root)
	}
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

func zoneReading(t *testing.T, s *Source, pkg, zone string) Reading {
	t.Helper()
	for _, z := range s.Snapshot().Zones {
		if z.Package == pkg && z.Zone == zone {
			return z
		}
	}
	t.Fatalf("no zone %s/%s in %v", pkg, zone, labels(s.Snapshot()))
	return Reading{}
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
