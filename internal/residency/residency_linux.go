package residency

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"syscall"

	"golang.org/x/sys/unix"
)

// ReleaseStartup drops the executable's read-only pages from the process
// (MADV_DONTNEED: unmapped, they are read back from the file when used
// again), tells the kernel that later faults there are random
// (MADV_RANDOM: read the page faulted, not its neighbours) and drops the
// file's cached pages that no process maps (POSIX_FADV_DONTNEED), so that
// what comes back is what serving touches. Call it once start-up is over.
// A mapping holding pages the process wrote (the loader's relocations) is
// left alone: dropping them would lose the writes. It needs no privilege.
func ReleaseStartup() (Released, error) {
	var r Released
	before, err := executableMappings()
	if err != nil {
		return r, err
	}
	for _, m := range before {
		if m.written > 0 {
			continue
		}
		for _, advice := range []uintptr{unix.MADV_RANDOM, unix.MADV_DONTNEED} {
			// Raw syscall: the range is the process's own mapping, not Go
			// memory, so it is passed as addresses, never as a slice.
			if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(m.start), uintptr(m.end-m.start), advice); errno != 0 {
				return r, fmt.Errorf("madvise %#x-%#x: %w", m.start, m.end, errno)
			}
		}
		r.Mappings++
		r.ResidentBefore += m.rss
	}
	// The kernel maps every cached page within 64 KiB of a fault: without
	// this, the first use of a page brings its cached neighbours back too.
	var cacheErr error
	if exe, err := os.Open("/proc/self/exe"); err != nil {
		cacheErr = err
	} else {
		cacheErr = unix.Fadvise(int(exe.Fd()), 0, 0, unix.FADV_DONTNEED)
		exe.Close()
	}
	after, err := executableMappings()
	for _, m := range after {
		if m.written == 0 {
			r.After += m.rss
		}
	}
	if cacheErr != nil {
		err = errors.Join(err, fmt.Errorf("pages released, the file's page cache kept: %w", cacheErr))
	}
	return r, err
}

// executableMappings lists the read-only mappings of the running
// executable (its code and read-only data).
func executableMappings() ([]mapping, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	all, err := parseSmaps(f)
	if err != nil {
		return nil, err
	}
	return executable(all, uint64(reflect.ValueOf(ReleaseStartup).Pointer()))
}
