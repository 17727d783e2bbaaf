package residency

import (
	"os"
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
		t.Fatalf("released %d mappings of the executable, want its code and read-only data (2 or more)", r.Mappings)
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
	if again, err := executableMappings(); err != nil || len(again) < r.Mappings {
		t.Fatalf("after release: %d mappings, %v", len(again), err)
	}
}
