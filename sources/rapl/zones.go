// Package rapl reads CPU energy from the kernel's powercap interface
// (<sysfs>/class/powercap/intel-rapl:*), which Intel and AMD hosts both use.
// It samples in the background, keeps a wrap-corrected energy total per zone
// and the mean power over the latest sampling window, and publishes them as
// a snapshot that scrapes only read.
package rapl

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// powercapDir is where the kernel lists every powercap zone, nested ones
// included, as symlinks into devices/virtual/powercap.
const powercapDir = "class/powercap"

// zone is one physical RAPL domain.
type zone struct {
	Package  string // socket index, "0", "1"; empty for psys (the whole platform)
	Zone     string // package, core, uncore, dram, psys
	Dir      string // e.g. class/powercap/intel-rapl:0:1, relative to sysfs
	MaxRange uint64 // max_energy_range_uj: where energy_uj wraps to 0
}

// discover lists the RAPL zones under fsys (rooted at sysfs), why any
// zone there could not be identified (failed: looked for again), and why
// any identified is not served (refused: for good). A zone among known
// that cannot be identified now stays as it was known: one failed read
// must not drop it, nor let its intel-rapl-mmio view stand in. A domain
// that both intel-rapl (MSR) and intel-rapl-mmio expose is counted once,
// from intel-rapl; two zones that would share labels otherwise are not
// both served: the second is refused, as is every zone past MaxZones.
func discover(fsys fs.FS, known []zone) (zones []zone, failed, refused []error, err error) {
	if _, ok := fsys.(sysFS); !ok {
		// Another fs.FS (os.DirFS) opens blocking: look before opening.
		if fi, err := fs.Stat(fsys, powercapDir); err == nil && !fi.IsDir() {
			return nil, nil, nil, fmt.Errorf("%s: not a directory", powercapDir)
		}
	}
	entries, err := fs.ReadDir(fsys, powercapDir)
	if err != nil {
		return nil, nil, nil, err
	}
	var names []string
	for _, e := range entries {
		if ctl, _, ok := strings.Cut(e.Name(), ":"); ok && (ctl == "intel-rapl" || ctl == "intel-rapl-mmio") {
			names = append(names, e.Name())
		}
	}
	// intel-rapl before intel-rapl-mmio, parents before their subzones.
	sort.Slice(names, func(i, j int) bool {
		mi, mj := isMMIO(names[i]), isMMIO(names[j])
		if mi != mj {
			return mj
		}
		return names[i] < names[j]
	})

	seen := map[[2]string]string{} // labels → the zone that has them
	beyond := 0                    // zones past MaxZones
	for _, name := range names {
		z, err := readZone(fsys, name)
		if err != nil {
			failed = append(failed, fmt.Errorf("zone %s: %w", name, err))
			i := slices.IndexFunc(known, func(k zone) bool { return k.Dir == path.Join(powercapDir, name) })
			if i < 0 {
				continue
			}
			z = known[i]
		}
		key := [2]string{z.Package, z.Zone}
		if first, ok := seen[key]; ok {
			if isMMIO(name) && !isMMIO(first) {
				continue // the mmio view of a domain intel-rapl already gave us
			}
			refused = append(refused, fmt.Errorf("zone %s: not served: it has the labels of zone %s (package %q, zone %q), and two zones cannot share a series",
				name, first, clip(z.Package), z.Zone))
			continue
		}
		if len(zones) == MaxZones {
			beyond++
			continue
		}
		seen[key] = name
		zones = append(zones, z)
	}
	if beyond > 0 {
		refused = append(refused, fmt.Errorf("%d zones past the first %d not served: no machine has so many", beyond, MaxZones))
	}
	return zones, failed, refused, nil
}

func isMMIO(name string) bool { return strings.HasPrefix(name, "intel-rapl-mmio:") }

// readZone identifies the zone class/powercap/<name>.
func readZone(fsys fs.FS, name string) (zone, error) {
	dir := path.Join(powercapDir, name)
	kind, err := readString(fsys, path.Join(dir, "name"))
	if err != nil {
		return zone{}, err
	}
	maxRange, err := readUint(fsys, path.Join(dir, "max_energy_range_uj"))
	if err != nil {
		return zone{}, err
	}
	if maxRange < minRange {
		return zone{}, fmt.Errorf("%s/max_energy_range_uj is %d µJ: no real zone wraps below %d µJ, "+
			"and sampling fast enough to catch its wraps (%v at %d W) would spin the CPU", dir, maxRange, uint64(minRange), MinInterval, MaxPlausibleWatts)
	}
	z := zone{Dir: dir, MaxRange: maxRange}
	from := path.Join(dir, "name") // where the package label comes from
	switch {
	case strings.HasPrefix(kind, "package-"):
		z.Zone, z.Package = "package", strings.TrimPrefix(kind, "package-")
	case kind == "psys":
		z.Zone = "psys"
	default:
		// A subzone (core, uncore, dram) belongs to its parent's package:
		// intel-rapl:0:1's parent is intel-rapl:0.
		z.Zone = sanitize(kind)
		if parent := name[:strings.LastIndexByte(name, ':')]; strings.Count(name, ":") == 2 {
			from = path.Join(powercapDir, parent, "name")
			pkind, err := readString(fsys, from)
			if err != nil {
				return zone{}, err
			}
			z.Package = strings.TrimPrefix(pkind, "package-")
		} else {
			// A top-level zone that is not a package: index it by its own number.
			z.Package, from = name[strings.LastIndexByte(name, ':')+1:], dir
		}
	}
	// The Prometheus bridge drops, at every scrape, a family with a label
	// value that is not UTF-8; refusing the zone here costs only that zone.
	if !utf8.ValidString(z.Package) {
		return zone{}, fmt.Errorf("%s: the package name %q is not valid UTF-8, so it cannot be a label value", from, clip(z.Package))
	}
	return z, nil
}

// minRange is the smallest max_energy_range_uj taken for real. A counter
// must not wrap twice within MinInterval at MaxPlausibleWatts, and real
// zones wrap far above it: at 65 kJ (AMD) or 262 kJ (Intel), a 32-bit
// counter of 15.3 or 61 µJ units.
const minRange = 2 * MaxPlausibleWatts * uint64(MinInterval/time.Microsecond)

// sanitize keeps a zone name a tidy label value.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return '_'
	}, s)
}

// maxValue is the most a sysfs attribute holds: one page.
const maxValue = 4096

// readString reads a sysfs value, refusing one larger than sysfs can hold
// rather than reading it whole, and a file that is not a regular file
// (SysFS refuses it as it opens it; any other fs.FS may open it blocking,
// so it is looked at first).
func readString(fsys fs.FS, name string) (string, error) {
	if _, ok := fsys.(sysFS); !ok {
		fi, err := fs.Stat(fsys, name)
		if err != nil {
			return "", err
		}
		if !fi.Mode().IsRegular() {
			return "", notRegular("open", name, fi.Mode())
		}
	}
	f, err := fsys.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxValue+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxValue {
		return "", fmt.Errorf("%s: over %d bytes, more than a sysfs value can be", name, maxValue)
	}
	return strings.TrimSpace(string(b)), nil
}

func readUint(fsys fs.FS, name string) (uint64, error) {
	s, err := readString(fsys, name)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		// strconv's error quotes the whole value; the start of it says enough.
		return 0, fmt.Errorf("%s: %q is not a number of µJ: %w", name, clip(s), errors.Unwrap(err))
	}
	return v, nil
}

// clip shortens a value quoted in an error, which health and the log carry.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
