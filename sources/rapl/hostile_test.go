package rapl

// Hostile sysfs trees (issue 23): files that would block a read, counters
// and ranges at the edges of uint64, zones that share labels, and more
// zones than any machine has. The trees are raplfixture's, as elsewhere.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// mkfifo replaces file of zone id by a FIFO with no writer: opening it
// blocking waits for a writer for good.
func mkfifo(t *testing.T, root, id, file string) string {
	t.Helper()
	p := filepath.Join(raplfixture.Dir(root, id), file)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(p, 0o444); err != nil {
		t.Fatal(err)
	}
	return p
}

// returns runs f and fails the test if it has not returned within a
// minute: a sample blocked for good.
func returns(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s still blocked after a minute", what)
	}
}

// TestFIFOIsRefused: a FIFO in place of energy_uj or of a zone's
// max_energy_range_uj is refused at once, named on health, and the other
// zones keep serving; both through SysFS (what the exporter reads) and
// through another fs.FS such as os.DirFS, which would open it blocking.
func TestFIFOIsRefused(t *testing.T) {
	for _, viaDirFS := range []bool{false, true} {
		for _, file := range []string{"energy_uj", "max_energy_range_uj"} {
			t.Run(fmt.Sprintf("%s dirfs=%v", file, viaDirFS), func(t *testing.T) {
				root := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
				var fsys fs.FS
				if viaDirFS {
					fsys = os.DirFS(root)
				}
				var src *Source
				if file == "energy_uj" {
					src, _, _ = newSource(t, root, fsys)
					mkfifo(t, root, "intel-rapl:1", file)
					returns(t, "a sample with a FIFO for energy_uj", src.Sample)
				} else {
					mkfifo(t, root, "intel-rapl:1", file)
					returns(t, "discovery with a FIFO for max_energy_range_uj", func() { src, _, _ = newSource(t, root, fsys) })
				}
				err := src.Health()
				if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "intel-rapl:1/"+file) || !strings.Contains(err.Error(), "a FIFO") {
					t.Errorf("health %v, want the FIFO named and refused", err)
				}
				if !src.Snapshot().Available || len(zoneLabels(src)) < 3 {
					t.Errorf("the other zones stopped: available %v, zones %v", src.Snapshot().Available, zoneLabels(src))
				}
			})
		}
	}
}

func zoneLabels(s *Source) []string { return labels(s.Snapshot()) }

// TestFIFOForPowercapIsRefused: class/powercap itself a FIFO.
func TestFIFOForPowercapIsRefused(t *testing.T) {
	for _, viaDirFS := range []bool{false, true} {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "class"), 0o755)
		if err := syscall.Mkfifo(filepath.Join(root, "class", "powercap"), 0o444); err != nil {
			t.Fatal(err)
		}
		var fsys fs.FS
		if viaDirFS {
			fsys = os.DirFS(root)
		}
		var src *Source
		returns(t, "discovery with a FIFO for class/powercap", func() { src, _, _ = newSource(t, root, fsys) })
		if err := src.Health(); err == nil || !strings.Contains(err.Error(), "class/powercap") {
			t.Errorf("dirfs=%v: health %v, want class/powercap named", viaDirFS, err)
		}
	}
}

// blockFS blocks every open of an energy_uj while armed, as a read of a
// hung mount would: the sample in flight never returns until released.
type blockFS struct {
	fs.FS
	mu      sync.Mutex
	armed   bool
	release chan struct{}
	blocked chan time.Time
}

func (b *blockFS) Open(name string) (fs.File, error) {
	b.mu.Lock()
	armed := b.armed && strings.HasSuffix(name, "/energy_uj")
	b.mu.Unlock()
	if armed {
		select {
		case b.blocked <- time.Now():
		default:
		}
		<-b.release
	}
	return b.FS.Open(name)
}

