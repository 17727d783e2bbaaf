package energy

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/childproc"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
)

// BenchmarkEnergyWindow100 is one window with 100 linked streams, each fed
// by its own real process: the /proc reads (a stat per linked process, the
// machine's CPU time and uptime), RAPL (a fixture: no RAPL here) and the
// join. Linking is done before the timer: it happens once per connection.
func BenchmarkEnergyWindow100(b *testing.B) { benchmarkWindow(b, 100, 100) }

// BenchmarkEnergyWindow1000 is the same at 1,000 streams, fed by 100
// processes (ten streams each): a window reads one stat per stream and
// process either way.
func BenchmarkEnergyWindow1000(b *testing.B) { benchmarkWindow(b, 1000, 100) }

func benchmarkWindow(b *testing.B, streams, processes int) {
	root := raplfixture.Build(b, b.TempDir(), raplfixture.TwoSockets)
	proc, err := procfs.New("/proc")
	if err != nil {
		b.Fatal(err)
	}
	cfg := ffmpeg.DefaultConfig
	cfg.MaxStreams = streams
	hub := ffmpeg.NewHub(cfg)
	src := New(Config{Proc: proc, Streams: hub, Interval: time.Second,
		RAPL: rapl.New(rapl.Config{FS: os.DirFS(root), Root: root, Interval: time.Second})})

	pipes := make([]uint64, processes)
	for i := range pipes {
		pipes[i], _ = childproc.PipeWriter(b)
	}
	for i := range streams {
		c, err := hub.OpenFrom(fmt.Sprintf("job%d", i), ffmpeg.Peer{Pipe: pipes[i%processes]})
		if err != nil {
			b.Fatal(err)
		}
		c.Line([]byte("frame=1"))
		c.Line([]byte("progress=continue"))
	}
	ctx := context.Background()
	src.Sample(ctx)
	if n := len(src.Snapshot().Streams); n != streams {
		b.Fatalf("%d streams linked, want %d", n, streams)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		src.Sample(ctx)
	}
	perWindow := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(perWindow*1e6/float64(streams), "µs/stream")
	b.ReportMetric(perWindow*100, "%core@1s") // share of one core at the default 1 s window
}
