// Package buildinfo tells which build is running: the module version and
// VCS revision Go stamped into the binary.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Version returns the module version and VCS revision the binary was built
// from; "unknown" where Go recorded none (go test, go run).
func Version() (version, revision string) {
	version, revision = "unknown", "unknown"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if info.Main.Version != "" {
		version = info.Main.Version
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			revision = s.Value
		}
	}
	return
}

// String is the --version line of binary name.
func String(name string) string {
	v, r := Version()
	return name + ", version " + v + " (revision: " + r + ", go: " + runtime.Version() + ", platform: " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}
