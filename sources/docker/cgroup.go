package docker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// cgroupFS is the host's cgroup hierarchy (<sysfs>/fs/cgroup), from which
// the source reads running containers' figures itself: the files the
// engine would read to answer a stats call.
type cgroupFS struct {
	root string
	v2   bool      // one unified hierarchy; else one per v1 controller
	proc procfs.FS // the host's procfs, for /proc/<pid>/cgroup and net/dev
}

// v1Controllers are the v1 hierarchies read, each its own mount.
var v1Controllers = []string{"cpuacct", "cpu", "memory", "blkio", "pids"}

// openCgroups finds the cgroup version mounted at root. A hybrid host (v1
// controllers beside an empty unified hierarchy) is v1.
func openCgroups(root, proc string) (*cgroupFS, error) {
	fs, err := procfs.NewFS(proc)
	if err != nil {
		return nil, fmt.Errorf("procfs to read containers' network from: %w", err)
	}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return &cgroupFS{root: root, v2: true, proc: fs}, nil
	}
	for _, c := range []string{"cpuacct", "memory"} {
		if _, err := os.Stat(filepath.Join(root, c)); err != nil {
			return nil, fmt.Errorf("no cgroup v2 (cgroup.controllers) nor v1 %s hierarchy under %s", c, root)
		}
	}
	return &cgroupFS{root: root, proc: fs}, nil
}

// cgroupDirs is one container's cgroup: one directory on v2; on v1, the
// directory of each controller in v1Controllers.
type cgroupDirs struct {
	v2   bool
	dirs map[string]string // controller ("" on v2) → directory
}

// find locates the cgroup of container id: where its init process (pid)
// sits, when that names the container, else the engines' own naming, as
// Docker and podman name it under the cgroupfs and systemd drivers
// (parent: the container's --cgroup-parent).
func (g *cgroupFS) find(id string, pid int, parent string) (cgroupDirs, error) {
	var rels []string
	if rel := g.ofProcess(pid); strings.Contains(rel, id) {
		rels = append(rels, rel)
	}
	if parent = strings.Trim(parent, "/"); parent != "" {
		rels = append(rels, parent+"/"+id, parent+"/docker-"+id+".scope", parent+"/libpod-"+id+".scope", parent+"/libpod-"+id)
	}
	rels = append(rels,
		"system.slice/docker-"+id+".scope",  // Docker, systemd driver
		"docker/"+id,                        // Docker, cgroupfs driver
		"machine.slice/libpod-"+id+".scope", // podman, systemd
		"libpod_parent/libpod-"+id,          // podman, cgroupfs
	)
	for _, rel := range rels {
		d := cgroupDirs{v2: g.v2, dirs: map[string]string{}}
		if g.v2 {
			d.dirs[""] = filepath.Join(g.root, rel)
		} else {
			for _, c := range v1Controllers {
				d.dirs[c] = filepath.Join(g.root, c, rel)
			}
		}
		if _, err := os.Stat(d.dir("cpuacct")); err == nil {
			return d, nil
		}
	}
	return cgroupDirs{}, fmt.Errorf("no cgroup of container %.12s under %s (looked for %s)", id, g.root, strings.Join(rels, ", "))
}

