//go:build budget

// Package budget proves the deployment guide's "<20MB memory" the way an
// operator sets it: each binary, built as `make build` ships it, runs
// inside a memory cgroup limited to 20 MiB (memory and swap: cgroup v2's
// memory.max, v1's memory.limit_in_bytes, through scripts/memcg) and serves
// scrapes under load, alternately with the same binary unlimited: the
// kernel's OOM killer never ends it, no scrape fails, and its scrape rate
// is within 10% of the unlimited one's. Nothing is faked but RAPL
// (internal/testkit/raplfixture: no RAPL on these machines), and no page is
// released by hand. Needs root to make the cgroup: skipped with the reason
// on a laptop, failed in CI (CI=true) when it cannot run.
package budget

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
	"golang.org/x/sys/unix"
)

// limit is the guide's budget, as an operator writes it (MemoryMax=20M).
const limit = 20 << 20

// Each port takes scrapers concurrent scrapers, a third of them of each
// kind Prometheus, curl and an OpenMetrics scraper send, for phase; the
// phases alternate unlimited, limited, limited, unlimited, twice over, so that the
// machine's load falls on both alike.
const (
	scrapers = 8
	phase    = 2 * time.Second
	minRatio = 0.9 // the limited scrape rate against the unlimited one
)

func TestServesWithin20MiB(t *testing.T) {
	peer.RequireRoot(t, "making a memory cgroup")
	makePath := peer.Require(t, "make", "apt-get install -y make")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command(makePath, "-C", root, "build", "BIN="+bin)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	memcg := filepath.Join(bin, "memcg")
	if out, err := exec.Command("go", "build", "-C", root, "-o", memcg, "./scripts/memcg").CombinedOutput(); err != nil {
		t.Fatalf("go build ./scripts/memcg: %v\n%s", err, out)
	}
	probe := "budget-probe-" + strconv.Itoa(os.Getpid())
	out, err := exec.Command(memcg, "run", probe, strconv.Itoa(limit), "--", "true").CombinedOutput()
	exec.Command(memcg, "rm", probe).Run()
	if err != nil {
		peer.Missing(t, fmt.Sprintf("no memory cgroup can be made here: %v: %s", err, strings.TrimSpace(string(out))))
	}
	sysfs := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	disk := defaultReadahead(t, bin)

	for _, c := range []struct {
		name string
		args func(ports []string) []string
		n    int // ports
	}{
		{"cpu-exporter", func(p []string) []string {
			return []string{"--web.listen-address", "127.0.0.1:" + p[0], "--path.sysfs", sysfs}
		}, 1},
		{"gpu-exporter", func(p []string) []string { return []string{"--web.listen-address", "127.0.0.1:" + p[0]} }, 1},
		{"ffmpeg-exporter", func(p []string) []string { return []string{"--web.listen-address", "127.0.0.1:" + p[0]} }, 1},
		{"docker-stats-exporter", func(p []string) []string { return []string{"--web.listen-address", "127.0.0.1:" + p[0]} }, 1},
		{"worker-exporter", func(p []string) []string {
			return []string{"--web.listen-host", "127.0.0.1", "--cpu.port", p[0], "--gpu.port", p[1],
				"--ffmpeg.port", p[2], "--docker.port", p[3], "--path.sysfs", sysfs}
		}, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Two copies, each its own inode: each run reads its own
			// program from disk into its own group (a page is charged to
			// the group that read it first).
			group := "budget-" + c.name + "-" + strconv.Itoa(os.Getpid())
			t.Cleanup(func() { // after the process is gone (cleanups run last first)
				if err := exec.Command(memcg, "rm", group).Run(); err != nil {
					t.Errorf("memcg rm %s: %v", group, err)
				}
			})
			limited := start(t, disk, filepath.Join(bin, c.name), c.name+".limited", c.n, c.args, memcg, "run", group, strconv.Itoa(limit), "--")
			if cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", limited.cmd.Process.Pid)); err != nil || !strings.Contains(string(cg), "/"+group+"\n") {
				t.Fatalf("%s is not in cgroup %s: %s %v", c.name, group, cg, err)
			}
			unlimited := start(t, disk, filepath.Join(bin, c.name), c.name+".unlimited", c.n, c.args)

			// Warm up: each reads in what serving touches (its start read
			// in what starting touches), then the measured phases.
			for _, p := range []*process{unlimited, limited} {
				if _, err := load(p.ports, time.Second); err != nil {
					t.Errorf("%s: warming up: %v", p.name, err)
				}
			}
			var rate [2]float64 // unlimited, limited: scrapes per second, summed over their phases
			// Short phases, alternated, so that what else the machine does
			// falls on both alike: 4 of each.
			order := []int{0, 1, 1, 0, 0, 1, 1, 0}
			for _, l := range order {
				p := []*process{unlimited, limited}[l]
				n, err := load(p.ports, phase)
				if err != nil {
					t.Errorf("%s: %v", p.name, err)
				}
				rate[l] += float64(n) / phase.Seconds() / float64(len(order)/2)
			}
			for _, p := range []*process{limited, unlimited} {
				select {
				case <-p.exited:
					t.Fatalf("%s ended under load: %v", p.name, p.cmd.ProcessState)
				default:
				}
			}
			st, err := exec.Command(memcg, "stat", group).Output()
			if err != nil {
				t.Fatalf("memcg stat: %v", err)
			}
			if !strings.Contains(string(st), " oom_kills=0") {
				t.Errorf("%s in %d MiB: %s: the OOM killer ended a process", c.name, limit>>20, strings.TrimSpace(string(st)))
			}
			ratio := rate[1] / rate[0]
			if ratio < minRatio {
				t.Errorf("%s in %d MiB: %.0f scrapes/s against %.0f unlimited (%.2fx): it thrashes at its limit", c.name, limit>>20, rate[1], rate[0], ratio)
			}
			t.Logf("%s in %d MiB: %.0f scrapes/s against %.0f unlimited (%.2fx) on %d port(s); %s; %s, %s (unlimited: %s, %s)",
				c.name, limit>>20, rate[1], rate[0], ratio, c.n, strings.TrimSpace(string(st)),
				limited.status("VmRSS"), limited.status("RssAnon"), unlimited.status("VmRSS"), unlimited.status("RssAnon"))
		})
	}
}

