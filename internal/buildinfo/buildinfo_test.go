package buildinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
)

// TestMakeStampsVersion: `make build` with Go's VCS stamping off
// (GOFLAGS=-buildvcs=false) still builds binaries whose --version names
// the commit they were built from, static and cgo alike.
func TestMakeStampsVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary")
	}
	makePath := peer.Require(t, "make", "apt-get install -y make")
	gitPath := peer.Require(t, "git", "apt-get install -y git")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	head, err := exec.Command(gitPath, "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		peer.Missing(t, "the module is not a git checkout: "+err.Error())
	}
	bin := t.TempDir()
	cmd := exec.Command(makePath, "-C", root, "build", "BIN="+bin)
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	want := "(revision: " + strings.TrimSpace(string(head)) + ","
	for _, name := range []string{"cpu-exporter", "worker-exporter"} {
		out, err := exec.Command(filepath.Join(bin, name), "--version").CombinedOutput()
		line := strings.TrimSpace(string(out))
		if err != nil {
			t.Fatalf("%s --version: %v\n%s", name, err, out)
		}
		if !strings.HasPrefix(line, name+", version ") || !strings.Contains(line, want) ||
			strings.Contains(line, "(devel)") || strings.Contains(line, "unknown") {
			t.Errorf("%s --version = %q, want a version and %q", name, line, want)
		}
	}
}

// TestVersionUnstamped: go test stamps nothing, and nothing is made up.
func TestVersionUnstamped(t *testing.T) {
	if _, r := Version(); r != "unknown" {
		t.Errorf("revision %q in a test binary, which Go does not stamp", r)
	}
	if s := String("x"); !strings.HasPrefix(s, "x, version ") {
		t.Errorf("String = %q", s)
	}
}
