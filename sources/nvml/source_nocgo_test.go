//go:build !cgo

package nvml

import (
	"log/slog"
	"strings"
	"testing"
)

// TestNoCgoHealth: a build without cgo says why it reads no GPU, in words
// that fit every binary that holds this source (the gpu-exporter, and the
// ffmpeg-exporter's energy source).
func TestNoCgoHealth(t *testing.T) {
	src := New(Config{Log: slog.New(slog.DiscardHandler)})
	err := src.Health()
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=1") {
		t.Fatalf("health %v, want the rebuild advice", err)
	}
	if strings.Contains(err.Error(), "exporter") {
		t.Errorf("health %q names a binary; the source is used by more than one", err)
	}
	if src.Snapshot().Available {
		t.Error("a build without NVML says it is available")
	}
}
