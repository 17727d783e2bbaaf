// Package raplfixture builds sysfs powercap trees for tests, laid out as the
// kernel lays them out: zones live nested under
// devices/virtual/powercap/<control type>/, and class/powercap/ holds a
// symlink to every zone, subzones included. These machines have no RAPL, so
// tests run the real code on such trees instead.
package raplfixture

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Zone is one powercap zone.
type Zone struct {
	ID       string // intel-rapl:0, intel-rapl:0:1, intel-rapl-mmio:0
	Name     string // package-0, core, uncore, dram, psys
	EnergyUJ uint64
	MaxUJ    uint64
}

// Intel's usual max_energy_range_uj, and AMD EPYC's, which wraps about every
// five minutes at 200 W.
const (
	IntelMaxUJ = 262143328850
	AMDMaxUJ   = 65532610987
)

// Hosts are the layouts the tests cover.
var (
	OneSocket = []Zone{
		{ID: "intel-rapl:0", Name: "package-0", EnergyUJ: 1_000_000, MaxUJ: IntelMaxUJ},
	}
	TwoSockets = []Zone{
		{ID: "intel-rapl:0", Name: "package-0", EnergyUJ: 10_000_000, MaxUJ: IntelMaxUJ},
		{ID: "intel-rapl:0:0", Name: "dram", EnergyUJ: 2_000_000, MaxUJ: IntelMaxUJ},
		{ID: "intel-rapl:1", Name: "package-1", EnergyUJ: 20_000_000, MaxUJ: IntelMaxUJ},
		{ID: "intel-rapl:1:0", Name: "dram", EnergyUJ: 3_000_000, MaxUJ: IntelMaxUJ},
	}
	// A client part: a package with core, uncore and dram, psys, and the
	// intel-rapl-mmio view of package 0 (the same domain again).
	Laptop = []Zone{
		{ID: "intel-rapl:0", Name: "package-0", EnergyUJ: 50_000_000, MaxUJ: IntelMaxUJ},
		{ID: "intel-rapl:0:0", Name: "core", EnergyUJ: 30_000_000, MaxUJ: IntelMaxUJ},
		{ID: "intel-rapl:0:1", Name: "uncore", EnergyUJ: 1_500_000, MaxUJ: IntelMaxUJ},
		{ID: "intel-rapl:0:2", Name: "dram", EnergyUJ: 4_000_000, MaxUJ: IntelMaxUJ},
		{ID: "intel-rapl:1", Name: "psys", EnergyUJ: 80_000_000, MaxUJ: IntelMaxUJ},
		{ID: "intel-rapl-mmio:0", Name: "package-0", EnergyUJ: 50_000_000, MaxUJ: IntelMaxUJ},
	}
	// AMD Zen: package and core through the intel-rapl control type, and a
	// small wrap range.
	AMD = []Zone{
		{ID: "intel-rapl:0", Name: "package-0", EnergyUJ: 65_000_000_000, MaxUJ: AMDMaxUJ},
		{ID: "intel-rapl:0:0", Name: "core", EnergyUJ: 12_000_000, MaxUJ: AMDMaxUJ},
	}
)

// Build lays zones out under root (the sysfs mount point) and returns root.
func Build(t testing.TB, root string, zones []Zone) string {
	t.Helper()
	class := filepath.Join(root, "class", "powercap")
	must(t, os.MkdirAll(class, 0o755))
	for _, z := range zones {
		dir := Dir(root, z.ID)
		must(t, os.MkdirAll(dir, 0o755))
		write(t, filepath.Join(dir, "name"), z.Name)
		write(t, filepath.Join(dir, "max_energy_range_uj"), strconv.FormatUint(z.MaxUJ, 10))
		write(t, filepath.Join(dir, "enabled"), "1")
		SetEnergy(t, root, z.ID, z.EnergyUJ)
		// The control type's own entry, and the zone's, as the kernel links them.
		ctl, _, _ := strings.Cut(z.ID, ":")
		link(t, filepath.Join("..", "..", "devices", "virtual", "powercap", ctl), filepath.Join(class, ctl))
		rel, err := filepath.Rel(class, dir)
		must(t, err)
		link(t, rel, filepath.Join(class, z.ID))
	}
	return root
}

// Dir is where zone id's files live: intel-rapl:0:1 is nested in intel-rapl:0.
func Dir(root, id string) string {
	ctl, rest, _ := strings.Cut(id, ":")
	dir := filepath.Join(root, "devices", "virtual", "powercap", ctl)
	parts := strings.Split(rest, ":")
	for i := range parts {
		dir = filepath.Join(dir, ctl+":"+strings.Join(parts[:i+1], ":"))
	}
	return dir
}

// SetEnergy writes zone id's energy_uj, as the hardware counter advancing.
func SetEnergy(t testing.TB, root, id string, uj uint64) {
	t.Helper()
	must(t, WriteEnergy(root, id, uj))
}

// WriteEnergy writes zone id's energy_uj, for goroutines other than the
// test's, which must not call t.Fatal.
func WriteEnergy(root, id string, uj uint64) error {
	return writeFile(filepath.Join(Dir(root, id), "energy_uj"), strconv.FormatUint(uj, 10))
}

func write(t testing.TB, path, content string) {
	t.Helper()
	must(t, writeFile(path, content))
}

// writeFile replaces path by a new file renamed over it, so a concurrent
// reader never sees it empty or half-written, and a read-only file (sysfs
// attributes are 0444) needs no write permission on the file, only on its
// directory. The new file keeps path's mode; a file new to the tree is 0444.
func writeFile(path, content string) error {
	mode := os.FileMode(0o444)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = f.WriteString(content + "\n")
	err = errors.Join(err, f.Chmod(mode), f.Close())
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func link(t testing.TB, target, name string) {
	t.Helper()
	if _, err := os.Lstat(name); err == nil {
		return
	}
	must(t, os.Symlink(target, name))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
