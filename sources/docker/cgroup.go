package docker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	buf  []byte    // what file reads into
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

// cgroupDirs is one container's cgroup: the files read each collection,
// found once (at its inspect), and what does not change between.
type cgroupDirs struct {
	v2       bool
	cpu      string // cpuacct.usage (v1), cpu.stat (v2)
	throttle string // cpu.stat on v1; empty without a CFS quota (nothing to throttle)
	memory   string // memory.usage_in_bytes (v1), memory.current (v2)
	memStat  string
	block    string // the blkio file runc would read (v1), io.stat (v2); empty: none
	pids     string
	limit    uint64 // the memory limit; 0: unlimited
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
		dir := func(controller string) string {
			if g.v2 {
				return filepath.Join(g.root, rel)
			}
			return filepath.Join(g.root, controller, rel)
		}
		if _, err := os.Stat(dir("cpuacct")); err == nil {
			return g.files(dir)
		}
	}
	return cgroupDirs{}, fmt.Errorf("no cgroup of container %.12s under %s (looked for %s)", id, g.root, strings.Join(rels, ", "))
}

// files names the files of the cgroup whose controllers' directories dir
// gives, and reads what does not change between collections.
func (g *cgroupFS) files(dir func(controller string) string) (cgroupDirs, error) {
	var d cgroupDirs
	var err error
	if g.v2 {
		d = cgroupDirs{v2: true, cpu: filepath.Join(dir(""), "cpu.stat"), memory: filepath.Join(dir(""), "memory.current"),
			memStat: filepath.Join(dir(""), "memory.stat"), block: filepath.Join(dir(""), "io.stat"), pids: filepath.Join(dir(""), "pids.current")}
		d.limit, err = g.readUint(filepath.Join(dir(""), "memory.max"))
		return d, err
	}
	d = cgroupDirs{cpu: filepath.Join(dir("cpuacct"), "cpuacct.usage"), memory: filepath.Join(dir("memory"), "memory.usage_in_bytes"),
		memStat: filepath.Join(dir("memory"), "memory.stat"), pids: filepath.Join(dir("pids"), "pids.current")}
	if quota, err := g.file(filepath.Join(dir("cpu"), "cpu.cfs_quota_us")); err == nil && string(bytes.TrimSpace(quota)) != "-1" {
		d.throttle = filepath.Join(dir("cpu"), "cpu.stat")
	}
	if d.limit, err = g.readUint(filepath.Join(dir("memory"), "memory.limit_in_bytes")); err != nil {
		return d, err
	}
	if d.limit >= 1<<62 { // LLONG_MAX rounded down to a page: unlimited
		d.limit = 0
	}
	// As runc reads them: BFQ's, CFQ's, then the throttling layer's, which
	// counts every device.
	for _, name := range []string{"blkio.bfq.io_service_bytes_recursive", "blkio.io_service_bytes_recursive", "blkio.throttle.io_service_bytes_recursive"} {
		path := filepath.Join(dir("blkio"), name)
		if _, _, n, err := g.readBlkio(path); err == nil && (n > 0 || strings.Contains(name, "throttle")) {
			d.block = path
			break
		}
	}
	return d, nil
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
		if v2 == g.v2 && (g.v2 || slices.Contains(cg.Controllers, "cpuacct")) && !strings.HasPrefix(cg.Path, "/..") {
			return strings.Trim(cg.Path, "/")
		}
	}
	return ""
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