// process is one exporter started for the test.
type process struct {
	name   string
	cmd    *exec.Cmd
	ports  []string
	exited chan struct{}
}

// start copies exe to dir as name, drops the copy from the page cache and
// runs it (behind wrap, if given) on n free ports, waiting until each
// answers /health.
func start(t *testing.T, dir, exe, name string, n int, args func([]string) []string, wrap ...string) *process {
	t.Helper()
	copied := filepath.Join(dir, name)
	if out, err := exec.Command("cp", exe, copied).CombinedOutput(); err != nil {
		t.Fatalf("cp %s: %v: %s", exe, err, out)
	}
	if err := cold(copied); err != nil {
		t.Fatal(err)
	}
	p := &process{name: name, exited: make(chan struct{})}
	for range n {
		p.ports = append(p.ports, exportertest.FreePort(t))
	}
	argv := append(append(wrap, copied), args(p.ports)...)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	logs := &exportertest.Buffer{}
	p.cmd.Stdout, p.cmd.Stderr = logs, logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s log:\n%s", name, logs.String())
		}
	})
	for _, port := range p.ports {
		exportertest.WaitFor(t, 30*time.Second, func() bool {
			select {
			case <-p.exited:
				t.Fatalf("%s exited before serving: %v", name, p.cmd.ProcessState)
			default:
			}
			resp, err := http.Get("http://127.0.0.1:" + port + "/health")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil
		})
	}
	return p
}

// status is one line of the process's /proc/PID/status.
func (p *process) status(key string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, key+":") {
			return strings.Join(strings.Fields(line), " ")
		}
	}
	return key + " unknown"
}

// load scrapes every port with scrapers scrapers each for d, and returns
// how many whole scrapes were answered and the first failure.
func load(ports []string, d time.Duration) (int, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int
	var first error
	deadline := time.Now().Add(d)
	for _, p := range ports {
		for i := range scrapers {
			wg.Go(func() {
				n, err := scrape("http://127.0.0.1:"+p+"/metrics", i, deadline)
				mu.Lock()
				defer mu.Unlock()
				total += n
				if first == nil {
					first = err
				}
			})
		}
	}
	wg.Wait()
	return total, first
}

