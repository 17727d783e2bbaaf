package procfs

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
)

// These tests read this machine's real /proc, with real processes at the
// other end of real sockets and pipes.

func proc(t testing.TB) *FS {
	t.Helper()
	f, err := New("/proc")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestNewRejectsWhatIsNotProcfs: an empty folder, and a crafted tree whose
// stat is a FIFO (a read of it would block until something wrote to it),
// are refused at once, naming the flag; only a real procfs is read.
func TestNewRejectsWhatIsNotProcfs(t *testing.T) {
	if _, err := New(t.TempDir()); err == nil || !strings.Contains(err.Error(), "--path.procfs") {
		t.Fatalf("New(empty dir) = %v, want an error naming --path.procfs", err)
	}
	crafted := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(crafted, "stat"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(crafted, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := New(crafted); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "is not a procfs mount (filesystem type") {
			t.Fatalf("New(a tree with a FIFO for stat) = %v, want it refused as no procfs", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("New blocked on a FIFO in a crafted --path.procfs")
	}
}

// TestStatMatchesRusage: a child's CPU time read from its zombie's
// /proc/PID/stat is what the kernel reports when it is reaped.
func TestStatMatchesRusage(t *testing.T) {
	f := proc(t)
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first, err := f.Stat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if first.Comm != "sh" || first.Start == 0 {
		t.Errorf("stat of sh: %+v", first)
	}
	// Until the test reaps it (cmd.Wait), the child stays a zombie whose
	// stat holds its final CPU time.
	var last Stat
	deadline := time.Now().Add(time.Minute)
	for !last.Exited {
		if time.Now().After(deadline) {
			t.Fatal("child did not exit within a minute")
		}
		time.Sleep(20 * time.Millisecond)
		if last, err = f.Stat(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	if last.Process != first.Process {
		t.Errorf("identity changed: %+v then %+v", first.Process, last.Process)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	want := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	if want < 0.05 {
		t.Fatalf("child used only %v s of CPU: too little to compare", want)
	}
	// stat counts in 10 ms ticks; allow two.
	if math.Abs(last.CPUSeconds-want) > 0.02+0.02*want {
		t.Errorf("stat says %.3f s of CPU, rusage %.3f s", last.CPUSeconds, want)
	}
	if _, err := f.Stat(cmd.Process.Pid); !errors.Is(err, ErrNoProcess) {
		t.Errorf("stat of a reaped process: %v, want ErrNoProcess", err)
	}
}

// TestStatOddCommand: a command whose name holds spaces and parentheses
// (the kernel takes it from the name the program was run by, here a link)
// is read whole, and its fields after it are found.
func TestStatOddCommand(t *testing.T) {
	f := proc(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(t.TempDir(), "a (b) c")
	if err := os.Symlink(sleep, odd); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	st, err := f.Stat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	self, err := f.Stat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.Comm != "a (b) c" || st.Exited || st.Start < self.Start || st.CPUSeconds < 0 {
		t.Errorf("stat of %q: %+v (this test's: %+v)", odd, st, self)
	}
	if _, err := f.Stat(-1); !errors.Is(err, ErrNoProcess) {
		t.Errorf("stat of pid -1: %v, want ErrNoProcess", err)
	}
}

// TestCPU: the machine's CPU time from this machine's /proc/stat, and the
// sum over a stat file whose guest time must not count twice (a tree with
// only that file: what it is read from, not a fake of a peer).
func TestCPU(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "stat"), []byte("cpu  100 5 50 1000 20 1 2 3 40 0\ncpu0 100 5 50 1000 20 1 2 3 40 0\nbtime 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fixed, err := open(root) // a fixture: New takes only a real procfs
	if err != nil {
		t.Fatal(err)
	}
	c, err := fixed.CPU()
	if err != nil {
		t.Fatal(err)
	}
	// guest (40) is inside user already and is not added again.
	if math.Abs(c.TotalSeconds-11.81) > 1e-9 || math.Abs(c.IdleSeconds-10.2) > 1e-9 {
		t.Errorf("got %+v, want 11.81 s in all, 10.2 s idle", c)
	}
	if err := os.WriteFile(filepath.Join(root, "stat"), []byte("intr 1 2 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := fixed.CPU(); err == nil {
		t.Errorf("a stat file without the cpu line: %+v", c)
	}

	f := proc(t)
	a, err := f.CPU()
	if err != nil {
		t.Fatal(err)
	}
	if a.TotalSeconds <= 0 || a.IdleSeconds > a.TotalSeconds {
		t.Errorf("this machine: %+v", a)
	}
	up, err := f.UptimeSeconds()
	if err != nil || up <= 0 {
		t.Errorf("uptime %v %v", up, err)
	}
}

func TestParseUptime(t *testing.T) {
	if v, err := parseUptime("uptime", "350735.47 234388.90\n"); err != nil || v != 350735.47 {
		t.Errorf("got %v %v", v, err)
	}
	for _, bad := range []string{"", "x 1", "-1 2", "NaN 1", "+Inf 1"} {
		if v, err := parseUptime("uptime", bad); err == nil {
			t.Errorf("parseUptime(%q) = %v", bad, v)
		}
	}
}

func FuzzParseUptime(f *testing.F) {
	f.Add("350735.47 234388.90\n")
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := parseUptime("uptime", s); err == nil && !(v >= 0 && v < 1e12) {
			t.Errorf("%v from %q", v, s)
		}
	})
}

// connectFromChild has a separate process (bash's /dev/tcp) connect to
// network/addr and hold the connection, and returns the server's end.
func connectFromChild(t *testing.T, network, listen, dial string) (*exec.Cmd, net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, listen)
	if err != nil {
		peer.Missing(t, fmt.Sprintf("cannot listen on %s %s here: %v", network, listen, err))
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	cmd := exec.Command("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d; read -r line <&3", dial, port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); cmd.Wait() })
	return cmd, conn
}

func tcpConn(c net.Conn) TCPConn {
	return TCPConn{Local: c.LocalAddr().(*net.TCPAddr).AddrPort(), Remote: c.RemoteAddr().(*net.TCPAddr).AddrPort()}
}

// TestLinkTCP: the process at the other end of a loopback connection is
// found from the server's end, for IPv4, IPv6 and IPv4 on a dual-stack
// listener (the default ":9506").
func TestLinkTCP(t *testing.T) {
	f := proc(t)
	for _, c := range []struct{ name, network, listen, dial string }{
		{"ipv4", "tcp4", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6", "tcp6", "[::1]:0", "::1"},
		{"dual-stack", "tcp", ":0", "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd, conn := connectFromChild(t, c.network, c.listen, c.dial)
			tc := tcpConn(conn)
			inodes, err := f.ClientInodes([]TCPConn{tc})
			if err != nil {
				t.Fatal(err)
			}
			ino, ok := inodes[tc]
			if !ok {
				t.Fatalf("client end of %+v not found", tc)
			}
			h, err := f.FindHolders(map[Target]bool{Socket(ino): true})
			if err != nil {
				t.Fatal(err)
			}
			ps := h.Found[Socket(ino)]
			if len(ps) != 1 || ps[0].PID != cmd.Process.Pid {
				t.Fatalf("holders %+v, want only bash (pid %d)", ps, cmd.Process.Pid)
			}
			st, _ := f.Stat(cmd.Process.Pid)
			if ps[0] != st.Process {
				t.Errorf("holder %+v, stat says %+v", ps[0], st.Process)
			}
		})
	}
	// A connection nobody here holds the client end of.
	ghost := TCPConn{Local: netip.MustParseAddrPort("127.0.0.1:1"), Remote: netip.MustParseAddrPort("10.9.8.7:4242")}
	if inodes, err := f.ClientInodes([]TCPConn{ghost}); err != nil || len(inodes) != 0 {
		t.Errorf("ghost connection: %v %v", inodes, err)
	}
}

// TestLinkPipe: the writer of a pipe is found; its reader (this test) is not.
func TestLinkPipe(t *testing.T) {
	f := proc(t)
	cmd := exec.Command("sh", "-c", "exec sleep 30")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ino, ok := PipeInode(out.(*os.File))
	if !ok {
		t.Fatal("stdout pipe has no pipe inode")
	}
	h, err := f.FindHolders(map[Target]bool{Pipe(ino): true})
	if err != nil {
		t.Fatal(err)
	}
	if ps := h.Found[Pipe(ino)]; len(ps) != 1 || ps[0].PID != cmd.Process.Pid {
		t.Fatalf("writers %+v, want only the child %d (not this reader %d)", ps, cmd.Process.Pid, os.Getpid())
	}
	file, err := os.CreateTemp(t.TempDir(), "f")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := PipeInode(file); ok {
		t.Error("a regular file reported as a pipe")
	}
}

// TestDenied: descriptors of another user's process are not readable
// without CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE; the scan says so rather
// than failing. As root, the scan runs in a child process as nobody (the
// kernel's own permission check, not a fake); otherwise this user cannot
// read root's processes (pid 1).
func TestDenied(t *testing.T) {
	if os.Getenv("PROCFS_TEST_SCAN") != "" {
		h, err := proc(t).FindHolders(map[Target]bool{Target(os.Getenv("PROCFS_TEST_SCAN")): true})
		if err != nil {
			t.Fatal(err)
		}
		json.NewEncoder(os.Stdout).Encode(h)
		return
	}
	// A root process holding a pipe open for writing, then a scan for it.
	target, _ := pipeWriter(t)
	var h Holders
	var err error
	if os.Geteuid() != 0 {
		if h, err = proc(t).FindHolders(map[Target]bool{target: true}); err != nil {
			t.Fatal(err)
		}
	} else {
		h = scanAsNobody(t, target)
	}
	if h.Denied == 0 {
		t.Errorf("no process reported unreadable: %+v", h)
	}
	if len(h.Found[target]) != 0 {
		t.Errorf("found %v through descriptors it cannot read", h.Found[target])
	}
}

// scanAsNobody runs this test binary as uid 65534 to scan for target.
func scanAsNobody(t *testing.T, target Target) Holders {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "procfs-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "procfs.test")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err == nil {
		_, err = io.Copy(dst, src)
		dst.Close()
	}
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run", "^TestDenied$")
	cmd.Env = append(os.Environ(), "PROCFS_TEST_SCAN="+string(target))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scan as nobody: %v\n%s", err, out)
	}
	var h Holders
	line, _, _ := strings.Cut(string(out), "\n")
	if err := json.Unmarshal([]byte(line), &h); err != nil {
		t.Fatalf("scan as nobody printed %q: %v", out, err)
	}
	return h
}

func BenchmarkStat(b *testing.B) {
	f := proc(b)
	pid := os.Getpid()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Stat(pid); err != nil {
			b.Fatal(err)
		}
	}
}

// TestChildrenAndReapedCPU: a shell's live child is listed, and the CPU
// time of a child it waited for moves to its ChildrenCPUSeconds.
func TestChildrenAndReapedCPU(t *testing.T) {
	f := proc(t)
	// The shell burns CPU in a child it waits for, then starts a sleeper
	// and says so.
	cmd := exec.Command("bash", "-c", `(i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done); sleep 60 & echo started; wait`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	var child Stat
	exportertest.WaitFor(t, 10*time.Second, func() bool { // the forked shell execs sleep
		kids, err := f.Children(cmd.Process.Pid)
		if err != nil || len(kids) != 1 {
			t.Fatalf("children %v, %v: want the sleeper", kids, err)
		}
		child, err = f.Stat(kids[0])
		return err == nil && child.Comm == "sleep"
	})
	if child.PPID != cmd.Process.Pid {
		t.Errorf("child %+v: want a child of %d", child, cmd.Process.Pid)
	}
	st, err := f.Stat(cmd.Process.Pid)
	if err != nil || st.ChildrenCPUSeconds <= 0 {
		t.Errorf("shell %+v, %v: want the reaped child's CPU time in ChildrenCPUSeconds", st, err)
	}
}
