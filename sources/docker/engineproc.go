package docker

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc/PID/stat's CPU times: USER_HZ, 100 on every
// Linux the exporter runs on (it is part of the kernel's ABI).
const userHZ = 100

// engineRetry is how long to wait before looking again for an engine
// process that was not found: looking reads every process's fds.
const engineRetry = time.Minute

// engineCPU measures the CPU use of the container engine's own process
// (dockerd, or podman's API service) from /proc: the process holding the
// daemon's listening unix socket, or else the one named dockerd.
type engineCPU struct {
	procfs string
	socket string // the daemon's unix socket; empty for tcp hosts
	log    *slog.Logger
	now    func() time.Time

	pid       int
	startTime string // the process's start, so a reused PID is not taken for it
	ticks     uint64
	read      time.Time
	nextLook  time.Time
	why       string // why it was not found, logged when it changes
}

func newEngineCPU(procfs, daemonHost string, log *slog.Logger) *engineCPU {
	e := &engineCPU{procfs: procfs, log: log, now: time.Now}
	if path, ok := strings.CutPrefix(daemonHost, "unix://"); ok {
		e.socket = path
	}
	return e
}

// sample returns the engine's CPU use since the previous sample, 100 per
// busy core; ok is false until two readings of one process exist.
func (e *engineCPU) sample() (percent float64, ok bool) {
	if e.procfs == "" {
		return 0, false
	}
	now := e.now()
	if e.pid != 0 {
		ticks, start, err := readStat(e.procfs, e.pid)
		if err == nil && start == e.startTime {
			if now.After(e.read) && ticks >= e.ticks {
				percent, ok = float64(ticks-e.ticks)/userHZ/now.Sub(e.read).Seconds()*100, true
			}
			e.ticks, e.read = ticks, now
			return percent, ok
		}
		e.pid = 0 // gone, or restarted: find it again
	}
	if now.Before(e.nextLook) {
		return 0, false
	}
	pid, why := e.find()
	if pid == 0 {
		e.nextLook = now.Add(engineRetry)
		if why != e.why {
			e.log.Debug("docker_engine_cpu_percent left out: container engine process not found", "reason", why)
			e.why = why
		}
		return 0, false
	}
	ticks, start, err := readStat(e.procfs, pid)
	if err != nil {
		return 0, false
	}
	e.pid, e.startTime, e.ticks, e.read, e.why = pid, start, ticks, now, ""
	e.log.Debug("container engine process found", "pid", pid)
	return 0, false
}

// find returns the engine's PID, or 0 and why not.
func (e *engineCPU) find() (int, string) {
	var whys []string
	if e.socket != "" {
		pid, err := e.socketOwner()
		if pid != 0 {
			return pid, ""
		}
		whys = append(whys, err.Error())
	} else {
		whys = append(whys, "the daemon is not on a unix socket")
	}
	var named []int
	e.eachPID(func(pid int) {
		if comm, _ := os.ReadFile(filepath.Join(e.procfs, strconv.Itoa(pid), "comm")); strings.TrimSpace(string(comm)) == "dockerd" {
			named = append(named, pid)
		}
	})
	switch len(named) {
	case 1:
		return named[0], ""
	case 0:
		whys = append(whys, "no process named dockerd in "+e.procfs)
	default:
		whys = append(whys, fmt.Sprintf("%d processes named dockerd", len(named)))
	}
	return 0, strings.Join(whys, "; ")
}

// socketOwner finds the process holding the daemon's listening socket:
// its inode from <procfs>/net/unix, then the process whose fd links to it.
// Reading another user's fds needs root; socket activation also has
// systemd hold the socket, so systemd is passed over.
func (e *engineCPU) socketOwner() (int, error) {
	paths := map[string]bool{e.socket: true}
	if real, err := filepath.EvalSymlinks(e.socket); err == nil {
		paths[real] = true
	}
	f, err := os.Open(filepath.Join(e.procfs, "net", "unix"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	links := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		if fs := strings.Fields(sc.Text()); len(fs) == 8 && paths[fs[7]] {
			links["socket:["+fs[6]+"]"] = true
		}
	}
	if len(links) == 0 {
		return 0, fmt.Errorf("no socket bound to %s in %s/net/unix", e.socket, e.procfs)
	}
	var owners []int
	e.eachPID(func(pid int) {
		dir := filepath.Join(e.procfs, strconv.Itoa(pid), "fd")
		fds, err := os.ReadDir(dir) // another user's: permission denied, passed over
		if err != nil {
			return
		}
		for _, fd := range fds {
			if l, _ := os.Readlink(filepath.Join(dir, fd.Name())); links[l] {
				comm, _ := os.ReadFile(filepath.Join(e.procfs, strconv.Itoa(pid), "comm"))
				if strings.TrimSpace(string(comm)) != "systemd" {
					owners = append(owners, pid)
				}
				return
			}
		}
	})
	if len(owners) != 1 {
		return 0, fmt.Errorf("%d processes readable here hold %s (reading another user's /proc/PID/fd needs root)", len(owners), e.socket)
	}
	return owners[0], nil
}

func (e *engineCPU) eachPID(f func(pid int)) {
	entries, _ := os.ReadDir(e.procfs)
	for _, d := range entries {
		if pid, err := strconv.Atoi(d.Name()); err == nil {
			f(pid)
		}
	}
}

// readStat reads a process's CPU time (user and system, in USER_HZ ticks,
// all its threads) and its start time from <procfs>/PID/stat, which any
// user may read.
func readStat(procfs string, pid int) (ticks uint64, start string, err error) {
	raw, err := os.ReadFile(filepath.Join(procfs, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, "", err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(raw), ')')
	if i < 0 {
		return 0, "", errors.New("stat: no command name")
	}
	fs := strings.Fields(string(raw[i+1:])) // from field 3 (state) on
	if len(fs) < 20 {
		return 0, "", errors.New("stat: too few fields")
	}
	utime, err1 := strconv.ParseUint(fs[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(fs[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, "", fmt.Errorf("stat: %w", err)
	}
	return utime + stime, fs[19], nil // field 22: start time
}
