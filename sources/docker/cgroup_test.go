package docker

// Figures from cgroup fixture trees (testdata/cgroup-v1, testdata/cgroup-v2,
// with /proc trees holding each container's init process's cgroup and
// net/dev): the file formats are those of Linux 6.x, the layouts those of
// Docker and podman under their cgroupfs and systemd drivers. Each
// container's figures read from its cgroup equal those the stats path
// computes from the stats body Docker would send for the same files (on
// cgroup v2 Docker sends io.stat as read/write entries per device and
// inactive_file in memory_stats.stats). The fake Engine API
// (internal/testkit/fakeengine) serves the list, inspect and that body.

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/fakeengine"
)

// fixture is one container of the fixture trees, with the numbers its
// files hold.
type fixture struct {
	name, id           string
	v2                 bool
	pid                int
	cpuNanos           uint64
	periods, throttled uint64
	throttledNanos     uint64
	mem, inactive      uint64
	limit              uint64 // 0: unlimited ("max", or v1's page-rounded LLONG_MAX)
	read, written      uint64
	pids               uint64
	rx, tx             [4]uint64 // bytes, packets, errors, dropped on eth0
	netHost            bool
}

const fixtureHostMemory = 24683784 * 1024 // proc-v*/meminfo

var fixtures = []fixture{
	{name: "docker-systemd", id: "6de102c1cecc011032305908295668eedad74d736c6d216e4c42f416ae84988f", v2: true, pid: 4101, cpuNanos: 12_500_000_000,
		mem: 268_435_456, inactive: 67_108_864, read: 4096, written: 1_048_576, pids: 12, rx: [4]uint64{1_000_000, 900, 1, 2}, tx: [4]uint64{500_000_000, 400_000, 0, 3}},
	{name: "docker-cgroupfs", id: "fb081ee28007cf7662db5e3558f574e6698bfcc3250c545dac4ac4700025ddf4", v2: true, pid: 4102, cpuNanos: 3_000_000_000,
		periods: 1200, throttled: 40, throttledNanos: 2_500_000_000, mem: 104_857_600, inactive: 10_485_760, limit: 2 << 30, written: 8192, pids: 3,
		rx: [4]uint64{2048, 20}, tx: [4]uint64{1024, 10}},
	{name: "podman-systemd", id: "50441b5e7a2a26d2b8c70e8675122e3db74c157955230f1da5be639ee5e97267", v2: true, pid: 4103, cpuNanos: 750_000_000,
		mem: 5_242_880, pids: 1, rx: [4]uint64{726, 9}},
	{name: "podman-cgroupfs", id: "53524afa757bb9c4b03c7d93dbb7028703f61cb1c5085dd3028933f3525f1358", v2: true, pid: 4104, cpuNanos: 42_000,
		mem: 282_624, inactive: 4096, pids: 1, rx: [4]uint64{516, 6}, tx: [4]uint64{1220, 14}},
	{name: "v1-podman", id: "b98f3a33a45e2004c59af033310c738b98b55a8aa88080775e8dde6477ea7977", pid: 5101, cpuNanos: 44_180_143,
		mem: 42_307_584, inactive: 1_048_576, pids: 1, rx: [4]uint64{359_614, 5447}, tx: [4]uint64{13_821_820, 10826}},
	{name: "v1-docker", id: "44b317d826b2d53c344ee49e3fe4686613870c72d811dfd8ec1645d4579f6a47", pid: 5102, cpuNanos: 987_654_321_000,
		periods: 5000, throttled: 120, throttledNanos: 3_000_000_000, mem: 536_870_912, inactive: 134_217_728, limit: 1 << 30, read: 65536, written: 131072, pids: 17,
		rx: [4]uint64{10, 1}, tx: [4]uint64{20, 2}},
	{name: "v1-docker-systemd", id: "b2668d8ae1e425ab1b51f81e7d5a4266232a15bd85c7998562a9b6042735e4b0", pid: 5103, cpuNanos: 1_000_000,
		mem: 1_048_576, pids: 2, netHost: true},
}

// statsBody is what Docker's stats call says of f.
func (f fixture) statsBody(read time.Time) container.StatsResponse {
	st := container.StatsResponse{Read: read}
	st.CPUStats.CPUUsage.TotalUsage = f.cpuNanos
	st.CPUStats.ThrottlingData = container.ThrottlingData{Periods: f.periods, ThrottledPeriods: f.throttled, ThrottledTime: f.throttledNanos}
	inactive := "total_inactive_file"
	if f.v2 {
		inactive = "inactive_file"
	}
	st.MemoryStats = container.MemoryStats{Usage: f.mem, Limit: min(cmpOr(f.limit, fixtureHostMemory), fixtureHostMemory), Stats: map[string]uint64{inactive: f.inactive}}
	st.BlkioStats.IoServiceBytesRecursive = []container.BlkioStatEntry{{Major: 8, Op: "read", Value: f.read}, {Major: 8, Op: "write", Value: f.written}}
	st.PidsStats.Current = f.pids
	if !f.netHost {
		st.Networks = map[string]container.NetworkStats{"eth0": {RxBytes: f.rx[0], RxPackets: f.rx[1], RxErrors: f.rx[2], RxDropped: f.rx[3],
			TxBytes: f.tx[0], TxPackets: f.tx[1], TxErrors: f.tx[2], TxDropped: f.tx[3]}}
	}
	return st
}

