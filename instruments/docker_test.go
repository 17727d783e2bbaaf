package instruments

import (
	"testing"

	"go.opentelemetry.io/otel/sdk/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/docker"
)

type staticDocker docker.Snapshot

func (s *staticDocker) Snapshot() *docker.Snapshot { return (*docker.Snapshot)(s) }

// TestDockerGolden: the whole /metrics text for a known snapshot: a running
// encoder with an allowlisted label, a container seen once (no CPU% yet,
// no network), and an exited one.
func TestDockerGolden(t *testing.T) {
	snap := &staticDocker{Up: true, Containers: []docker.Container{
		{ID: "aaaa", Name: "encoder-1", Image: "ffmpeg:7", State: "running", Labels: []docker.Label{{Key: "com.example.job", Value: "job42"}},
			RestartCount: 1, OOMKills: 2, HasStats: true, HasCPU: true, CPUPercent: 187.5, MemoryBytes: 512 << 20, MemoryLimitBytes: 2 << 30,
			HasNetwork: true, RxBytes: 1e6, TxBytes: 5e8, BlockReadBytes: 4096, BlockWriteBytes: 1 << 20, PIDs: 17},
		{ID: "bbbb", Name: "fresh", Image: "busybox", State: "running", HasStats: true, MemoryBytes: 1 << 20, MemoryLimitBytes: 2 << 30, PIDs: 1},
		{ID: "cccc", Name: "old-job", Image: "ffmpeg:7", State: "exited"},
	}}
	got := scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterDocker(mp.Meter("test"), snap) })
	golden(t, "testdata/docker.golden", got)
	peer.CheckMetrics(t, got)
	checkReordered(t, dockerTable, snap.Snapshot, func(t *testing.T, got string) { golden(t, "testdata/docker.golden", got) })
}
