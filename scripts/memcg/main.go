// Command memcg runs a program inside a memory cgroup with a hard limit, as
// an operator caps an exporter (systemd's MemoryMax=, a container's
// --memory), and reads back how it fared: for scripts/bench and the
// e2e/budget test. Needs root. cgroup v2 (memory.max) where the memory
// controller is on the unified hierarchy, else v1 (memory.limit_in_bytes).
// Swap is capped too (memory.swap.max, memory.memsw.limit_in_bytes): the
// limit is on memory, not on what may be pushed out of it.
//
//	memcg run NAME BYTES -- PROGRAM ARGS...  create NAME, join it, exec PROGRAM
//	memcg stat NAME                          peak=B usage=B limit_hits=N oom_kills=N
//	memcg rm NAME                            remove it (once its processes are gone)
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const root = "/sys/fs/cgroup"

func main() {
	err := errors.New("usage: memcg run NAME BYTES -- PROGRAM ARGS... | memcg stat NAME | memcg rm NAME")
	args := os.Args[1:]
	switch {
	case len(args) >= 5 && args[0] == "run" && args[3] == "--":
		err = run(args[1], args[2], args[4:])
	case len(args) == 2 && args[0] == "stat":
		var s string
		if s, err = stat(args[1]); err == nil {
			fmt.Println(s)
		}
	case len(args) == 2 && args[0] == "rm":
		err = remove(args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "memcg:", err)
		os.Exit(1)
	}
}

// group is one memory cgroup: its folder, and whether it is on v2.
type group struct {
	dir string
	v2  bool
}

func find(name string) (group, error) {
	if strings.ContainsAny(name, "/.") || name == "" {
		return group{}, fmt.Errorf("cgroup name %q: want a plain name", name)
	}
	if c, err := os.ReadFile(filepath.Join(root, "cgroup.controllers")); err == nil && strings.Contains(" "+strings.TrimSpace(string(c))+" ", " memory ") {
		return group{dir: filepath.Join(root, name), v2: true}, nil
	}
	if _, err := os.Stat(filepath.Join(root, "memory", "memory.limit_in_bytes")); err == nil {
		return group{dir: filepath.Join(root, "memory", name)}, nil
	}
	return group{}, fmt.Errorf("no memory cgroup controller under %s (neither v2 with memory enabled nor v1's memory hierarchy)", root)
}

func write(dir, file, value string) error {
	return os.WriteFile(filepath.Join(dir, file), []byte(value), 0)
}

func run(name, limit string, argv []string) error {
	bytes, err := strconv.ParseUint(limit, 10, 64)
	if err != nil || bytes == 0 {
		return fmt.Errorf("limit %q: want a number of bytes", limit)
	}
	g, err := find(name)
	if err != nil {
		return err
	}
	if g.v2 {
		// The memory controller must be handed down to the new child.
		if err := write(root, "cgroup.subtree_control", "+memory"); err != nil {
			return fmt.Errorf("enable the memory controller for %s's children: %w", root, err)
		}
	}
	if err := os.Mkdir(g.dir, 0o755); err != nil {
		return err
	}
	var steps [][2]string
	if g.v2 {
		steps = [][2]string{{"memory.max", limit}, {"memory.swap.max", "0"}}
	} else {
		steps = [][2]string{{"memory.limit_in_bytes", limit}, {"memory.memsw.limit_in_bytes", limit}}
	}
	for _, s := range steps {
		err := write(g.dir, s[0], s[1])
		if errors.Is(err, os.ErrNotExist) && strings.Contains(s[0], "sw") {
			continue // no swap accounting: nothing to cap
		}
		if err != nil {
			os.Remove(g.dir)
			return fmt.Errorf("%s: %w", s[0], err)
		}
	}
	if err := write(g.dir, "cgroup.procs", strconv.Itoa(os.Getpid())); err != nil {
		os.Remove(g.dir)
		return fmt.Errorf("join %s: %w", g.dir, err)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, argv, os.Environ())
}

// stat reads the group's peak and current usage, how often it reached the
// limit (and had to reclaim), and how many of its processes the kernel's
// OOM killer ended.
func stat(name string) (string, error) {
	g, err := find(name)
	if err != nil {
		return "", err
	}
	read := func(file string) (string, error) {
		b, err := os.ReadFile(filepath.Join(g.dir, file))
		return strings.TrimSpace(string(b)), err
	}
	field := func(file, key string) (string, error) {
		s, err := read(file)
		if err != nil {
			return "", err
		}
		for line := range strings.Lines(s) {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && k == key {
				return v, nil
			}
		}
		return "", fmt.Errorf("%s has no %s", filepath.Join(g.dir, file), key)
	}
	var vals [4]string
	var errs [4]error
	if g.v2 {
		if vals[0], errs[0] = read("memory.peak"); errors.Is(errs[0], os.ErrNotExist) {
			vals[0], errs[0] = "-", nil // before Linux 5.19
		}
		vals[1], errs[1] = read("memory.current")
		vals[2], errs[2] = field("memory.events", "max")
		vals[3], errs[3] = field("memory.events", "oom_kill")
	} else {
		vals[0], errs[0] = read("memory.max_usage_in_bytes")
		vals[1], errs[1] = read("memory.usage_in_bytes")
		vals[2], errs[2] = read("memory.failcnt")
		// With swap accounted, memory+swap meets the same limit first.
		if sw, err := read("memory.memsw.failcnt"); err == nil && errs[2] == nil {
			a, _ := strconv.ParseUint(vals[2], 10, 64)
			b, _ := strconv.ParseUint(sw, 10, 64)
			vals[2] = strconv.FormatUint(max(a, b), 10)
		}
		vals[3], errs[3] = field("memory.oom_control", "oom_kill")
	}
	if err := errors.Join(errs[:]...); err != nil {
		return "", err
	}
	return fmt.Sprintf("peak=%s usage=%s limit_hits=%s oom_kills=%s", vals[0], vals[1], vals[2], vals[3]), nil
}

func remove(name string) error {
	g, err := find(name)
	if err != nil {
		return err
	}
	return os.Remove(g.dir)
}
