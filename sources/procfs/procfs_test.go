package procfs

import (
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

	"github.com/ffmpeg-rtmp/worker-exporters/internal/peer"
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

func TestNewRejectsWhatIsNotProcfs(t *testing.T) {
	if _, err := New(t.TempDir()); err == nil || !strings.Contains(err.Error(), "--path.procfs") {
		t.Fatalf("New(empty dir) = %v, want an error naming --path.procfs", err)
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

func TestParseStat(t *testing.T) {
	// A command may hold spaces and parentheses.
	line := "4242 (ffmpeg (x) 2) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	s, err := parseStat(4242, []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{Process: Process{PID: 4242, Start: 123456}, Comm: "ffmpeg (x) 2", CPUSeconds: 3}
	if s != want {
		t.Errorf("got %+v, want %+v", s, want)
	}
	z, err := parseStat(7, []byte("7 (a) Z 1 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 99 0 0"))
	if err != nil || !z.Exited || z.Start != 99 || z.CPUSeconds != 0.03 {
		t.Errorf("zombie: %+v %v", z, err)
	}
	for _, bad := range []string{"", "1 (a", "1 (a) S 1 2 3", "1 (a) S 1 1 1 0 -1 0 0 0 0 0 x 2 0 0 20 0 1 0 99"} {
		if _, err := parseStat(1, []byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 10 100 10 1"))
	f.Add([]byte("1 ()) ) Z 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 10"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseStat(1, b)
		if err == nil && (s.CPUSeconds < 0 || math.IsNaN(s.CPUSeconds)) {
			t.Errorf("CPU %v from %q", s.CPUSeconds, b)
		}
	})
}

func TestCPU(t *testing.T) {
	c, err := parseCPU([]byte("cpu  100 5 50 1000 20 1 2 3 40 0\ncpu0 1 2 3 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	// guest (40) is inside user already and is not added again.
	if c.TotalSeconds != 11.81 || c.IdleSeconds != 10.2 {
		t.Errorf("got %+v", c)
	}
	if _, err := parseCPU([]byte("intr 1 2 3\n")); err == nil {
		t.Error("accepted a file without the cpu line")
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

func FuzzParseCPU(f *testing.F) {
	f.Add([]byte("cpu  100 5 50 1000 20 1 2 3 40 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseCPU(b)
		if err == nil && (c.IdleSeconds > c.TotalSeconds || c.IdleSeconds < 0) {
			t.Errorf("%+v from %q", c, b)
		}
	})
}

func TestParseHexAddrPort(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F40":                         "127.0.0.1:8000",
		"00000000000000000000000001000000:0050": "[::1]:80",
		"0000000000000000FFFF00000100007F:2522": "127.0.0.1:9506", // IPv4-mapped, as a dual-stack listener's sockets show
	} {
		got, err := parseHexAddrPort(in)
		if err != nil || got.String() != want {
			t.Errorf("%s: %v %v, want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007F:", "0100007:1F40", "0100007F:1F4000", "zz00007F:1F40"} {
		if _, err := parseHexAddrPort(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseHexAddrPort(f *testing.F) {
	f.Add("0100007F:1F40")
	f.Fuzz(func(t *testing.T, s string) {
		if ap, err := parseHexAddrPort(s); err == nil && !ap.IsValid() {
			t.Errorf("%q: invalid %v without an error", s, ap)
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
	holder := exec.Command("sleep", "30")
	w, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	ino, _ := PipeInode(w.(*os.File))
	target := Pipe(ino)
	var h Holders
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
