package exporters

import (
	"context"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
)

func openFFmpeg(t *testing.T, args ...string) (OpenedSource, error) {
	t.Helper()
	return open(t, FFmpeg(), args...)
}

// TestFFmpegWithEnergy: the ffmpeg source runs energy per encode beside
// the hub (RAPL from a fixture tree: no RAPL here) as one source: ready
// once both are, its generation moving with every window though nothing
// is ingested (so a cached scrape never misses a window), and both ending
// with the port.
func TestFFmpegWithEnergy(t *testing.T) {
	root := raplfixture.Build(t, t.TempDir(), raplfixture.OneSocket)
	b, err := openFFmpeg(t, "--path.sysfs", root, "--energy.interval", "50ms")
	if err != nil {
		t.Fatal(err)
	}
	w, ok := b.Source.(*withEnergy)
	if !ok {
		t.Fatalf("source %T, want the hub with energy per encode", b.Source)
	}
	if _, ok := w.Source.(*ffmpeg.Hub); !ok {
		t.Fatalf("inner source %T, want the hub", w.Source)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { b.Run(ctx); close(ran) }()
	select {
	case <-b.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready within 10 s")
	}
	from := b.Generation()
	exportertest.WaitFor(t, 10*time.Second, func() bool { return w.energy.Generation() >= 3 && b.Generation() > from+1 })
	if err := b.Health(); err != nil {
		t.Errorf("health: %v", err)
	}
	if st := b.Stats(); st.LastSuccess.IsZero() {
		t.Errorf("stats %+v: no success recorded", st)
	}
	cancel()
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestEnergyOff: --energy.interval 0 serves the hub alone; a negative one
// is refused; a --path.procfs that is not a procfs is refused at start.
func TestEnergyOff(t *testing.T) {
	b, err := openFFmpeg(t, "--energy.interval", "0")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Source.(*ffmpeg.Hub); !ok {
		t.Errorf("source %T, want the hub alone", b.Source)
	}
	if _, err := openFFmpeg(t, "--energy.interval", "-1s"); err == nil {
		t.Error("a negative interval accepted")
	}
	if _, err := openFFmpeg(t, "--energy.max-ladders", "0"); err == nil {
		t.Error("--energy.max-ladders 0 accepted")
	}
	if _, err := openFFmpeg(t, "--energy.idle-watts.cpu", "-5"); err == nil {
		t.Error("a negative idle power accepted")
	}
	if _, err := openFFmpeg(t, "--path.procfs", t.TempDir()); err == nil {
		t.Error("an empty folder accepted as procfs")
	}
}
