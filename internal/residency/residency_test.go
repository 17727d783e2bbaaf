package residency

import (
	"strings"
	"testing"
)

const smaps = `00400000-00b84000 r-xp 00000000 fe:01 1234                       /usr/bin/worker-exporter
Size:               7696 kB
Rss:                6736 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd ex mr mw me
00b84000-01424000 r--p 00784000 fe:01 1234                       /usr/bin/worker-exporter
Rss:                6272 kB
01424000-01425000 r--p 01024000 fe:01 1234                       /usr/bin/worker-exporter
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  4 kB
01425000-014a9000 rw-p 01025000 fe:01 1234                       /usr/bin/worker-exporter
Rss:                 468 kB
Anonymous:           152 kB
7f0943220000-7f0943400000 rw-p 00000000 00:00 0 
Rss:                 240 kB
Anonymous:           240 kB
7f0943400000-7f0943500000 r-xp 00000000 fe:02 1234                       /usr/lib/libc.so.6
Rss:                 896 kB
`

func TestParseSmaps(t *testing.T) {
	got, err := parseSmaps(strings.NewReader(smaps))
	if err != nil {
		t.Fatal(err)
	}
	want := []mapping{
		{start: 0x400000, end: 0xb84000, perms: "r-xp", dev: "fe:01", inode: 1234, rss: 6736 << 10},
		{start: 0xb84000, end: 0x1424000, perms: "r--p", dev: "fe:01", inode: 1234, rss: 6272 << 10},
		{start: 0x1424000, end: 0x1425000, perms: "r--p", dev: "fe:01", inode: 1234, written: 4 << 10}, // relocated, then swapped out
		{start: 0x1425000, end: 0x14a9000, perms: "rw-p", dev: "fe:01", inode: 1234, rss: 468 << 10, written: 152 << 10},
		{start: 0x7f0943220000, end: 0x7f0943400000, perms: "rw-p", dev: "00:00", rss: 240 << 10, written: 240 << 10},
		{start: 0x7f0943400000, end: 0x7f0943500000, perms: "r-xp", dev: "fe:02", inode: 1234, rss: 896 << 10},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mappings, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d: got %+v, want %+v", i, got[i], want[i])
		}
	}

	if _, err := parseSmaps(strings.NewReader("00400000-00b84000 r-xp 00000000 fe:01 1234 /x\nRss: many kB\n")); err == nil {
		t.Error("an Rss that is not a number: no error")
	}
}

// TestExecutablePicksTheCodesFile: the read-only mappings of the file that
// holds the code, by its device and inode as smaps gives them; not a
// library with the same inode on another device, not a writable mapping.
func TestExecutablePicksTheCodesFile(t *testing.T) {
	all, err := parseSmaps(strings.NewReader(smaps))
	if err != nil {
		t.Fatal(err)
	}
	got, err := executable(all, 0x400123)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].start != 0x400000 || got[1].start != 0xb84000 || got[2].start != 0x1424000 {
		t.Errorf("got %+v, want the three read-only mappings of /usr/bin/worker-exporter", got)
	}
	if _, err := executable(all, 0x7f0943220010); err == nil {
		t.Error("code in an anonymous mapping: no error")
	}
	if _, err := executable(all, 0x10); err == nil {
		t.Error("code in no mapping: no error")
	}
}