// scrape scrapes url until deadline, as scraper i: Prometheus (gzip),
// curl (plain) or an OpenMetrics scraper, each a third of the scrapers;
// every scrape must be whole and a 200. It returns how many were.
func scrape(url string, i int, deadline time.Time) (n int, err error) {
	// Prometheus's default scrape_timeout: a scrape slower than that is a
	// failed scrape (a process thrashing at its limit is not serving).
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 10 * time.Second}
	for ; time.Now().Before(deadline); n++ {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		switch i % 3 {
		case 0:
			req.Header.Set("Accept-Encoding", "gzip")
		case 2:
			req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2")
		}
		resp, err := client.Do(req)
		if err != nil {
			return n, err // the first failure is enough: no need to wait out the rest
		}
		var body io.Reader = resp.Body
		if resp.Header.Get("Content-Encoding") == "gzip" {
			if body, err = gzip.NewReader(resp.Body); err != nil {
				resp.Body.Close()
				return n, fmt.Errorf("%s: %w", url, err)
			}
		}
		b, err := io.ReadAll(body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "# TYPE ") {
			return n, fmt.Errorf("%s: %d, %d bytes, %v", url, resp.StatusCode, len(b), err)
		}
	}
	return n, nil
}

// cold drops the binary's pages from the page cache (after writing them
// out), so that the exporter reads its program from disk as after a boot
// and its group is charged for what it reads: pages the linker left in the
// cache are charged to whoever wrote them, not to the exporter.
func cold(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// readaheadKiB is the kernel's default readahead (VM_READAHEAD_PAGES), which
// most block devices get.
const readaheadKiB = 128

// defaultReadahead returns a folder on a disk that reads ahead the
// kernel's default 128 KiB: dir itself where its disk does, else an ext4
// image of its own, mounted through a loop device that does. A major fault
// in a binary's text reads the disk's readahead around it into the
// faulting group: this project's VMs' disks read ahead 8 MiB, so a
// binary's first faults read nearly all of it, and the pages a scrape
// touches, spread through it, keep all of it in use; a host with the
// default keeps what runs. docs/performance.md gives both.
func defaultReadahead(t *testing.T, dir string) string {
	t.Helper()
	if ra, err := diskReadahead(dir); err == nil && ra <= readaheadKiB {
		return dir
	} else if err == nil {
		t.Logf("%s's disk reads ahead %d KiB: the binaries run from an ext4 image that reads ahead %d KiB", dir, ra, readaheadKiB)
	}
	mkfs := peer.Require(t, "mkfs.ext4", "apt-get install -y e2fsprogs")
	losetup := peer.Require(t, "losetup", "apt-get install -y mount")
	img := filepath.Join(dir, "disk.img")
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			peer.Missing(t, fmt.Sprintf("%s %s: %v: %s (no loop device here?)", name, strings.Join(args, " "), err, out))
		}
		return strings.TrimSpace(string(out))
	}
	run("truncate", "-s", "256M", img)
	run(mkfs, "-q", "-F", img)
	// Direct I/O: the image's reads reach the disk, not a copy of it the
	// host keeps in its own page cache.
	dev := run(losetup, "--direct-io=on", "-f", "--show", img)
	t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })
	if err := os.WriteFile("/sys/block/"+filepath.Base(dev)+"/queue/read_ahead_kb", []byte(strconv.Itoa(readaheadKiB)), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run("mount", dev, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	return mnt
}

// diskReadahead is the read_ahead_kb of the disk holding dir.
func diskReadahead(dir string) (int, error) {
	out, err := exec.Command("findmnt", "-no", "SOURCE", "-T", dir).Output()
	if err != nil {
		return 0, fmt.Errorf("findmnt %s: %w", dir, err)
	}
	out, err = exec.Command("lsblk", "-ndo", "RA", strings.TrimSpace(string(out))).Output()
	if err != nil {
		return 0, fmt.Errorf("lsblk: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(out)))
}
