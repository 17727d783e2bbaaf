package docker

import (
	"path/filepath"
	"testing"
)

// BenchmarkReadCgroup100: one collection's cgroup reads of 100 running
// containers (the v1 fixture tree's, each read 100/3 times), without the
// kernel's cost of generating cgroupfs files.
func BenchmarkReadCgroup100(b *testing.B) {
	g, err := openCgroups(filepath.Join("testdata", "cgroup-v1"), filepath.Join("testdata", "proc-v1"))
	if err != nil {
		b.Fatal(err)
	}
	s := &Source{cgroups: g, hostMemory: fixtureHostMemory}
	var es []*entry
	for i := range 100 {
		f := fixtures[4+i%3]
		dirs, err := g.find(f.id, f.pid, "")
		if err != nil {
			b.Fatal(err)
		}
		es = append(es, &entry{c: Container{ID: f.id, State: "running"}, pid: f.pid, cg: &dirs})
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, e := range es {
			if !s.readCgroup(e) {
				b.Fatal(e.c.PathWhy)
			}
		}
	}
}
