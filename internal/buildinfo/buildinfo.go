// Package buildinfo tells which build is running: the version and VCS
// revision the Makefile stamped into the binary, or else those Go recorded.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Stamped by `make build` (-ldflags -X): Go records no VCS revision when its
// own stamping is off (GOFLAGS=-buildvcs=false, common in build systems),
// and no version but "(devel)" for a build inside the module.
var version, revision string

// Version returns the version and VCS revision the binary was built from:
// the Makefile's stamp, else what Go recorded, else "unknown" (go test,
// go run).
func Version() (string, string) {
	v, r := "unknown", "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		if info.Main.Version != "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				r = s.Value
			}
		}
	}
	if version != "" {
		v = version
	}
	if revision != "" {
		r = revision
	}
	return v, r
}

// String is the --version line of binary name.
func String(name string) string {
	v, r := Version()
	return name + ", version " + v + " (revision: " + r + ", go: " + runtime.Version() + ", platform: " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}
