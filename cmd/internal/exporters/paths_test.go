package exporters

import (
	"flag"
	"testing"
)

// TestSharedStringVar: sources sharing one FlagSet share the flag: one
// definition, every variable set, whichever source defines it first.
func TestSharedStringVar(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var a, b string
	SharedStringVar(fs, &a, "path.procfs", "/proc", "procfs mount point")
	SharedStringVar(fs, &b, "path.procfs", "/proc", "procfs mount point")
	if a != "/proc" || b != "/proc" {
		t.Fatalf("defaults %q %q", a, b)
	}
	if err := fs.Parse([]string{"--path.procfs=/host/proc"}); err != nil {
		t.Fatal(err)
	}
	if a != "/host/proc" || b != "/host/proc" {
		t.Errorf("after parse %q %q, want both /host/proc", a, b)
	}
}

// TestEveryPathFlagShared: worker-exporter registers every source's flags
// on one FlagSet without a panic, and each path flag reaches every source
// that reads it.
func TestEveryPathFlagShared(t *testing.T) {
	fs := flag.NewFlagSet("worker-exporter", flag.ContinueOnError)
	for _, s := range All() {
		s.Flags(fs)
	}
	for _, name := range []string{"path.sysfs", "path.procfs"} {
		if f := fs.Lookup(name); f == nil {
			t.Errorf("--%s not defined", name)
		} else if _, ok := f.Value.(*sharedString); !ok {
			t.Errorf("--%s not defined with SharedStringVar", name)
		}
	}
}