// TestStuckSampleReportedAndShutdownDoesNotWait: a read that never
// returns is reported on health once the sample has run two sampling
// intervals (a second at least: sampling.MinStuck), Interval still answers (energy per encode asks it), and
// Run returns when its context ends while the read is still blocked.
func TestStuckSampleReportedAndShutdownDoesNotWait(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	fsys := &blockFS{FS: os.DirFS(root), release: make(chan struct{}), blocked: make(chan time.Time, 1)}
	defer close(fsys.release)
	src := New(Config{FS: fsys, Root: root, Interval: MinInterval})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan time.Time)
	go func() { src.Run(ctx); ran <- time.Now() }()

	fsys.mu.Lock()
	fsys.armed = true
	fsys.mu.Unlock()
	began := <-fsys.blocked
	var err error
	for err = src.Health(); err == nil || !strings.Contains(err.Error(), "stuck"); err = src.Health() {
		if time.Since(began) > time.Minute {
			t.Fatalf("health still %v a minute into a stuck sample", err)
		}
		time.Sleep(time.Millisecond)
	}
	reported := time.Since(began)
	t.Logf("stuck sample reported on health %v after its read blocked (interval %v, stuck after %v): %v",
		reported, src.Interval(), max(sampling.StuckAfter*MinInterval, sampling.MinStuck), err)
	returns(t, "Interval during a stuck sample", func() { src.Interval() })

	cancel()
	cancelled := time.Now()
	select {
	case at := <-ran:
		t.Logf("Run returned %v after its context ended, the read still blocked", at.Sub(cancelled))
	case <-time.After(time.Minute):
		t.Fatal("Run still waits on the stuck read a minute after its context ended")
	}
}

// TestHugeRangeKeepsTheInterval: a max_energy_range_uj near 2^64 µJ wraps
// in centuries at 1 kW; the configured interval holds (it used to overflow
// a Duration and fall to MinInterval).
func TestHugeRangeKeepsTheInterval(t *testing.T) {
	for _, maxUJ := range []uint64{9_200_000_000_000_000, 9_300_000_000_000_000_000, math.MaxInt64, math.MaxUint64} {
		root := raplfixture.Build(t, t.TempDir(), []raplfixture.Zone{{ID: "intel-rapl:0", Name: "package-0", EnergyUJ: 5, MaxUJ: maxUJ}})
		src, _, _ := newSource(t, root, nil)
		if got := src.Interval(); got != time.Second {
			t.Errorf("max_energy_range_uj %d: interval %v, want the configured 1s", maxUJ, got)
		}
	}
}

// TestCounterStartingNear2To64: a counter whose first reading is near
// 2^64 µJ (a range that large) and then wraps keeps rising; it used to
// wrap the total and fall from 1.8e13 J to under a joule, with no
// implausible reading counted.
func TestCounterStartingNear2To64(t *testing.T) {
	const maxUJ = math.MaxUint64
	root := raplfixture.Build(t, t.TempDir(), []raplfixture.Zone{{ID: "intel-rapl:0", Name: "package-0", EnergyUJ: maxUJ - 1000, MaxUJ: maxUJ}})
	src, c, _ := newSource(t, root, nil)
	prev := zoneReading(t, src, "0", "package").EnergyJoules
	for i, uj := range []uint64{500, 200_000_500, 400_000_500} { // a wrap, then 200 J a second
		raplfixture.SetEnergy(t, root, "intel-rapl:0", uj)
		c.advance(time.Second)
		src.Sample()
		z := zoneReading(t, src, "0", "package")
		if z.EnergyJoules < prev || z.Implausible != 0 || src.Health() != nil {
			t.Fatalf("reading %d (%d µJ): total %v J after %v J, %d implausible, health %v", i, uj, z.EnergyJoules, prev, z.Implausible, src.Health())
		}
		if i > 0 && math.Abs(z.EnergyJoules-prev-200) > 0.01 {
			t.Errorf("reading %d: rose %v J, want 200", i, z.EnergyJoules-prev)
		}
		if i > 0 && math.Abs(z.PowerWatts-200) > 1e-6 {
			t.Errorf("reading %d: %v W, want 200", i, z.PowerWatts)
		}
		prev = z.EnergyJoules
	}
}

