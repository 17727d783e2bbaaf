// Package childproc starts real child processes for tests that link a
// stream or a container to the process at the other end of a pipe.
package childproc

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// PipeWriter starts `sleep 600` with its stdout a pipe this test holds the
// read end of, as ffmpeg's stdout is when piped into --stdin. It returns
// the pipe's inode and the writer's PID; the test's end kills it.
func PipeWriter(t testing.TB) (inode uint64, pid int) {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var st syscall.Stat_t
	if err := syscall.Fstat(int(out.(*os.File).Fd()), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		t.Fatalf("the child's stdout is no pipe: %v", err)
	}
	return st.Ino, cmd.Process.Pid
}