// ofProcess is the cgroup path of process pid relative to the hierarchy
// (the cpuacct one on v1), or "" when it cannot be told: no pid, or a
// path outside this process's cgroup namespace.
func (g *cgroupFS) ofProcess(pid int) string {
	if pid <= 0 {
		return ""
	}
	p, err := g.proc.Proc(pid)
	if err != nil {
		return ""
	}
	cgs, err := p.Cgroups()
	if err != nil {
		return ""
	}
	for _, cg := range cgs {
		v2 := cg.HierarchyID == 0 && len(cg.Controllers) == 0
		if v2 == g.v2 && (g.v2 || contains(cg.Controllers, "cpuacct")) && !strings.HasPrefix(cg.Path, "/..") {
			return strings.Trim(cg.Path, "/")
		}
	}
	return ""
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func (d cgroupDirs) dir(controller string) string {
	if d.v2 {
		return d.dirs[""]
	}
	return d.dirs[controller]
}

// cgroupFigures are what a container's cgroup tells, in the stats API's
// terms.
type cgroupFigures struct {
	read                      time.Time
	cpuNanos                  uint64
	periods, throttled        uint64
	throttledNanos            uint64
	memUsage, memInactiveFile uint64
	memLimit                  uint64 // 0: unlimited
	blockRead, blockWrite     uint64
	pids                      uint64
}

// read reads a container's figures from its cgroup. Throttling and PIDs
// are optional (a kernel without CFS bandwidth or the pids controller);
// CPU, memory and block I/O are not.
func (d cgroupDirs) read() (cgroupFigures, error) {
	var f cgroupFigures
	var err error
	f.read = time.Now()
	if d.v2 {
		err = d.readV2(&f)
	} else {
		err = d.readV1(&f)
	}
	return f, err
}

func (d cgroupDirs) readV1(f *cgroupFigures) error {
	var err error
	if f.cpuNanos, err = readUint(filepath.Join(d.dir("cpuacct"), "cpuacct.usage")); err != nil {
		return err
	}
	if st, err := readKeyed(filepath.Join(d.dir("cpu"), "cpu.stat")); err == nil {
		f.periods, f.throttled, f.throttledNanos = st["nr_periods"], st["nr_throttled"], st["throttled_time"]
	}
	mem := d.dir("memory")
	if f.memUsage, err = readUint(filepath.Join(mem, "memory.usage_in_bytes")); err != nil {
		return err
	}
	if f.memLimit, err = readUint(filepath.Join(mem, "memory.limit_in_bytes")); err != nil {
		return err
	}
	st, err := readKeyed(filepath.Join(mem, "memory.stat"))
	if err != nil {
		return err
	}
	f.memInactiveFile = st["total_inactive_file"]
	// As runc reads them: BFQ's, CFQ's, then the throttling layer's, which
	// counts every device.
	blkio := d.dir("blkio")
	for _, name := range []string{"blkio.bfq.io_service_bytes_recursive", "blkio.io_service_bytes_recursive", "blkio.throttle.io_service_bytes_recursive"} {
		r, w, n, err := readBlkio(filepath.Join(blkio, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 || strings.Contains(name, "throttle") {
			f.blockRead, f.blockWrite = r, w
			break
		}
	}
	f.pids, _ = readUint(filepath.Join(d.dir("pids"), "pids.current"))
	return nil
}

func (d cgroupDirs) readV2(f *cgroupFigures) error {
	dir := d.dirs[""]
	st, err := readKeyed(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return err
	}
	usage, ok := st["usage_usec"]
	if !ok {
		return fmt.Errorf("%s: no usage_usec", filepath.Join(dir, "cpu.stat"))
	}
	f.cpuNanos = usage * 1000
	f.periods, f.throttled, f.throttledNanos = st["nr_periods"], st["nr_throttled"], st["throttled_usec"]*1000
	if f.memUsage, err = readUint(filepath.Join(dir, "memory.current")); err != nil {
		return err
	}
	if f.memLimit, err = readUint(filepath.Join(dir, "memory.max")); err != nil {
		return err
	}
	mst, err := readKeyed(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return err
	}
	f.memInactiveFile = mst["inactive_file"]
	if f.blockRead, f.blockWrite, err = readIOStat(filepath.Join(dir, "io.stat")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f.pids, _ = readUint(filepath.Join(dir, "pids.current"))
	return nil
}

// maxCgroupFile bounds what is read of one cgroup or procfs file: the
// largest (memory.stat, io.stat of a host with many disks) are a few KiB.
const maxCgroupFile = 64 << 10

// readSmall reads a small pseudo-file whole. It never blocks (a FIFO put
// in its place is refused, not waited on) and never reads past
// maxCgroupFile.
func readSmall(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCgroupFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxCgroupFile {
		return nil, fmt.Errorf("%s: over %d bytes", path, maxCgroupFile)
	}
	return data, nil
}

// readUint reads a file holding one number; "max" (v2's unlimited) is 0.
func readUint(path string) (uint64, error) {
	data, err := readSmall(path)
	if err != nil {
		return 0, err
	}
	return parseUint(path, data)
}

func parseUint(path string, data []byte) (uint64, error) {
	s := string(bytes.TrimSpace(data))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a number", path, truncate(s))
	}
	return n, nil
}

// readKeyed reads a flat keyed file ("key value" lines: cpu.stat,
// memory.stat).
func readKeyed(path string) (map[string]uint64, error) {
	data, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	return parseKeyed(path, data)
}

func parseKeyed(path string, data []byte) (map[string]uint64, error) {
	out := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, " ")
		n, err := strconv.ParseUint(v, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("%s: line %q is not \"key value\"", path, truncate(line))
		}
		out[k] = n
	}
	return out, sc.Err()
}

// readIOStat sums the bytes read and written over the devices of a v2
// io.stat ("8:0 rbytes=1 wbytes=2 rios=3 ...").
func readIOStat(path string) (read, written uint64, err error) {
	data, err := readSmall(path)
	if err != nil {
		return 0, 0, err
	}
	return parseIOStat(path, data)
}

func parseIOStat(path string, data []byte) (read, written uint64, err error) {
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		for _, kv := range fields[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k != "rbytes" && k != "wbytes" {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("%s: %q is not a number", path, truncate(kv))
			}
			sum := &read
			if k == "wbytes" {
				sum = &written
			}
			if *sum+n < *sum {
				return 0, 0, fmt.Errorf("%s: the %s of its devices overflow 64 bits", path, k)
			}
			*sum += n
		}
	}
	return read, written, nil
}

