package instruments

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/sdk/metric"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/fakeengine"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/docker"
)

type staticDocker docker.Snapshot

func (s *staticDocker) Snapshot() *docker.Snapshot { return (*docker.Snapshot)(s) }

var started = time.Unix(1_800_000_000, 500_000_000)

// TestDockerGolden: the whole /metrics text for a known snapshot: a running
// encoder with an allowlisted label, a CPU quota and a healthcheck; a
// container seen once (no CPU% yet, no network, no memory limit), one
// whose inspect failed, and an exited one.
func TestDockerGolden(t *testing.T) {
	snap := &staticDocker{Up: true, Skipped: 2, InspectErrors: 5, HasEngineCPU: true, EngineCPUPercent: 3.5, Containers: []docker.Container{
		{ID: "aaaa", Name: "encoder-1", Image: "ffmpeg:7", State: "running", Labels: []docker.Label{{Key: "com.example.job", Value: "job42"}}, Path: docker.PathCgroup,
			HasInspect: true, RestartCount: 1, Health: "healthy", StartedAt: started, OOMKills: 2,
			HasStats: true, HasCPU: true, CPUPercent: 187.5, HasCPUUsage: true, CPUSeconds: 3600.25,
			HasThrottling: true, ThrottledPeriods: 40, ThrottledSeconds: 2.5,
			HasMemory: true, MemoryBytes: 512 << 20, HasMemoryLimit: true, MemoryLimitBytes: 2 << 30,
			HasNetwork: true, RxBytes: 1e6, TxBytes: 5e8, Rx: docker.Packets{Known: true, Packets: 1000, Errors: 1, Dropped: 2},
			Tx: docker.Packets{Known: true, Packets: 400000}, BlockReadBytes: 4096, BlockWriteBytes: 1 << 20, HasPIDs: true, PIDs: 17},
		{ID: "bbbb", Name: "fresh", Image: "busybox", State: "running", Path: docker.PathStats, HasInspect: true, Health: "none", StartedAt: started.Add(time.Hour),
			HasStats: true, HasCPUUsage: true, CPUSeconds: 0.01, HasMemory: true, MemoryBytes: 1 << 20, HasPIDs: true, PIDs: 1},
		{ID: "dddd", Name: "uninspected", Image: "busybox", State: "running", HasStats: true, HasCPU: true, CPUPercent: 12.5},
		{ID: "cccc", Name: "old-job", Image: "ffmpeg:7", State: "exited", HasInspect: true, Health: "none", ExitCode: 3, StartedAt: started.Add(-time.Hour)},
	}}
	got := scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterDocker(mp.Meter("test"), snap) })
	golden(t, "testdata/docker.golden", got)
	peer.CheckMetrics(t, got)
	checkReordered(t, dockerTable, snap.Snapshot, func(t *testing.T, got string) { golden(t, "testdata/docker.golden", got) })

	// The daemon down: only daemon_up and the running count of inspect errors.
	got = scrapeWith(t, func(mp *metric.MeterProvider) error {
		return RegisterDocker(mp.Meter("test"), &staticDocker{InspectErrors: 5})
	})
	want := "# HELP docker_daemon_up " + DockerUp.Help + "\n# TYPE docker_daemon_up gauge\ndocker_daemon_up 0\n" +
		"# HELP docker_inspect_errors_total " + DockerInspectErrors.Help + "\n# TYPE docker_inspect_errors_total counter\ndocker_inspect_errors_total 5\n"
	if got != want {
		t.Errorf("daemon down:\n%s\nwant\n%s", got, want)
	}
}

// TestDockerMissingMemoryLeftOut: through a real source, a stats body
// without memory_stats serves no memory series rather than 0.
func TestDockerMissingMemoryLeftOut(t *testing.T) {
	e := fakeengine.Start(t)
	e.Set(&fakeengine.Container{ID: "a", Name: "bare", Image: "busybox", State: "running", Stats: container.StatsResponse{Read: time.Now()}})
	src := dockerSource(t, e, 10)
	got := scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterDocker(mp.Meter("test"), src) })
	if !strings.Contains(got, `docker_container_state{container="bare",state="running"} 1`) {
		t.Fatalf("the container is not served:\n%s", got)
	}
	for _, name := range []string{DockerMemory.Name, DockerMemoryLimit.Name} {
		if strings.Contains(got, name+"{") {
			t.Errorf("%s served without memory_stats:\n%s", name, got)
		}
	}
}