// TestZonesSharingLabelsAreNamed: a second package zone named package-0
// (and its dram, which takes its package from it) would share the first
// one's series; it is refused and named on health, once in the log,
// instead of dropped in silence.
func TestZonesSharingLabelsAreNamed(t *testing.T) {
	host := append([]raplfixture.Zone(nil), raplfixture.TwoSockets...)
	host[2].Name = "package-0" // intel-rapl:1
	root := raplfixture.Build(t, t.TempDir(), host)
	src, c, logs := newSource(t, root, nil)
	c.advance(time.Second)
	src.Sample()
	if got := strings.Join(zoneLabels(src), " "); got != "0/dram 0/package" {
		t.Errorf("zones %q, want the first package 0's", got)
	}
	err := src.Health()
	for _, want := range []string{"zone intel-rapl:1: not served: it has the labels of zone intel-rapl:0", "zone intel-rapl:1:0: not served: it has the labels of zone intel-rapl:0:0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("health %v, want %q", err, want)
		}
	}
	if n := strings.Count(logs.String(), "not fully readable"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs)
	}
	// The intel-rapl-mmio view of a domain is no such clash: it is the same one.
	root = raplfixture.Build(t, t.TempDir(), raplfixture.Laptop)
	if src, _, _ = newSource(t, root, nil); src.Health() != nil {
		t.Errorf("mmio duplicate: health %v", src.Health())
	}
}

// manyZones is n package zones, intel-rapl:0 to intel-rapl:n-1, in
// memory: laid out on disk as raplfixture does, 2,000 zones take most of
// a minute on a busy machine, and discovery reads them the same way.
func manyZones(n int) fstest.MapFS {
	fsys := fstest.MapFS{}
	for i := range n {
		dir := fmt.Sprintf("class/powercap/intel-rapl:%d/", i)
		fsys[dir+"name"] = &fstest.MapFile{Data: fmt.Appendf(nil, "package-%d\n", i)}
		fsys[dir+"max_energy_range_uj"] = &fstest.MapFile{Data: []byte("262143328850\n")}
		fsys[dir+"energy_uj"] = &fstest.MapFile{Data: fmt.Appendf(nil, "%d\n", i)}
	}
	return fsys
}

// TestMoreZonesThanAnyMachine: of 2,000 zones, MaxZones are served and
// the rest named on health, so that none is folded into the SDK's
// overflow series (TestSeriesLimitServesEveryZone).
func TestMoreZonesThanAnyMachine(t *testing.T) {
	src, _, _ := newSource(t, "/sys", manyZones(2000))
	if n := len(src.Snapshot().Zones); n != MaxZones {
		t.Errorf("%d zones served, want MaxZones (%d)", n, MaxZones)
	}
	want := fmt.Sprintf("%d zones past the first %d not served", 2000-MaxZones, MaxZones)
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("health %v, want %q", err, want)
	}
}

// TestNoPowercapHintNamesTheModule: the hint names the module current
// kernels have for Intel and AMD alike; intel_rapl was split in Linux 5.3.
func TestNoPowercapHintNamesTheModule(t *testing.T) {
	src, _, _ := newSource(t, t.TempDir(), nil)
	err := src.Health()
	if err == nil || !strings.Contains(err.Error(), "intel_rapl_msr module (Intel, and AMD Zen since Linux 5.11") {
		t.Errorf("health %v, want intel_rapl_msr named for AMD too", err)
	}
	if strings.Contains(err.Error(), "intel_rapl (") || strings.Contains(err.Error(), "amd_energy") {
		t.Errorf("health %v names a module current kernels lack", err)
	}
}