// readBlkio sums the Read and Write bytes over the devices of a v1 blkio
// file ("8:0 Read 4096" lines and a "Total" line); n is the lines summed.
func readBlkio(path string) (read, written uint64, n int, err error) {
	data, err := readSmall(path)
	if err != nil {
		return 0, 0, 0, err
	}
	return parseBlkio(path, data)
}

func parseBlkio(path string, data []byte) (read, written uint64, n int, err error) {
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 3 {
			continue // "Total N", and blank lines
		}
		v, err := strconv.ParseUint(fields[2], 10, 64)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("%s: line %q is not \"device op value\"", path, truncate(line))
		}
		var sum *uint64
		switch fields[1] {
		case "Read":
			sum = &read
		case "Write":
			sum = &written
		default:
			continue
		}
		if *sum+v < *sum {
			return 0, 0, 0, fmt.Errorf("%s: the %s bytes of its devices overflow 64 bits", path, fields[1])
		}
		*sum += v
		n++
	}
	return read, written, n, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// netFigures are a network namespace's interfaces summed, loopback left
// out as the engines leave it out.
type netFigures struct {
	known            bool // some interface besides lo
	rxBytes, txBytes uint64
	rx, tx           Packets
}

// netDev reads <proc>/<pid>/net/dev: the counters of the network
// namespace the container's init process is in.
func (g *cgroupFS) netDev(pid int) (netFigures, error) {
	var n netFigures
	p, err := g.proc.Proc(pid)
	if err != nil {
		return n, err
	}
	dev, err := p.NetDev()
	if err != nil {
		return n, err
	}
	for name, l := range dev {
		if name == "lo" {
			continue
		}
		n.known = true
		n.rxBytes += l.RxBytes
		n.txBytes += l.TxBytes
		n.rx.add(l.RxPackets, l.RxErrors, l.RxDropped)
		n.tx.add(l.TxPackets, l.TxErrors, l.TxDropped)
	}
	n.rx.Known, n.tx.Known = n.known, n.known
	return n, nil
}

// hostMemory is the host's memory (MemTotal), which caps a container's
// limit as docker stats shows it; 0 when it cannot be read.
func hostMemory(proc string) uint64 {
	fs, err := procfs.NewFS(proc)
	if err != nil {
		return 0
	}
	mi, err := fs.Meminfo()
	if err != nil || mi.MemTotal == nil {
		return 0
	}
	return *mi.MemTotal * 1024
}
