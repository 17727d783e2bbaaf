// Package peer finds the real programs tests run against (ffmpeg, promtool).
// A missing peer skips the test on a laptop and fails it in CI (CI=true),
// so CI never passes by skipping.
package peer

import (
	"os"
	"os/exec"
	"strings"
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

// CheckMetrics runs `promtool check metrics` (Debian's prometheus package)
// over a scrape and fails the test on any complaint.
func CheckMetrics(t testing.TB, exposition string) {
	t.Helper()
	promtool := Require(t, "promtool", "apt-get install -y prometheus")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// RequireFile returns path if it exists, or ends the test like Require: a
// peer built by a make target (bin/victoria-metrics, bin/otelcol-worker).
func RequireFile(t testing.TB, path, build string) string {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI but missing; build it with: %s", path, build)
	}
	t.Skipf("%s missing; build it with: %s", path, build)
	return ""
}

// RequireRoot ends the test unless it runs as root, as Require does for a
// missing program: skipped with why outside CI, failed in CI.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root: "+why)
	}
}

// Missing ends the test for want of what the message says this machine
// lacks: skipped outside CI, failed in CI.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("required in CI: %s", msg)
	}
	t.Skip(msg)
}
