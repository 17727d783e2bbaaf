// Package residency hands back to the kernel the executable's pages that
// only start-up used.
//
// Starting touches nearly the whole binary: every package's init runs its
// own code and reads its own data (protobuf descriptors, tables), and the
// kernel reads ahead around each miss and maps up to 64 KiB around each
// fault. Serving then runs a small part of that code, but the rest stays
// mapped, counted in the process's resident memory, until memory runs
// short. Those pages are clean copies of the file, so they can go at no
// risk: a page used again is read back from the page cache or the file.
package residency

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Released says what ReleaseStartup did: the executable's read-only
// mappings it dropped, and how much of them was resident before and right
// after.
type Released struct {
	Mappings              int
	ResidentBefore, After int64 // bytes
}

// ReleaseStartup drops the executable's read-only pages from the process
// (MADV_DONTNEED: unmapped, they are read back from the file when used
// again), tells the kernel that later faults there are random
// (MADV_RANDOM: read the page faulted, not its neighbours) and drops the
// file's cached pages no process maps (POSIX_FADV_DONTNEED), so that what
// comes back is what serving touches. Call it once start-up is over. A
// mapping holding pages the process wrote (relocations of a PIE binary) is
// left alone: dropping them would lose the writes.
func ReleaseStartup() (Released, error) {
	var r Released
	before, err := executableMappings()
	if err != nil {
		return r, err
	}
	for _, m := range before {
		if m.anonymous > 0 {
			continue
		}
		for _, advice := range []uintptr{unix.MADV_RANDOM, unix.MADV_DONTNEED} {
			// Raw syscall: the range is the process's own mapping, not Go
			// memory, so it is passed as addresses, never as a slice.
			if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, advice); errno != 0 {
				return r, fmt.Errorf("madvise %#x-%#x: %w", m.start, m.end, errno)
			}
		}
		r.Mappings++
		r.ResidentBefore += m.rss
	}
	// The kernel maps every cached page within 64 KiB of a fault: without
	// this, the first use of a page brings its cached neighbours back too.
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		return r, err
	}
	err = unix.Fadvise(int(exe.Fd()), 0, 0, unix.FADV_DONTNEED)
	exe.Close()
	if err != nil {
		return r, fmt.Errorf("fadvise: %w", err)
	}
	after, err := executableMappings()
	for _, m := range after {
		if m.anonymous == 0 {
			r.After += m.rss
		}
	}
	return r, err
}

// mapping is one line of /proc/self/smaps with its Rss.
type mapping struct {
	start, end uintptr
	perms      string
	dev        uint64 // as stat's st_dev
	inode      uint64
	rss        int64 // bytes
	anonymous  int64 // bytes the process wrote (copied on write)
}

// executableMappings lists the read-only mappings of the running
// executable's file (its code and read-only data).
func executableMappings() ([]mapping, error) {
	var exe syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &exe); err != nil {
		return nil, err
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	all, err := parseSmaps(f)
	if err != nil {
		return nil, err
	}
	var mine []mapping
	for _, m := range all {
		if m.inode == exe.Ino && m.dev == uint64(exe.Dev) && !strings.Contains(m.perms, "w") {
			mine = append(mine, m)
		}
	}
	return mine, nil
}

// parseSmaps reads the kernel's smaps: a header line per mapping,
// "start-end perms offset major:minor inode [path]", then "Key: value kB"
// lines, of which it keeps Rss and Anonymous.
func parseSmaps(r io.Reader) ([]mapping, error) {
	var all []mapping
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if m, ok := parseHeader(line); ok {
			all = append(all, m)
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok || len(all) == 0 || (key != "Rss" && key != "Anonymous") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("smaps: %q: %w", line, err)
		}
		if m := &all[len(all)-1]; key == "Rss" {
			m.rss = kb << 10
		} else {
			m.anonymous = kb << 10
		}
	}
	return all, sc.Err()
}

func parseHeader(line string) (mapping, bool) {
	fields := strings.Fields(line)
	if len(fields) < 5 {
		return mapping{}, false
	}
	lo, hi, ok1 := strings.Cut(fields[0], "-")
	major, minor, ok2 := strings.Cut(fields[3], ":")
	if !ok1 || !ok2 {
		return mapping{}, false
	}
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	maj, err3 := strconv.ParseUint(major, 16, 32)
	min, err4 := strconv.ParseUint(minor, 16, 32)
	inode, err5 := strconv.ParseUint(fields[4], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil || end <= start {
		return mapping{}, false
	}
	return mapping{
		start: uintptr(start), end: uintptr(end), perms: fields[1],
		dev: unix.Mkdev(uint32(maj), uint32(min)), inode: inode,
	}, true
}
