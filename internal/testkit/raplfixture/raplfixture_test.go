package raplfixture

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
)

// TestWriteEnergyWhileRead: a reader polling energy_uj while it is
// rewritten, as the exporter does, always reads a whole number; the file
// keeps its mode and no temporary file is left behind.
func TestWriteEnergyWhileRead(t *testing.T) {
	root := Build(t, t.TempDir(), OneSocket)
	dir := Dir(root, "intel-rapl:0")
	file := filepath.Join(dir, "energy_uj")
	done, bad := make(chan struct{}), make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			b, err := os.ReadFile(file)
			if err == nil {
				_, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
			}
			if err != nil {
				bad <- err
				return
			}
		}
	})
	for i := range 2000 {
		if err := WriteEnergy(root, "intel-rapl:0", uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	select {
	case err := <-bad:
		t.Errorf("a concurrent reader saw a partial file: %v", err)
	default:
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "1999\n" {
		t.Errorf("energy_uj %q, %v; want 1999", b, err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("energy_uj mode %v, %v; want 0444 as sysfs has it", fi.Mode(), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "enabled energy_uj max_energy_range_uj name" {
		t.Errorf("zone directory holds %q", got)
	}
}

// recorder is a testing.TB that records failures instead of acting on
// them, so the test can check how and where the meter reports one.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	errs     []string
	fatals   int
	cleanups []func()
}

func (r *recorder) Helper() {}

func (r *recorder) Error(args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprint(args...))
}

func (r *recorder) Errorf(format string, args ...any) { r.Error(fmt.Sprintf(format, args...)) }

// Fatal ends the calling goroutine, as t.Fatal does.
func (r *recorder) Fatal(args ...any) {
	r.mu.Lock()
	r.fatals++
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) { r.Fatal(fmt.Sprintf(format, args...)) }

func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func (m *Meter) lastAdvance() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// TestStartReportsAFailedWriteAtCleanup: a write that fails in Start's
// goroutine must not call t.Fatal there (the testing package forbids it);
// the meter stops and the test's cleanup reports the error.
func TestStartReportsAFailedWriteAtCleanup(t *testing.T) {
	root := Build(t, t.TempDir(), OneSocket)
	rec := &recorder{TB: t}
	m := NewMeter(rec, root, OneSocket, map[string]float64{"intel-rapl:0": 100})
	start := m.lastAdvance()
	// The zone vanishes: the next write fails.
	if err := os.RemoveAll(Dir(root, "intel-rapl:0")); err != nil {
		t.Fatal(err)
	}
	m.Start(time.Millisecond)
	exportertest.WaitFor(t, 10*time.Second, func() bool { return m.lastAdvance() != start })
	for _, f := range slices.Backward(rec.cleanups) {
		f() // on the test's goroutine, as testing runs them
	}
	if rec.fatals != 0 {
		t.Errorf("t.Fatal called %d times off the test's goroutine", rec.fatals)
	}
	if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "energy_uj") {
		t.Errorf("errors at cleanup %q, want the failed write once", rec.errs)
	}
}
