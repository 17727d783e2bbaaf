package exporters

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinariesShipNoTestSupport: what `make build` ships links neither the
// test support (internal/testkit, the testing package) nor the fleet tool
// (tools/): docs/DESIGN.md's layout says so, and the go toolchain checks it.
func TestBinariesShipNoTestSupport(t *testing.T) {
	for _, cmd := range []string{"cpu-exporter", "gpu-exporter", "ffmpeg-exporter", "docker-stats-exporter", "worker-exporter"} {
		out, err := exec.Command("go", "list", "-deps", "../../"+cmd).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", cmd, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 50 {
			t.Fatalf("go list -deps %s: %d packages, not a binary's list", cmd, len(deps))
		}
		for _, dep := range deps {
			if dep == "testing" || strings.Contains(dep, "/internal/testkit/") || strings.Contains(dep, "/worker-exporters/tools/") {
				t.Errorf("%s links %s", cmd, dep)
			}
		}
	}
}
