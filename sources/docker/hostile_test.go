package docker

// What a broken or hostile daemon (internal/testkit/fakeengine) must not take
// from the exporter: its memory, nor healthy containers' freshness.

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/fakeengine"
)

func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestEventFloodBounded: 100,000 start events with unique IDs, and
// events of actions that change nothing, sent whatever the filter asked,
// cost a bounded amount of memory, none of it kept after the flood, and
// events after it are still followed. (Kept, 100,000 IDs are over 10 MiB.)
func TestEventFloodBounded(t *testing.T) {
	const flood = 100_000
	e := fakeengine.Start(t)
	e.Set(running("a", "web"))
	src, _ := newSource(t, e, func(c *Config) { c.ListInterval = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { src.Run(ctx); close(ran) }()
	defer func() { cancel(); <-ran }()
	exportertest.WaitFor(t, 10*time.Second, func() bool { return src.Snapshot().Up })

	before := heapInuse()
	for i := range flood {
		e.Emit(events.ActionStart, fmt.Sprintf("%064x", i))
		if i%5 == 0 {
			e.Emit("exec_start: sh", fmt.Sprintf("%064x", i))
		}
	}
	e.OOM("a") // after the flood: once counted, the flood has been read
	flooded := time.Now()
	exportertest.WaitFor(t, 120*time.Second, func() bool { return find(t, src, "web").OOMKills == 1 })
	grown := int64(heapInuse()) - int64(before)
	t.Logf("%d start events with unique IDs (and %d exec_start): read in %v after the last was sent; heap %+.1f MiB", flood, flood/5, time.Since(flooded).Round(time.Millisecond), float64(grown)/(1<<20))
	if grown > 8<<20 {
		t.Errorf("heap grew %d MiB over a flood of %d events, want under 8 MiB", grown>>20, flood)
	}
	src.oomMu.Lock()
	pending := len(src.oom)
	src.oomMu.Unlock()
	if pending > 1 {
		t.Errorf("%d OOM counts kept, want the one container's", pending)
	}
	src.Sample(ctx)
	if cs := src.Snapshot().Containers; len(cs) != 1 || src.Health() != nil {
		t.Errorf("after the flood: %d containers, health %v", len(cs), src.Health())
	}
}

// TestEventsDriveTheList: with the event stream up, a container created,
// renamed, stopped and removed is followed through its events alone, with
// no list beyond the first.
func TestEventsDriveTheList(t *testing.T) {
	e := fakeengine.Start(t)
	e.Set(running("a", "old"))
	src, _ := newSource(t, e, func(c *Config) { c.ListInterval, c.Interval = time.Hour, 100*time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { src.Run(ctx); close(ran) }()
	defer func() { cancel(); <-ran }()
	// The first list, then the one after the stream connects; none after.
	exportertest.WaitFor(t, 10*time.Second, func() bool { return trustedNow(&src.events) && e.Lists() >= 2 })
	lists := e.Lists()
	has := func(name, state string) func() bool {
		return func() bool {
			for _, c := range src.Snapshot().Containers {
				if c.Name == name && c.State == state {
					return true
				}
			}
			return false
		}
	}
	nw := running("b", "new")
	e.Set(running("a", "old"), nw)
	e.Emit(events.ActionCreate, "b")
	exportertest.WaitFor(t, 10*time.Second, has("new", "running"))
	e.Update(func() { nw.Name = "renamed" })
	e.Emit(events.ActionRename, "b")
	exportertest.WaitFor(t, 10*time.Second, has("renamed", "running"))
	e.Update(func() { nw.State, nw.ExitCode = "exited", 3 })
	e.Emit(events.ActionDie, "b")
	exportertest.WaitFor(t, 10*time.Second, has("renamed", "exited"))
	if c := find(t, src, "renamed"); c.ExitCode != 3 || c.HasStats {
		t.Errorf("exited: %+v", c)
	}
	e.Set(running("a", "old"))
	e.Emit(events.ActionDestroy, "b")
	exportertest.WaitFor(t, 10*time.Second, func() bool { return len(src.Snapshot().Containers) == 1 })
	if n := e.Lists(); n != lists {
		t.Errorf("%d lists while the events told every change, want none", n-lists)
	}
}

// TestLargeBodiesInParallelBounded: 16 stats bodies of 200 MB each, called
// at once, are read past 64 KiB one at a time: the bytes in flight are
// about one bound's worth, not 16.
func TestLargeBodiesInParallelBounded(t *testing.T) {
	const huge, bound = 200 << 20, 4 << 20
	e := fakeengine.Start(t)
	var cs []*fakeengine.Container
	for i := range 16 {
		c := running(fmt.Sprintf("c%02d", i), fmt.Sprintf("big-%02d", i))
		c.StatsPadding = huge
		cs = append(cs, c)
	}
	e.Set(cs...)
	src, _ := newSourceBounded(t, e, bound, func(c *Config) { c.Timeout, c.Interval, c.Concurrency = time.Minute, time.Minute, 16 })
	base := heapInuse()
	var peak atomic.Uint64
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	src.Sample(context.Background())
	close(stop)
	<-polled
	// One body past the bound costs up to about 4 bounds while it is
	// decoded (the decoder doubles its buffer), and the one before it
	// lingers until the GC runs: 8 bounds, measured 33 MiB here. Read all
	// at once they cost 16 times one (measured 117 MiB).
	grown := int64(peak.Load()) - int64(base)
	t.Logf("16 stats bodies of %d MiB called at once, cut at %d MiB: heap peaked %.1f MiB above the start", huge>>20, bound>>20, float64(grown)/(1<<20))
	if grown > 12*bound {
		t.Errorf("16 bodies over the %d MiB bound read at once: heap peaked %d MiB above the start, want under %d MiB", bound>>20, grown>>20, 12*bound>>20)
	}
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "is over 4194304 bytes") {
		t.Errorf("health %v", err)
	}
}

// TestHangingStatsStarveNoOne: 48 of 300 containers whose stats calls
// never answer. Once they have failed, each collection takes the healthy
// containers' stats without waiting on the hanging calls, which are still
// out when it ends.
func TestHangingStatsStarveNoOne(t *testing.T) {
	e := fakeengine.Start(t)
	var cs, healthy []*fakeengine.Container
	for i := range 300 {
		c := running(fmt.Sprintf("c%03d", i), fmt.Sprintf("job-%03d", i))
		if i%25 < 4 { // 48, spread through the name order
			c.StatsDelay = time.Hour
		} else {
			healthy = append(healthy, c)
		}
		cs = append(cs, c)
	}
	e.Set(cs...)
	// Calls that never end by themselves; a collection waits at most an
	// interval (5 s: the healthy answer within it, even on a loaded machine).
	src, _ := newSource(t, e, func(c *Config) { c.Timeout, c.Interval, c.Concurrency = time.Hour, 5*time.Second, 16 })
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); src.calls.Wait() }()

	collected := func() bool {
		done := make(chan struct{})
		go func() { src.Sample(ctx); close(done) }()
		select {
		case <-done:
			return true
		case <-time.After(time.Minute):
			return false
		}
	}
	failing := func() int {
		src.regMu.Lock()
		defer src.regMu.Unlock()
		n := 0
		for _, e := range src.known {
			if e.failing || e.busy {
				n++
			}
		}
		return n
	}
	// A healthy container whose call a loaded machine slowed past the wait
	// joins the failing ones until a slow-lane call of it answers: a few
	// rounds more, not one wait per hanging call.
	for round := 0; failing() < 48 || !allSampled(src, len(healthy)); round++ {
		if round == 40 || !collected() {
			t.Fatalf("after %d collections: %d containers failing, want 48; the collections wait on hanging calls", round, failing())
		}
	}
	e.Update(func() {
		for _, c := range healthy {
			c.Stats.Read, c.Stats.CPUStats.CPUUsage.TotalUsage = t0.Add(time.Second), 2e9
		}
	})
	began := time.Now()
	if !collected() {
		t.Fatal("a collection waited on the hanging calls")
	}
	t.Logf("48 of 300 containers hanging: a collection took %v (interval 5 s), every healthy container's figures from it", time.Since(began).Round(time.Millisecond))
	if n := e.StatsInFlight(); n == 0 {
		t.Error("no hanging call out when the collection ended: it waited for them")
	}
	for _, h := range healthy {
		if c := find(t, src, h.Name); !c.HasCPU || c.CPUSeconds != 2 {
			t.Fatalf("%s: CPU seconds %v (%v), want this collection's 2", c.Name, c.CPUSeconds, c.HasStats)
		}
	}
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "and 38 more containers") {
		t.Errorf("health %v: should name the hanging ones", err)
	}
}

// allSampled: n containers have figures.
func allSampled(s *Source, n int) bool {
	got := 0
	for _, c := range s.Snapshot().Containers {
		if c.HasStats {
			got++
		}
	}
	return got == n
}

// trustedNow is trusted without taking a relist due.
func trustedNow(ev *eventState) bool {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.connected && !ev.relist
}