// TestDockerMaxContainersWithinSeriesLimit: with the MeterProvider's
// cardinality limit set from DockerSeriesLimit, 300 containers at
// --docker.max-containers 300 are served whole and one more is left out
// and counted, never folded into the SDK's overflow series (which the
// SDK's default limit of 2,000 does to 300 containers' 2,100 states).
func TestDockerMaxContainersWithinSeriesLimit(t *testing.T) {
	const max = 300
	e := fakeengine.Start(t)
	var cs []*fakeengine.Container
	for i := range max + 1 {
		st := container.StatsResponse{Read: time.Now(), MemoryStats: container.MemoryStats{Usage: 1 << 20, Limit: 1 << 30}, PidsStats: container.PidsStats{Current: 1},
			Networks: map[string]container.NetworkStats{"eth0": {RxBytes: 100, RxPackets: 1, TxBytes: 100, TxPackets: 1}}}
		st.CPUStats.CPUUsage.TotalUsage = 1e9
		cs = append(cs, &fakeengine.Container{ID: fmt.Sprintf("c%03d", i), Name: fmt.Sprintf("job-%03d", i), Image: "ffmpeg", State: "running",
			Created: int64(i), Health: container.Healthy, StartedAt: time.Now(), Stats: st})
	}
	e.Set(cs...)
	src := dockerSource(t, e, max)

	got := scrapeLimited(t, src, metric.WithCardinalityLimit(DockerSeriesLimit(max)))
	if strings.Contains(got, "otel_metric_overflow") {
		t.Errorf("series folded into the overflow series at the bound")
	}
	if n := strings.Count(got, "\ndocker_container_state{"); n != max*len(docker.States) {
		t.Errorf("%d state series, want %d", n, max*len(docker.States))
	}
	if n := strings.Count(got, "\ndocker_container_health_status{"); n != max*len(docker.HealthStatuses) {
		t.Errorf("%d health series, want %d", n, max*len(docker.HealthStatuses))
	}
	if strings.Contains(got, `container="job-300"`) || !strings.Contains(got, "\ndocker_containers_skipped 1\n") {
		t.Errorf("the newest container should be left out and counted")
	}
	if err := src.Health(); err == nil || !strings.Contains(err.Error(), "1 containers left out") {
		t.Errorf("health %v", err)
	}

	// Why the limit must be set: the SDK's default folds containers away.
	if got := scrapeLimited(t, src); !strings.Contains(got, "otel_metric_overflow") {
		t.Error("no overflow at the SDK's default limit: the premise of DockerSeriesLimit is gone")
	}
}

func dockerSource(t *testing.T, e *fakeengine.Engine, maxContainers int) *docker.Source {
	t.Helper()
	cli, err := docker.NewClient(docker.DefaultMaxResponseBytes, client.WithHost(e.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	src := docker.New(docker.Config{Client: cli, Interval: time.Second, Timeout: 10 * time.Second, Concurrency: 16, MaxContainers: maxContainers})
	src.Sample(context.Background())
	return src
}

// scrapeLimited is scrapeWith on a MeterProvider with options.
func scrapeLimited(t *testing.T, src *docker.Source, opts ...metric.Option) string {
	t.Helper()
	registry := prometheus.NewRegistry()
	bridge, err := otelprom.New(otelprom.WithRegisterer(registry), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo(),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes))
	if err != nil {
		t.Fatal(err)
	}
	provider := metric.NewMeterProvider(append(opts, metric.WithReader(bridge))...)
	t.Cleanup(func() { provider.Shutdown(context.Background()) })
	if err := RegisterDocker(provider.Meter("test"), src); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}
