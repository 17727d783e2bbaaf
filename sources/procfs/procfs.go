// Package procfs reads what attributing energy to encodes needs from
// /proc: a process's CPU time and start time, the machine's CPU time, and
// which processes hold the other end of a TCP connection or a pipe. It
// reads through a root (--path.procfs), so an exporter in a container can
// read the host's /proc.
package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// UserHZ is the unit of the times in /proc/PID/stat and /proc/stat: the
// kernel reports them in USER_HZ ticks, 100 per second on every Linux
// architecture we run on (as prometheus/procfs assumes too).
const UserHZ = 100

// FS is a procfs mount.
type FS struct {
	root string
}

// New returns the procfs mounted at root, after checking that it is one.
func New(root string) (*FS, error) {
	if _, err := os.Stat(filepath.Join(root, "stat")); err != nil {
		return nil, fmt.Errorf("--path.procfs %s is not a procfs mount: %w", root, err)
	}
	return &FS{root: root}, nil
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
	CPUSeconds float64 // user + system time of all its threads since it started
	Exited     bool    // a zombie: it has exited and its CPU time is final
}

// ErrNoProcess is a PID that names no process now.
var ErrNoProcess = errors.New("no such process")

// Stat reads /proc/PID/stat. A process that is gone is ErrNoProcess.
func (f *FS) Stat(pid int) (Stat, error) {
	var buf [1024]byte
	b, err := f.read(filepath.Join(f.root, strconv.Itoa(pid), "stat"), buf[:])
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH) {
		return Stat{}, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return Stat{}, err
	}
	return parseStat(pid, b)
}

// parseStat parses the contents of /proc/PID/stat.
func parseStat(pid int, b []byte) (Stat, error) {
	// The command sits in parentheses and may hold spaces and parentheses
	// itself: the fields start after the last ')'.
	l, r := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if l < 0 || r < l {
		return Stat{}, fmt.Errorf("pid %d: stat: no command in %.64q", pid, b)
	}
	s := Stat{Process: Process{PID: pid}, Comm: string(b[l+1 : r])}
	var utime, stime uint64
	// Fields after the command, counted from 3 (state) as proc(5) numbers them.
	field, rest := 3, b[r+1:]
	for field <= 22 {
		rest = bytes.TrimLeft(rest, " ")
		end := bytes.IndexAny(rest, " \n")
		if end < 0 {
			end = len(rest)
		}
		tok := rest[:end]
		if len(tok) == 0 {
			return Stat{}, fmt.Errorf("pid %d: stat: %d fields, want at least 22", pid, field-1)
		}
		var err error
		switch field {
		case 3:
			s.Exited = tok[0] == 'Z' || tok[0] == 'X'
		case 14:
			utime, err = strconv.ParseUint(string(tok), 10, 64)
		case 15:
			stime, err = strconv.ParseUint(string(tok), 10, 64)
		case 22:
			s.Start, err = strconv.ParseUint(string(tok), 10, 64)
		}
		if err != nil {
			return Stat{}, fmt.Errorf("pid %d: stat field %d: %w", pid, field, err)
		}
		rest = rest[end:]
		field++
	}
	s.CPUSeconds = float64(utime+stime) / UserHZ
	return s, nil
}

// CPU is the machine's CPU time, all CPUs together, since boot.
type CPU struct {
	TotalSeconds float64 // every state, idle and iowait included
	IdleSeconds  float64 // idle and iowait
}

// CPU reads the first line of /proc/stat.
func (f *FS) CPU() (CPU, error) {
	var buf [512]byte
	b, err := f.read(filepath.Join(f.root, "stat"), buf[:])
	if err != nil {
		return CPU{}, err
	}
	return parseCPU(b)
}

// parseCPU parses the aggregate "cpu" line at the start of /proc/stat:
// user nice system idle iowait irq softirq steal guest guest_nice, in
// USER_HZ. Guest time is part of user and nice already, so it is not
// added again.
func parseCPU(b []byte) (CPU, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := bytes.Fields(line)
	if len(fields) < 5 || string(fields[0]) != "cpu" {
		return CPU{}, fmt.Errorf("/proc/stat: first line %.80q is not the aggregate cpu line", line)
	}
	var total, idle uint64
	for i, f := range fields[1:min(len(fields), 9)] {
		v, err := strconv.ParseUint(string(f), 10, 64)
		if err != nil {
			return CPU{}, fmt.Errorf("/proc/stat: cpu field %d: %w", i+1, err)
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return CPU{TotalSeconds: float64(total) / UserHZ, IdleSeconds: float64(idle) / UserHZ}, nil
}

// UptimeSeconds reads /proc/uptime: the time since boot, on the clock
// process start times count on.
func (f *FS) UptimeSeconds() (float64, error) {
	var buf [128]byte
	b, err := f.read(filepath.Join(f.root, "uptime"), buf[:])
	if err != nil {
		return 0, err
	}
	up, _, _ := bytes.Cut(b, []byte(" "))
	v, err := strconv.ParseFloat(string(up), 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/uptime: %w", err)
	}
	return v, nil
}

// read reads a small file into buf with one read, as procfs serves it,
// without the allocations of os.ReadFile: it runs for every linked process
// in every window. A file longer than buf is cut short, which the callers,
// reading the fields at its start, allow.
func (f *FS) read(path string, buf []byte) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		return buf[:n], nil
	}
}
