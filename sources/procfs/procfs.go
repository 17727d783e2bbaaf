// Package procfs reads what attributing energy to encodes, and finding the
// container engine's process, need from /proc, through a root
// (--path.procfs) so that an exporter in a container can read the host's.
//
// github.com/prometheus/procfs does the reading: a process's stat, the
// machine's stat, the TCP tables, the process list, each process's
// descriptors and their fdinfo. This package keeps only what it lacks:
//   - /proc/uptime, the clock that process start times count on;
//   - which processes hold a socket or a pipe. The library's
//     FileDescriptorTargets neither says which descriptor each target is
//     (a pipe's holder is its writer, told by that descriptor's open mode)
//     nor tells an unreadable link (another user's process, without
//     CAP_SYS_PTRACE) from a closed one, so the links are read here;
//   - pairing a connection with its client's socket in the TCP tables;
//   - one scan of every descriptor shared by the callers that ask at the
//     same moment (the docker source's engine lookup and energy per encode
//     share one FS).
package procfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	prom "github.com/prometheus/procfs"
)

// UserHZ is the unit of the start time in /proc/PID/stat: the kernel
// reports it in USER_HZ ticks, 100 per second on every Linux architecture
// we run on (as prometheus/procfs assumes for the CPU times it converts).
const UserHZ = 100

// FS is a procfs mount.
type FS struct {
	root string
	fs   prom.FS
	scan holderScans
}

// procSuperMagic is procfs's filesystem type (linux/magic.h).
const procSuperMagic = 0x9fa0

// New returns the procfs mounted at root, after checking that it is one:
// only a real procfs is read, in which no file is a FIFO or a device whose
// read could block (a crafted tree's FIFO in place of /proc/stat would
// hang every energy window for good).
func New(root string) (*FS, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err != nil {
		return nil, fmt.Errorf("--path.procfs %s is not a procfs mount: %w", root, err)
	}
	if st.Type != procSuperMagic {
		return nil, fmt.Errorf("--path.procfs %s is not a procfs mount (filesystem type %#x, want procfs's %#x)", root, st.Type, procSuperMagic)
	}
	return open(root)
}

// open returns the procfs tree at root, whatever holds it: New's, and this
// package's tests' fixture trees.
func open(root string) (*FS, error) {
	if _, err := os.Stat(filepath.Join(root, "stat")); err != nil {
		return nil, fmt.Errorf("--path.procfs %s is not a procfs mount: %w", root, err)
	}
	pfs, err := prom.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("--path.procfs %s: %w", root, err)
	}
	return &FS{root: root, fs: pfs}, nil
}

// Root is where the procfs is mounted.
func (f *FS) Root() string { return f.root }

// Process is one process, told apart from a later one that reuses its PID
// by its start time.
type Process struct {
	PID   int
	Start uint64 // clock ticks after boot (/proc/PID/stat field 22)
}

// Stat is one reading of a process.
type Stat struct {
	Process
	Comm       string  // the command's name, as the kernel keeps it (at most 15 bytes)
	PPID       int     // its parent's PID
	CPUSeconds float64 // user + system time of all its threads since it started
	// ChildrenCPUSeconds is the user + system time of its children that
	// have exited and been waited for (cutime + cstime): work a wrapper
	// or a pipeline's shell handed to processes that are gone.
	ChildrenCPUSeconds float64
	Exited             bool // a zombie: it has exited and its CPU time is final
}

// ErrNoProcess is a PID that names no process now.
var ErrNoProcess = errors.New("no such process")

// Stat reads /proc/PID/stat. A process that is gone is ErrNoProcess.
func (f *FS) Stat(pid int) (Stat, error) {
	p, err := f.fs.Proc(pid)
	var st prom.ProcStat
	if err == nil {
		st, err = p.Stat()
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return Stat{}, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return Stat{}, fmt.Errorf("pid %d: stat: %w", pid, err)
	}
	return Stat{
		Process:            Process{PID: pid, Start: st.Starttime},
		Comm:               st.Comm,
		PPID:               st.PPID,
		CPUSeconds:         st.CPUTime(),
		ChildrenCPUSeconds: float64(st.CUTime+st.CSTime) / UserHZ,
		Exited:             st.State == "Z" || st.State == "X",
	}, nil
}

// CPU is the machine's CPU time, all CPUs together, since boot.
type CPU struct {
	TotalSeconds float64 // every state, idle and iowait included
	IdleSeconds  float64 // idle and iowait
}

// CPU reads the aggregate cpu line of /proc/stat. Guest time is part of
// user and nice already, so it is not added again.
func (f *FS) CPU() (CPU, error) {
	st, err := f.fs.Stat()
	if err != nil {
		return CPU{}, err
	}
	c := st.CPUTotal
	idle := c.Idle + c.Iowait
	total := c.User + c.Nice + c.System + idle + c.IRQ + c.SoftIRQ + c.Steal
	if total <= 0 {
		return CPU{}, fmt.Errorf("%s: no aggregate cpu line", filepath.Join(f.root, "stat"))
	}
	return CPU{TotalSeconds: total, IdleSeconds: idle}, nil
}

// UptimeSeconds reads /proc/uptime: the time since boot, on the clock
// process start times count on. prometheus/procfs does not read it.
func (f *FS) UptimeSeconds() (float64, error) {
	path := filepath.Join(f.root, "uptime")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parseUptime(path, string(b))
}

// parseUptime parses the first field of /proc/uptime: seconds, as a
// decimal fraction.
func parseUptime(path, s string) (float64, error) {
	up, _, _ := strings.Cut(strings.TrimSpace(s), " ")
	v, err := strconv.ParseFloat(up, 64)
	if err == nil && !(v >= 0 && v < 1e12) { // NaN, Inf, negative: not a kernel's
		err = fmt.Errorf("%q is not a time since boot", up)
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}