func cmpOr(a, b uint64) uint64 {
	if a != 0 {
		return a
	}
	return b
}

// want is what the exporter serves of f, by either path.
func (f fixture) want() Container {
	c := Container{HasStats: true, HasCPUUsage: true, CPUSeconds: float64(f.cpuNanos) / 1e9,
		HasMemory: true, MemoryBytes: float64(f.mem - f.inactive), HasMemoryLimit: true, MemoryLimitBytes: float64(min(cmpOr(f.limit, fixtureHostMemory), fixtureHostMemory)),
		BlockReadBytes: float64(f.read), BlockWriteBytes: float64(f.written), HasPIDs: true, PIDs: float64(f.pids)}
	if f.periods > 0 {
		c.HasThrottling, c.ThrottledPeriods, c.ThrottledSeconds = true, float64(f.throttled), float64(f.throttledNanos)/1e9
	}
	if !f.netHost {
		c.HasNetwork, c.RxBytes, c.TxBytes = true, float64(f.rx[0]), float64(f.tx[0])
		c.Rx = Packets{Known: true, Packets: float64(f.rx[1]), Errors: float64(f.rx[2]), Dropped: float64(f.rx[3])}
		c.Tx = Packets{Known: true, Packets: float64(f.tx[1]), Errors: float64(f.tx[2]), Dropped: float64(f.tx[3])}
	}
	return c
}

// figures are the fields both paths fill.
func figures(c Container) Container {
	return Container{HasStats: c.HasStats, HasCPUUsage: c.HasCPUUsage, CPUSeconds: c.CPUSeconds, HasThrottling: c.HasThrottling,
		ThrottledPeriods: c.ThrottledPeriods, ThrottledSeconds: c.ThrottledSeconds, HasMemory: c.HasMemory, MemoryBytes: c.MemoryBytes,
		HasMemoryLimit: c.HasMemoryLimit, MemoryLimitBytes: c.MemoryLimitBytes, BlockReadBytes: c.BlockReadBytes, BlockWriteBytes: c.BlockWriteBytes,
		HasPIDs: c.HasPIDs, PIDs: c.PIDs, HasNetwork: c.HasNetwork, RxBytes: c.RxBytes, TxBytes: c.TxBytes, Rx: c.Rx, Tx: c.Tx}
}

func TestCgroupFixtures(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			e := fakeengine.Start(t)
			var cs []*fakeengine.Container
			var fs []fixture
			for _, f := range fixtures {
				if f.v2 != (v == "v2") {
					continue
				}
				fc := &fakeengine.Container{ID: f.id, Name: f.name, Image: "ffmpeg:7", State: "running", Pid: f.pid, Stats: f.statsBody(t0)}
				if f.netHost {
					fc.NetworkMode = "host"
				}
				cs, fs = append(cs, fc), append(fs, f)
			}
			e.Set(cs...)
			byCgroup, _ := newSource(t, e, func(c *Config) {
				c.Cgroupfs, c.Procfs = filepath.Join("testdata", "cgroup-"+v), filepath.Join("testdata", "proc-"+v)
			})
			byStats, _ := newSource(t, e)
			for range 2 { // the second collection has CPU%
				byCgroup.Sample(context.Background())
				byStats.Sample(context.Background())
			}
			if err := byCgroup.Health(); err != nil {
				t.Fatal(err)
			}
			for _, f := range fs {
				got, viaStats := find(t, byCgroup, f.name), find(t, byStats, f.name)
				if got.Path != PathCgroup || viaStats.Path != PathStats {
					t.Errorf("%s: paths %q (%s) and %q, want cgroup and stats", f.name, got.Path, got.PathWhy, viaStats.Path)
				}
				if !reflect.DeepEqual(figures(got), f.want()) {
					t.Errorf("%s from its cgroup:\n%+v\nwant\n%+v", f.name, figures(got), f.want())
				}
				if !reflect.DeepEqual(figures(viaStats), figures(got)) {
					t.Errorf("%s: the stats path reads\n%+v\nthe cgroup path\n%+v", f.name, figures(viaStats), figures(got))
				}
				if !got.HasCPU || got.CPUPercent != 0 {
					t.Errorf("%s: CPU%% %v (%v), want 0 (the fixture's counter stands still)", f.name, got.CPUPercent, got.HasCPU)
				}
			}
			notes := strings.Join(byCgroup.Snapshot().Notes(), "\n")
			if !strings.Contains(notes, "running containers' figures from their cgroups (cgroup)") || strings.Contains(notes, "(stats)") {
				t.Errorf("notes %q", notes)
			}
		})
	}
}

