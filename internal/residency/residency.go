// Package residency hands back to the kernel the executable's pages that
// only start-up used.
//
// Starting touches nearly the whole binary: every package's init runs its
// own code and reads its own data (protobuf descriptors, tables), and the
// kernel reads ahead around each miss and maps up to 64 KiB around each
// fault. Serving then runs a small part of that code, but the rest stays
// mapped, counted in the process's resident memory (and its cgroup's),
// until memory runs short and the kernel reclaims it. Those pages are
// clean copies of the file, so they can go now at no risk: a page used
// again is read back from the page cache or the file.
package residency

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Released says what ReleaseStartup did: the executable's read-only
// mappings it dropped, and how much of them was resident before and right
// after.
type Released struct {
	Mappings              int
	ResidentBefore, After int64 // bytes
}

// mapping is one mapping of /proc/self/smaps with the sizes kept.
type mapping struct {
	start, end uint64
	perms      string
	dev        string // major:minor, as smaps prints it
	inode      uint64
	rss        int64 // bytes resident
	written    int64 // bytes the process wrote (copied on write), resident or swapped
}

// parseSmaps reads the kernel's smaps: a header line per mapping,
// "start-end perms offset major:minor inode [path]", then "Key: value kB"
// lines, of which it keeps Rss, Anonymous and Swap.
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
		if !ok || len(all) == 0 || (key != "Rss" && key != "Anonymous" && key != "Swap") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("smaps: %q: %w", line, err)
		}
		if m := &all[len(all)-1]; key == "Rss" {
			m.rss = kb << 10
		} else {
			m.written += kb << 10 // a written page is anonymous, or swapped out
		}
	}
	return all, sc.Err()
}

func parseHeader(line string) (mapping, bool) {
	fields := strings.Fields(line)
	if len(fields) < 5 || !strings.Contains(fields[3], ":") {
		return mapping{}, false
	}
	lo, hi, ok := strings.Cut(fields[0], "-")
	if !ok {
		return mapping{}, false
	}
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	inode, err3 := strconv.ParseUint(fields[4], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || end <= start {
		return mapping{}, false
	}
	return mapping{start: start, end: end, perms: fields[1], dev: fields[3], inode: inode}, true
}

// executable picks, from all, the read-only mappings of the file that
// holds the code at pc: the running executable's code and read-only data,
// found without comparing stat's device with smaps' (they differ on btrfs
// and on some overlay filesystems).
func executable(all []mapping, pc uint64) ([]mapping, error) {
	var file *mapping
	for i := range all {
		if m := &all[i]; m.start <= pc && pc < m.end && m.inode != 0 {
			file = m
		}
	}
	if file == nil {
		return nil, fmt.Errorf("no file mapping holds the code at %#x", pc)
	}
	var mine []mapping
	for _, m := range all {
		if m.dev == file.dev && m.inode == file.inode && !strings.Contains(m.perms, "w") {
			mine = append(mine, m)
		}
	}
	return mine, nil
}
