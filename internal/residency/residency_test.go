package residency

import (
	"os"
	"strings"
	"testing"
)

// The kernel itself, not a fake: this test binary's own start-up pages are
// released and must leave the resident set (as root, as CI runs, and as any
// other user: nothing here needs to own the file).
func TestReleaseStartupShrinksResidentCode(t *testing.T) {
	// The test binary was just linked: write its pages out first, as an
	// installed binary's are, or the page cache could not let them go.
	if exe, err := os.Open("/proc/self/exe"); err != nil {
		t.Fatal(err)
	} else if err := exe.Sync(); err != nil {
		t.Fatal(err)
	} else {
		exe.Close()
	}
	r, err := ReleaseStartup()
	if err != nil {
		t.Fatal(err)
	}
	if r.Mappings < 2 {
		t.Fatalf("advised %d mappings of the executable, want its code and read-only data (2 or more)", r.Mappings)
	}
	if r.ResidentBefore < 1<<20 {
		t.Fatalf("executable resident before release: %d bytes; a Go test binary's start-up touches more than 1 MiB", r.ResidentBefore)
	}
	// What comes back at once is the code that runs meanwhile (this test's
	// smaps reading), 64 KiB around each page it faults: about 1 MiB.
	if r.After > r.ResidentBefore-1<<20 {
		t.Fatalf("executable resident: %d bytes before release, %d after; want 1 MiB or more released", r.ResidentBefore, r.After)
	}
	t.Logf("executable resident: %d KiB before, %d KiB after, %d mappings", r.ResidentBefore>>10, r.After>>10, r.Mappings)

	// Code needed again is read back: the process goes on working.
	if again, err := executableMappings(); err != nil || len(again) != r.Mappings {
		t.Fatalf("after release: %d mappings, %v", len(again), err)
	}
}

func TestParseSmaps(t *testing.T) {
	const smaps = `00400000-00b84000 r-xp 00000000 fe:01 1234                       /usr/bin/worker-exporter
Size:               7696 kB
Rss:                6736 kB
VmFlags: rd ex mr mw me
00b84000-01424000 r--p 00784000 fe:01 1234                       /usr/bin/worker-exporter
Rss:                6272 kB
01424000-01425000 r--p 01024000 fe:01 1234                       /usr/bin/worker-exporter
Rss:                   4 kB
Anonymous:             4 kB
01425000-014a9000 rw-p 01025000 fe:01 1234                       /usr/bin/worker-exporter
Rss:                 468 kB
Anonymous:           152 kB
7f0943220000-7f0943400000 rw-p 00000000 00:00 0 
Rss:                 240 kB
`
	got, err := parseSmaps(strings.NewReader(smaps))
	if err != nil {
		t.Fatal(err)
	}
	want := []mapping{
		{start: 0x400000, end: 0xb84000, perms: "r-xp", dev: 0xfe01, inode: 1234, rss: 6736 << 10},
		{start: 0xb84000, end: 0x1424000, perms: "r--p", dev: 0xfe01, inode: 1234, rss: 6272 << 10},
		{start: 0x1424000, end: 0x1425000, perms: "r--p", dev: 0xfe01, inode: 1234, rss: 4 << 10, anonymous: 4 << 10},
		{start: 0x1425000, end: 0x14a9000, perms: "rw-p", dev: 0xfe01, inode: 1234, rss: 468 << 10, anonymous: 152 << 10},
		{start: 0x7f0943220000, end: 0x7f0943400000, perms: "rw-p", rss: 240 << 10},
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
