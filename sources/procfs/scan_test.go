package procfs

import (
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/childproc"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
)

// pipeWriter starts a process holding a pipe open for writing and returns
// the pipe.
func pipeWriter(t *testing.T) (Target, int) {
	t.Helper()
	ino, pid := childproc.PipeWriter(t)
	return Pipe(ino), pid
}

// TestFindHoldersShared: two callers asking while a scan runs (the docker
// source's engine lookup and energy per encode on one FS) share the next
// scan, which looks for both their targets; each gets its own, found by a
// scan that began after it asked. Three calls, two scans of /proc.
func TestFindHoldersShared(t *testing.T) {
	f := proc(t)
	scans := make(chan struct{}, 3)
	release := make(chan struct{})
	f.scan.started = func() { scans <- struct{}{}; <-release }

	a, aPID := pipeWriter(t)
	b, bPID := pipeWriter(t)
	c, cPID := pipeWriter(t)
	type answer struct {
		h   Holders
		err error
	}
	ask := func(target Target) chan answer {
		ch := make(chan answer, 1)
		go func() {
			h, err := f.FindHolders(map[Target]bool{target: true})
			ch <- answer{h, err}
		}()
		return ch
	}
	first := ask(a)
	<-scans // the first scan runs, held
	second, third := ask(b), ask(c)
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		f.scan.mu.Lock()
		defer f.scan.mu.Unlock()
		return f.scan.next != nil && f.scan.next.targets[b] && f.scan.next.targets[c]
	})
	close(release)
	for _, w := range []struct {
		ch     chan answer
		target Target
		pid    int
	}{{first, a, aPID}, {second, b, bPID}, {third, c, cPID}} {
		got := <-w.ch
		if got.err != nil {
			t.Fatal(got.err)
		}
		if ps := got.h.Found[w.target]; len(ps) != 1 || ps[0].PID != w.pid || len(got.h.Found) != 1 {
			t.Errorf("holders of %s: %+v, want only pid %d", w.target, got.h.Found, w.pid)
		}
	}
	if n := 1 + len(scans); n != 2 {
		t.Errorf("%d scans of /proc for three calls, two of them at once: want 2", n)
	}
	// Alone, a call scans for itself.
	if h, err := f.FindHolders(map[Target]bool{a: true}); err != nil || len(h.Found[a]) != 1 {
		t.Errorf("a later call: %+v %v", h, err)
	}
	if n := 1 + len(scans); n != 3 {
		t.Errorf("%d scans after a fourth call alone, want 3", n)
	}
}
