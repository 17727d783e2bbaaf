package docker

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
)

// engineRetry is how long to wait before looking again for an engine
// process that was not found: looking reads every process's descriptors.
const engineRetry = time.Minute

// engineCPU measures the CPU use of the container engine's own process
// (dockerd, or podman's API service) from /proc: the process holding the
// daemon's unix socket, or else the one named dockerd.
type engineCPU struct {
	fs     *procfs.FS // nil: no procfs to read
	socket string     // the daemon's unix socket; empty for tcp hosts
	log    *slog.Logger
	now    func() time.Time

	proc     procfs.Process // PID and start time: a reused PID is not taken for it
	cpu      float64        // its CPU seconds at read
	read     time.Time
	nextLook time.Time
	why      string // why it was not found, logged when it changes
}

func newEngineCPU(root, daemonHost string, log *slog.Logger) *engineCPU {
	e := &engineCPU{log: log, now: time.Now}
	if path, ok := strings.CutPrefix(daemonHost, "unix://"); ok {
		e.socket = path
	}
	if root == "" {
		return e
	}
	fs, err := procfs.New(root)
	if err != nil {
		e.notFound(err.Error())
		return e
	}
	e.fs = fs
	return e
}

// sample returns the engine's CPU use since the previous sample, 100 per
// busy core; ok is false until two readings of one process exist.
func (e *engineCPU) sample() (percent float64, ok bool) {
	if e.fs == nil {
		return 0, false
	}
	now := e.now()
	if e.proc.PID != 0 {
		st, err := e.fs.Stat(e.proc.PID)
		if err == nil && st.Process == e.proc && !st.Exited {
			if now.After(e.read) && st.CPUSeconds >= e.cpu {
				percent, ok = (st.CPUSeconds-e.cpu)/now.Sub(e.read).Seconds()*100, true
			}
			e.cpu, e.read = st.CPUSeconds, now
			return percent, ok
		}
		e.proc = procfs.Process{} // gone, or restarted: find it again
	}
	if now.Before(e.nextLook) {
		return 0, false
	}
	st, why := e.find()
	if why != "" {
		e.nextLook = now.Add(engineRetry)
		e.notFound(why)
		return 0, false
	}
	e.proc, e.cpu, e.read, e.why = st.Process, st.CPUSeconds, now, ""
	e.log.Debug("container engine process found", "pid", st.PID, "name", st.Comm)
	return 0, false
}

func (e *engineCPU) notFound(why string) {
	if why != e.why {
		e.log.Debug("docker_engine_cpu_percent left out: container engine process not found", "reason", why)
		e.why = why
	}
}

// find returns the engine's process, or why it was not found.
func (e *engineCPU) find() (procfs.Stat, string) {
	var whys []string
	if e.socket == "" {
		whys = append(whys, "the daemon is not on a unix socket")
	} else if st, err := e.socketOwner(); err != nil {
		whys = append(whys, err.Error())
	} else {
		return st, ""
	}
	var named []procfs.Stat
	entries, _ := os.ReadDir(e.fs.Root())
	for _, d := range entries {
		if pid, err := strconv.Atoi(d.Name()); err == nil {
			if st, err := e.fs.Stat(pid); err == nil && st.Comm == "dockerd" {
				named = append(named, st)
			}
		}
	}
	if len(named) == 1 {
		return named[0], ""
	}
	whys = append(whys, fmt.Sprintf("%d processes named dockerd in %s, want one", len(named), e.fs.Root()))
	return procfs.Stat{}, strings.Join(whys, "; ")
}

// socketOwner finds the process holding the daemon's socket: the socket's
// inodes from <procfs>/net/unix (the listening socket and its accepted
// connections carry its path), then the process whose descriptors link to
// them. Socket activation has systemd hold the socket too, so systemd is
// passed over.
func (e *engineCPU) socketOwner() (procfs.Stat, error) {
	paths := map[string]bool{e.socket: true}
	if real, err := filepath.EvalSymlinks(e.socket); err == nil {
		paths[real] = true
	}
	table := filepath.Join(e.fs.Root(), "net", "unix")
	f, err := os.Open(table)
	if err != nil {
		return procfs.Stat{}, err
	}
	defer f.Close()
	targets := map[procfs.Target]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		if fs := strings.Fields(sc.Text()); len(fs) == 8 && paths[fs[7]] {
			if inode, err := strconv.ParseUint(fs[6], 10, 64); err == nil {
				targets[procfs.Socket(inode)] = true
			}
		}
	}
	if len(targets) == 0 {
		return procfs.Stat{}, fmt.Errorf("no socket bound to %s in %s", e.socket, table)
	}
	holders, err := e.fs.FindHolders(targets)
	if err != nil {
		return procfs.Stat{}, err
	}
	var owners []procfs.Stat
	seen := map[procfs.Process]bool{}
	for _, ps := range holders.Found {
		for _, p := range ps {
			if seen[p] {
				continue
			}
			seen[p] = true
			if st, err := e.fs.Stat(p.PID); err == nil && st.Process == p && st.Comm != "systemd" {
				owners = append(owners, st)
			}
		}
	}
	if len(owners) != 1 {
		return procfs.Stat{}, fmt.Errorf("%d processes hold %s, want one (%d processes' descriptors are another user's: reading them needs root)", len(owners), e.socket, holders.Denied)
	}
	return owners[0], nil
}
