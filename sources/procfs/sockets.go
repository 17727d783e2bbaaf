package procfs

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
)

// CPUs reads each CPU's line of /proc/stat, by CPU number: what charging a
// socket's energy by the time spent on that socket's CPUs needs.
func (f *FS) CPUs() (map[int]CPU, error) {
	st, err := f.fs.Stat()
	if err != nil {
		return nil, err
	}
	if len(st.CPU) == 0 {
		return nil, fmt.Errorf("%s: no per-CPU lines", filepath.Join(f.root, "stat"))
	}
	cpus := make(map[int]CPU, len(st.CPU))
	for n, c := range st.CPU {
		idle := c.Idle + c.Iowait
		cpus[int(n)] = CPU{TotalSeconds: c.User + c.Nice + c.System + idle + c.IRQ + c.SoftIRQ + c.Steal, IdleSeconds: idle}
	}
	return cpus, nil
}

// Thread is one reading of one of a process's threads.
type Thread struct {
	TID        int
	CPUSeconds float64 // user + system time since it started
	CPU        int     // the CPU it last ran on (/proc/PID/task/TID/stat field 39)
}

// Threads reads every thread of pid. A process that is gone is
// ErrNoProcess; a thread that ends while they are read is left out.
func (f *FS) Threads(pid int) ([]Thread, error) {
	procs, err := f.fs.AllThreads(pid)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return nil, fmt.Errorf("pid %d: threads: %w", pid, err)
	}
	threads := make([]Thread, 0, len(procs))
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil {
			continue
		}
		threads = append(threads, Thread{TID: p.PID, CPUSeconds: st.CPUTime(), CPU: int(st.Processor)})
	}
	return threads, nil
}