// read reads a container's figures from its cgroup. PIDs are optional (a
// kernel without the pids controller); CPU, memory and block I/O are not.
func (g *cgroupFS) figures(d *cgroupDirs) (cgroupFigures, error) {
	f := cgroupFigures{read: time.Now(), memLimit: d.limit}
	var err error
	inactive := "total_inactive_file"
	if d.v2 {
		inactive = "inactive_file"
		err = g.keyed(d.cpu, func(k string, v uint64) {
			switch k {
			case "usage_usec":
				f.cpuNanos = v * 1000
			case "nr_periods":
				f.periods = v
			case "nr_throttled":
				f.throttled = v
			case "throttled_usec":
				f.throttledNanos = v * 1000
			}
		})
	} else {
		f.cpuNanos, err = g.readUint(d.cpu)
		if err == nil && d.throttle != "" {
			err = g.keyed(d.throttle, func(k string, v uint64) {
				switch k {
				case "nr_periods":
					f.periods = v
				case "nr_throttled":
					f.throttled = v
				case "throttled_time":
					f.throttledNanos = v
				}
			})
		}
	}
	if err != nil {
		return f, err
	}
	if f.memUsage, err = g.readUint(d.memory); err != nil {
		return f, err
	}
	if err = g.keyed(d.memStat, func(k string, v uint64) {
		if k == inactive {
			f.memInactiveFile = v
		}
	}); err != nil {
		return f, err
	}
	switch {
	case d.block == "":
	case d.v2:
		f.blockRead, f.blockWrite, err = g.readIOStat(d.block)
		if errors.Is(err, os.ErrNotExist) { // no io controller enabled
			err = nil
		}
	default:
		f.blockRead, f.blockWrite, _, err = g.readBlkio(d.block)
	}
	if err != nil {
		return f, err
	}
	f.pids, _ = g.readUint(d.pids)
	return f, nil
}

// maxCgroupFile bounds what is read of one cgroup file: the largest
// (memory.stat, io.stat of a host with many disks) are a few KiB.
const maxCgroupFile = 64 << 10

// file reads a small pseudo-file whole into g's buffer, which the next
// read reuses (its callers hold the source's regMu). It never blocks (a
// FIFO put in its place is refused, not waited on) and never reads past
// maxCgroupFile. Plain system calls: no poller, no allocation, as it runs
// for every file of every container every interval.
func (g *cgroupFS) file(path string) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if g.buf == nil {
		g.buf = make([]byte, maxCgroupFile+1)
	}
	n := 0
	for n < len(g.buf) {
		m, err := syscall.Read(fd, g.buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	if n > maxCgroupFile {
		return nil, fmt.Errorf("%s: over %d bytes", path, maxCgroupFile)
	}
	return g.buf[:n], nil
}

// readUint reads a file holding one number; "max" (v2's unlimited) is 0.
func (g *cgroupFS) readUint(path string) (uint64, error) {
	data, err := g.file(path)
	if err != nil {
		return 0, err
	}
	return parseUint(path, data)
}

func parseUint(path string, data []byte) (uint64, error) {
	b := bytes.TrimSpace(data)
	if string(b) == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a number", path, truncate(string(b)))
	}
	return n, nil
}

// keyed reads a flat keyed file ("key value" lines: cpu.stat,
// memory.stat), calling each with every key and value.
func (g *cgroupFS) keyed(path string, each func(key string, value uint64)) error {
	data, err := g.file(path)
	if err != nil {
		return err
	}
	return eachKeyed(path, data, each)
}

func eachKeyed(path string, data []byte, each func(key string, value uint64)) error {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) == 0 {
			continue
		}
		k, v, ok := bytes.Cut(line, []byte(" "))
		n, err := strconv.ParseUint(string(v), 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("%s: line %q is not \"key value\"", path, truncate(string(line)))
		}
		each(string(k), n)
	}
	return nil
}

// parseKeyed is a flat keyed file as a map.
func parseKeyed(path string, data []byte) (map[string]uint64, error) {
	out := map[string]uint64{}
	err := eachKeyed(path, data, func(k string, v uint64) { out[k] = v })
	return out, err
}

// readIOStat sums the bytes read and written over the devices of a v2
// io.stat ("8:0 rbytes=1 wbytes=2 rios=3 ...").
func (g *cgroupFS) readIOStat(path string) (read, written uint64, err error) {
	data, err := g.file(path)
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
func (g *cgroupFS) readBlkio(path string) (read, written uint64, n int, err error) {
	data, err := g.file(path)
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
