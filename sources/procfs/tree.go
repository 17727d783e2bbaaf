package procfs

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Children lists the PIDs of pid's children, from each of its threads'
// children file (/proc/PID/task/TID/children, which prometheus/procfs does
// not read): an encode's wrapper or shell hands its work to them.
func (f *FS) Children(pid int) ([]int, error) {
	tasks, err := os.ReadDir(filepath.Join(f.root, strconv.Itoa(pid), "task"))
	if err != nil {
		return nil, err
	}
	var kids []int
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(f.root, strconv.Itoa(pid), "task", t.Name(), "children"))
		if err != nil {
			continue // the thread is gone
		}
		for _, field := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(field); err == nil && k > 0 {
				kids = append(kids, k)
			}
		}
	}
	return kids, nil
}
