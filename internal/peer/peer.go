// Package peer finds the real programs tests run against (ffmpeg, promtool).
// A missing peer skips the test on a laptop and fails it in CI (CI=true),
// so CI never passes by skipping.
package peer

import (
	"os"
	"os/exec"
	"testing"
)

// Require returns the path of program name, or ends the test: skipped with
// a reason outside CI, failed in CI.
func Require(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI but not found (%v); .ci/run should install it: %s", name, err, install)
	}
	t.Skipf("%s not found (%v); install it to run this test: %s", name, err, install)
	return ""
}