// TestCgroupFallsBackToStats: where the cgroup cannot be read, the
// container's figures come from stats calls, and the series and /health
// say so and why: no cgroup mount, a remote daemon, a container whose
// cgroup is not where its init process says, and an unreadable cgroup.
func TestCgroupFallsBackToStats(t *testing.T) {
	f := fixtures[0] // docker-systemd on v2
	tree := t.TempDir()
	if err := os.CopyFS(tree, os.DirFS("testdata")); err != nil {
		t.Fatal(err)
	}
	e := fakeengine.Start(t)
	fc := &fakeengine.Container{ID: f.id, Name: f.name, Image: "ffmpeg:7", State: "running", Pid: f.pid, Stats: f.statsBody(t0)}
	stranger := &fakeengine.Container{ID: strings.Repeat("e", 64), Name: "stranger", Image: "x", State: "running", Pid: 5101, Stats: f.statsBody(t0)}
	e.Set(fc, stranger)
	src, _ := newSource(t, e, func(c *Config) {
		c.Cgroupfs, c.Procfs = filepath.Join(tree, "cgroup-v2"), filepath.Join(tree, "proc-v2")
	})
	src.Sample(context.Background())
	if c := find(t, src, f.name); c.Path != PathCgroup {
		t.Fatalf("%s: path %q (%s)", f.name, c.Path, c.PathWhy)
	}
	// 5101 is another container's process (in proc-v1 only): not this one's.
	if c := find(t, src, "stranger"); c.Path != PathStats || !c.HasStats || !strings.Contains(c.PathWhy, "no cgroup of container eeeeeeeeeeee") {
		t.Errorf("stranger: path %q (%s), figures %v", c.Path, c.PathWhy, c.HasStats)
	}

	// The cgroup goes unreadable (a FIFO in place of cpu.stat is refused, not waited on).
	dir := filepath.Join(tree, "cgroup-v2", "system.slice", "docker-"+f.id+".scope")
	if err := os.Remove(filepath.Join(dir, "cpu.stat")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "cpu.stat"), 0o644); err != nil {
		t.Fatal(err)
	}
	src.Sample(context.Background())
	c := find(t, src, f.name)
	if c.Path != PathStats || !c.HasStats || !strings.Contains(c.PathWhy, "cgroup not readable") || !strings.Contains(c.PathWhy, "not a regular file") {
		t.Errorf("unreadable cgroup: path %q (%s), figures %v", c.Path, c.PathWhy, c.HasStats)
	}
	if !reflect.DeepEqual(figures(c), f.want()) {
		t.Errorf("by stats:\n%+v\nwant\n%+v", figures(c), f.want())
	}
	notes := strings.Join(src.Snapshot().Notes(), "\n")
	if !strings.Contains(notes, "2 running containers' figures from a stats call each per interval (stats): "+f.name+", stranger") || !strings.Contains(notes, "cgroup not readable") {
		t.Errorf("notes %q", notes)
	}

	for why, mutate := range map[string]func(*Config){
		"no cgroup v2 (cgroup.controllers) nor v1 cpuacct hierarchy": func(c *Config) { c.Cgroupfs = t.TempDir() },
		"cgroups not read (--docker.cgroups=false)":                  func(c *Config) { c.Cgroupfs = "" },
	} {
		src, _ := newSource(t, e, func(c *Config) { c.Procfs = filepath.Join(tree, "proc-v2") }, mutate)
		src.Sample(context.Background())
		if c := find(t, src, f.name); c.Path != PathStats || !strings.Contains(c.PathWhy, why) {
			t.Errorf("path %q (%s), want stats because %s", c.Path, c.PathWhy, why)
		}
	}
}

// TestRemoteDaemonUsesStats: a daemon that is not on this host's unix
// socket has containers whose cgroups are not here.
func TestRemoteDaemonUsesStats(t *testing.T) {
	g, why := openLocalCgroups(Config{Client: remote{}, Cgroupfs: "testdata/cgroup-v2", Procfs: "testdata/proc-v2"})
	if g != nil || !strings.Contains(why, "tcp://10.0.0.1:2376 is not on this host's unix socket") {
		t.Errorf("remote daemon: %v %q", g, why)
	}
}

type remote struct{ Engine }

func (remote) DaemonHost() string { return "tcp://10.0.0.1:2376" }
