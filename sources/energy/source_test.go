package energy

// Real processes, real sockets and pipes, this machine's real /proc; RAPL
// is a fixture tree (these machines have none) whose counters the test
// advances at a known power.

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/childproc"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	peers "github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/sampling"
)

// The fixture's powers: energy is attributed from package and dram only;
// core is inside package and psys covers the whole platform, so counting
// either would count energy twice.
var watts = map[string]float64{
	"intel-rapl:0":      60, // package-0
	"intel-rapl-mmio:0": 60, // the same package seen again through MMIO
	"intel-rapl:0:0":    40, // core
	"intel-rapl:0:2":    15, // dram
	"intel-rapl:1":      150,
}

const countedWatts = 75 // package + dram

// rig is a hub, an energy source over it and the RAPL fixture it reads.
type rig struct {
	t     *testing.T
	hub   *ffmpeg.Hub
	src   *Source
	meter *raplfixture.Meter
	root  string       // the sysfs fixture
	rapl  *rapl.Source // the shared RAPL reader: sampled before each window, as the runner's is
	proc  *procfs.FS
	gpus  interface{ Sample(context.Context) } // sampled before each window, as its Run would
}

func newRig(t *testing.T, gpus GPUs) *rig { return newRigOn(t, gpus, raplfixture.Laptop) }

func newRigOn(t *testing.T, gpus GPUs, zones []raplfixture.Zone) *rig {
	t.Helper()
	root := raplfixture.Build(t, t.TempDir(), zones)
	proc, err := procfs.New("/proc")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, proc: proc, root: root, meter: raplfixture.NewMeter(t, root, zones, watts)}
	cfg := ffmpeg.DefaultConfig
	cfg.OnClose = func(stream string, conn uint64) { r.src.Closed(stream, conn) }
	r.hub = ffmpeg.NewHub(cfg)
	var gpu GPUs
	if gpus != nil {
		gpu = gpus
		r.gpus, _ = gpus.(interface{ Sample(context.Context) })
	}
	r.rapl = rapl.New(rapl.Config{FS: os.DirFS(root), Root: root, Interval: time.Second})
	r.src = New(Config{
		Proc: proc, Streams: r.hub, GPUs: gpu, Interval: time.Second, Retry: time.Hour,
		RAPL: r.rapl, Windows: r.followRAPL,
	})
	return r
}

// followRAPL runs a window right after each RAPL sample, as the runner's
// shared reader does.
func (r *rig) followRAPL(ctx context.Context, interval time.Duration, window func(context.Context)) {
	sampling.Every(ctx, func() time.Duration { return interval }, func(ctx context.Context) {
		r.rapl.Sample()
		window(ctx)
	})
}

// window advances the fixture by what it drew since the last window, then
// runs a window.
func (r *rig) window() *Snapshot {
	if err := r.meter.Advance(); err != nil {
		r.t.Fatal(err)
	}
	if r.gpus != nil {
		r.gpus.Sample(context.Background())
	}
	r.rapl.Sample()
	r.src.Sample(context.Background())
	if err := r.src.Health(); err != nil {
		r.t.Fatalf("health: %v", err)
	}
	return r.src.Snapshot()
}

func (r *rig) counted() float64 {
	return r.meter.Added("intel-rapl:0") + r.meter.Added("intel-rapl:0:2")
}

func stream(s *Snapshot, name string) (Stream, bool) {
	for _, st := range s.Streams {
		if st.Name == name {
			return st, true
		}
	}
	return Stream{}, false
}

func unlinked(s *Snapshot, name string) (Reason, bool) {
	for _, u := range s.Unlinked {
		if u.Name == name {
			return u.Reason, true
		}
	}
	return 0, false
}

// child runs script in bash, with fd 3 connected to a listener of the
// test's, and returns it and the server's end of the connection. A script
// that exits closes the connection, unless a process it started holds it.
func child(t *testing.T, script string) (*exec.Cmd, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d; %s", ln.Addr().(*net.TCPAddr).Port, script))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group: the children it starts go with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	return cmd, conn
}

// peer is the hub's record of the server's end of conn, with ?pid=pid.
func peer(conn net.Conn, pid int) ffmpeg.Peer {
	return ffmpeg.Peer{
		Local:  conn.LocalAddr().(*net.TCPAddr).AddrPort(),
		Remote: conn.RemoteAddr().(*net.TCPAddr).AddrPort(),
		PID:    pid,
	}
}

func (r *rig) open(name string, p ffmpeg.Peer) *ffmpeg.Conn {
	r.t.Helper()
	c, err := r.hub.OpenFrom(name, p)
	if err != nil {
		r.t.Fatal(err)
	}
	c.Line([]byte("frame=1"))
	c.Line([]byte("progress=continue"))
	return c
}

func (r *rig) cpu(pid int) float64 {
	r.t.Helper()
	st, err := r.proc.Stat(pid)
	if err != nil {
		r.t.Fatal(err)
	}
	return st.CPUSeconds
}

// waitCPU waits until process pid has used d more seconds of CPU.
func (r *rig) waitCPU(pid int, d float64) {
	r.t.Helper()
	from := r.cpu(pid)
	exportertest.WaitFor(r.t, time.Minute, func() bool { return r.cpu(pid) >= from+d })
}

const busy = "while :; do :; done"

// TestAttributesByCPUTime: two processes of different CPU cost, each
// linked to its stream with no ?pid by the other end of its loopback
// connection, get the package and dram energy in proportion to their CPU
// time over the machine's; the sum never exceeds what the zones counted.
//
// The idle power is set to all the fixture draws, as --energy.idle-watts.cpu
// may: every joule is then idle, shared by CPU time over the machine's.
// Estimated, it would follow the fixture's windows, whose energy is written
// at each Advance but timed at each sample (a real counter is read and
// timed together): on a loaded machine the gap between the two made one
// window's power low, that became the idle estimate, and the rest went out
// by busy time (twice the share, in a full run beside two busy loops; one
// 150 ms delay between Advance and the sample fails it every time). The
// dynamic split has its own tests (TestIdleSplit).
func TestAttributesByCPUTime(t *testing.T) {
	r := newRig(t, nil)
	r.src.cpuIdle.Configured = countedWatts
	heavy, hc := child(t, busy)
	// A fraction of the time busy, the rest waiting on its connection (no
	// fork: a child's CPU time would be its own, not bash's).
	light, lc := child(t, "while :; do for i in {1..3000}; do :; done; read -r -t 0.02 -u 3; done")
	r.open("heavy", peer(hc, 0))
	r.open("light", peer(lc, 0))

	snap := r.window() // links, and starts the first window
	for name, pid := range map[string]int{"heavy": heavy.Process.Pid, "light": light.Process.Pid} {
		st, ok := stream(snap, name)
		if !ok || len(st.Processes) != 1 || st.Processes[0].PID != pid || st.Processes[0].Command != "bash" {
			t.Fatalf("%s linked to %+v, want bash pid %d", name, st.Processes, pid)
		}
	}
	machine0, _ := r.proc.CPU()
	start, counted0 := snap, r.counted()
	begin := time.Now()
	// Until light has used 0.3 s: CPU time counts in 10 ms ticks.
	for from := r.cpu(light.Process.Pid); r.cpu(light.Process.Pid) < from+0.3; {
		r.waitCPU(heavy.Process.Pid, 0.25)
		snap = r.window()
		total := 0.0
		for _, st := range snap.Streams {
			total += st.Energy[CPU]
		}
		if counted := r.counted() - counted0; total > counted+1e-9 {
			t.Fatalf("streams got %v J, the zones counted %v J since the first window", total, counted)
		}
	}
	machine1, _ := r.proc.CPU()
	elapsed := time.Since(begin).Seconds()

	// Each window's share is CPU time over the machine's, of energy
	// counted at countedWatts: so a CPU second is worth countedWatts over
	// the machine's CPU seconds per second (its CPU count), whatever the
	// windows' lengths.
	perCPUSecond := countedWatts * elapsed / (machine1.TotalSeconds - machine0.TotalSeconds)
	for _, name := range []string{"heavy", "light"} {
		a, _ := stream(start, name)
		b, _ := stream(snap, name)
		used := b.CPUSeconds - a.CPUSeconds
		if !b.HasEnergy[CPU] || b.HasEnergy[GPU] {
			t.Errorf("%s: energy known %v, want CPU only (no GPU source)", name, b.HasEnergy)
		}
		if want := used * perCPUSecond; math.Abs(b.Energy[CPU]-want) > 0.15*want {
			t.Errorf("%s: %.3f J for %.3f CPU s, want %.3f J (%.1f J per CPU second)", name, b.Energy[CPU], used, want, perCPUSecond)
		}
		if b.HasJoulesPerFrame != true || b.JoulesPerFrame != b.Energy[CPU] {
			t.Errorf("%s: %v J per frame (1 frame), want %v", name, b.JoulesPerFrame, b.Energy[CPU])
		}
	}
	h, _ := stream(snap, "heavy")
	l, _ := stream(snap, "light")
	// How much more CPU heavy gets than light depends on the machine's
	// load; that its energy follows, in the same ratio, does not.
	if h.CPUSeconds <= l.CPUSeconds {
		t.Fatalf("heavy %.2f s, light %.2f s: the busy loop got no more CPU than the light one", h.CPUSeconds, l.CPUSeconds)
	}
	if want, got := h.CPUSeconds/l.CPUSeconds, h.Energy[CPU]/l.Energy[CPU]; math.Abs(got-want) > 0.15*want {
		t.Errorf("heavy %.2f s %.2f J, light %.2f s %.2f J: energy ratio %.2f, CPU ratio %.2f", h.CPUSeconds, h.Energy[CPU], l.CPUSeconds, l.Energy[CPU], got, want)
	}
	if !snap.Available[CPU] || snap.Available[GPU] {
		t.Errorf("available %v", snap.Available)
	}
}

// TestCloseTakesFinalReading: once the connection closes, what the
// process does next is not the encode's.
func TestCloseTakesFinalReading(t *testing.T) {
	r := newRig(t, nil)
	cmd, conn := child(t, busy)
	c := r.open("job", peer(conn, 0))
	r.window()
	r.waitCPU(cmd.Process.Pid, 0.1)
	c.Close() // the hub calls Closed
	at := r.cpu(cmd.Process.Pid)
	old, _ := stream(r.window(), "job")
	r.waitCPU(cmd.Process.Pid, 0.2)
	snap := r.window()
	st, ok := stream(snap, "job")
	if st.Energy != old.Energy {
		t.Errorf("energy went from %v to %v after the close", old.Energy, st.Energy)
	}
	if !ok || len(st.Processes) != 0 {
		t.Fatalf("after close: %+v, want served unlinked", st)
	}
	if st.CPUSeconds > at+0.011 {
		t.Errorf("CPU %.2f s after the close at %.2f s: the process's later work counted", st.CPUSeconds, at)
	}
	if _, ok := unlinked(snap, "job"); ok {
		t.Error("a closed stream listed as failing to link")
	}

	// A new encode under the name starts from zero.
	cmd2, conn2 := child(t, "read -r -u 3")
	r.open("job", peer(conn2, 0))
	snap = r.window()
	st, _ = stream(snap, "job")
	if len(st.Processes) != 1 || st.Processes[0].PID != cmd2.Process.Pid || st.CPUSeconds >= at || st.Energy[CPU] >= old.Energy[CPU]/2 {
		t.Errorf("new encode: %+v, want only the new process and nothing of the old", st)
	}
}

// TestPIDLink: ?pid=N links the process holding the connection, and a
// PID reused by another program never inherits the stream.
func TestPIDLink(t *testing.T) {
	peers.RequireRoot(t, "forcing a PID to be reused writes /proc/sys/kernel/ns_last_pid")
	r := newRig(t, nil)
	first, conn := child(t, "exec sleep 60") // sleep holds the connection
	pid := first.Process.Pid
	r.open("job", peer(conn, pid))
	snap := r.window()
	st, _ := stream(snap, "job")
	if len(st.Processes) != 1 || st.Processes[0].PID != pid || st.Processes[0].Command != "sleep" {
		t.Fatalf("linked to %+v, want sleep (pid %d)", st.Processes, pid)
	}
	before := st.CPUSeconds

	// Start times count in 10 ms ticks: a PID reused within the tick its
	// first owner started in cannot be told apart (nor can it happen
	// without forcing it, as here: the kernel hands out every other PID
	// first). So the first process lives past its start tick.
	exportertest.WaitFor(t, 5*time.Second, func() bool {
		up, _ := r.proc.UptimeSeconds()
		return up >= float64(st.Processes[0].Start+2)/procfs.UserHZ
	})
	first.Process.Kill()
	first.Wait()
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	second := reusePID(t, pid, fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d; while :; do :; done", ln2.Addr().(*net.TCPAddr).Port))
	conn2, err := ln2.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	r.waitCPU(second.Process.Pid, 0.2)
	r.window() // sees the first one gone
	snap = r.window()
	st, _ = stream(snap, "job")
	if len(st.Processes) != 0 || st.CPUSeconds != before {
		t.Errorf("after pid %d was reused: linked to %+v with %.2f s of CPU (had %.2f s)", pid, st.Processes, st.CPUSeconds, before)
	}
	if why, ok := unlinked(snap, "job"); !ok || why != Exited {
		t.Errorf("unlinked %v %v, want exited", why, ok)
	}
	if snap.Failures[Exited] != 1 {
		t.Errorf("failures %v", snap.Failures)
	}

	// A new connection naming the PID, held by the new process, means it.
	r.open("job2", peer(conn2, pid))
	snap = r.window()
	if st, _ := stream(snap, "job2"); len(st.Processes) != 1 || st.Processes[0].PID != pid || st.Processes[0].Command != "bash" {
		t.Errorf("job2 linked to %+v", st.Processes)
	}
}

// reusePID starts bash running script under PID pid, which must be free.
func reusePID(t *testing.T, pid int, script string) *exec.Cmd {
	t.Helper()
	for range 50 { // other processes on the machine may take the PID first
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("bash", "-c", script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			return cmd
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
	t.Fatalf("could not get pid %d again", pid)
	return nil
}

// TestStdinPipe: for --stdin, the stream is linked to the process writing
// into the pipe, not to the reader.
func TestStdinPipe(t *testing.T) {
	r := newRig(t, nil)
	ino, pid := childproc.PipeWriter(t)
	r.open("stdin", ffmpeg.Peer{Pipe: ino})
	st, _ := stream(r.window(), "stdin")
	if len(st.Processes) != 1 || st.Processes[0].PID != pid {
		t.Errorf("linked to %+v, want the writer %d", st.Processes, pid)
	}
}

// TestProcessExitsFirst: the linked process exits while a child it
// started still holds the connection open. The child, a descendant,
// joined the encode when it started, whether the stream was linked by
// its socket or by ?pid=.
func TestProcessExitsFirst(t *testing.T) {
	r := newRig(t, nil)
	// bash starts sleep (which inherits the connection, fd 3) and exits.
	parent, conn := child(t, "read -r <&3; sleep 60 & echo $! >&3; wait_for_nothing=1")
	pidParent := parent.Process.Pid
	r.open("auto", peer(conn, 0))
	r.open("bypid", peer(conn, pidParent))
	snap := r.window()
	for _, name := range []string{"auto", "bypid"} {
		if st, _ := stream(snap, name); len(st.Processes) != 1 || st.Processes[0].PID != pidParent {
			t.Fatalf("%s linked to %+v, want bash %d", name, st.Processes, pidParent)
		}
	}
	conn.Write([]byte("go\n"))
	line := make([]byte, 32)
	n, err := conn.Read(line)
	if err != nil {
		t.Fatal(err)
	}
	sleeper, err := strconv.Atoi(string(line[:n-1]))
	if err != nil {
		t.Fatalf("child said %q", line[:n])
	}
	t.Cleanup(func() {
		if p, err := os.FindProcess(sleeper); err == nil {
			p.Kill()
		}
	})
	parent.Wait() // bash exits; sleep keeps the connection

	r.window() // sees bash gone
	snap = r.window()
	if st, _ := stream(snap, "auto"); len(st.Processes) != 1 || st.Processes[0].PID != sleeper || st.Processes[0].Command != "sleep" {
		t.Errorf("auto: linked to %+v, want the sleep %d now holding the connection", st.Processes, sleeper)
	}
	if st, _ := stream(snap, "bypid"); len(st.Processes) != 1 || st.Processes[0].PID != sleeper {
		t.Errorf("bypid: linked to %+v, want the sleep %d, bash's child", st.Processes, sleeper)
	}
}

// TestPIDSpoof: a ?pid= naming a process that does not hold the connection
// (another encode, PID 1) links nothing, says pid_mismatch, and takes
// none of the victim's energy; naming the holder, or a wrapper that
// started it (sh -c, ?pid=$$), links.
func TestPIDSpoof(t *testing.T) {
	r := newRig(t, nil)
	victim, victimConn := child(t, busy)
	r.open("victim", peer(victimConn, 0))
	_, thiefConn := child(t, "read -r -u 3")
	r.open("thief", peer(thiefConn, victim.Process.Pid))
	_, initConn := child(t, "read -r -u 3")
	r.open("init", peer(initConn, 1))
	holder, holderConn := child(t, "read -r -u 3")
	r.open("holder", peer(holderConn, holder.Process.Pid))
	// The wrapper: bash holds the connection in a child it waits for.
	wrapper, wrapperConn := child(t, "(while :; do :; done) <&3; wait")
	r.open("wrapper", peer(wrapperConn, wrapper.Process.Pid))

	r.window()
	r.waitCPU(victim.Process.Pid, 0.2)
	snap := r.window()
	for _, name := range []string{"thief", "init"} {
		if st, ok := stream(snap, name); ok {
			t.Errorf("%s linked: %+v", name, st)
		}
		if why, ok := unlinked(snap, name); !ok || why != PIDMismatch {
			t.Errorf("%s unlinked %v %v, want %s", name, Reasons[why], ok, Reasons[PIDMismatch])
		}
	}
	if snap.Failures[PIDMismatch] != 2 {
		t.Errorf("%d pid_mismatch failures counted, want 2", snap.Failures[PIDMismatch])
	}
	if st, _ := stream(snap, "victim"); st.Energy[CPU] <= 0 || len(st.Processes) == 0 {
		t.Errorf("victim: %+v, want its own energy", st)
	}
	if st, _ := stream(snap, "holder"); len(st.Processes) != 1 || st.Processes[0].PID != holder.Process.Pid {
		t.Errorf("holder: linked to %+v, want %d", st.Processes, holder.Process.Pid)
	}
	w, _ := stream(snap, "wrapper")
	if len(w.Processes) != 2 || w.Processes[0].PID != wrapper.Process.Pid || w.CPUSeconds < 0.1 {
		t.Errorf("wrapper: linked to %+v with %.2f CPU s, want the shell and its busy child, charged", w.Processes, w.CPUSeconds)
	}
}

// TestWholeTree: an encode's CPU time is its process tree's: a child
// started after the link is linked and charged, and a child that ran and
// was waited for is charged through its parent's reaped-children time,
// never twice.
func TestWholeTree(t *testing.T) {
	r := newRig(t, nil)
	// The shell waits for go, then runs a short busy child it waits for,
	// then a long one.
	sh, conn := child(t, `read -r -u 3; (i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done); echo short >&3; while :; do :; done & wait`)
	r.open("job", peer(conn, 0))
	r.window()
	conn.Write([]byte("go\n"))
	if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	// The short child has been waited for; the long one runs.
	var st Stream
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		st, _ = stream(r.window(), "job")
		return len(st.Processes) == 2
	})
	shell, err := r.proc.Stat(sh.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if shell.ChildrenCPUSeconds < 0.05 {
		t.Fatalf("the short child's time did not reach the shell: %+v", shell)
	}
	long := st.Processes[1]
	for range 3 {
		r.waitCPU(long.PID, 0.1)
		st, _ = stream(r.window(), "job")
	}
	longSt, err := r.proc.Stat(long.PID)
	if err != nil {
		t.Fatal(err)
	}
	shell, _ = r.proc.Stat(sh.Process.Pid)
	// The shell and its short child from the start, the long child from
	// its start: the whole tree's time, at most a window behind.
	want := shell.CPUSeconds + shell.ChildrenCPUSeconds + longSt.CPUSeconds
	if st.CPUSeconds < 0.8*want || st.CPUSeconds > want+0.05 {
		t.Errorf("encode %.2f CPU s, the tree used %.2f s (shell %.2f, reaped %.2f, long child %.2f)", st.CPUSeconds, want, shell.CPUSeconds, shell.ChildrenCPUSeconds, longSt.CPUSeconds)
	}
}

// TestNeverLinked: a connection from another host is never linked, even
// with ?pid= (that PID is another machine's); neither is a bad ?pid= or a
// connection whose peer is unknown. Each says why, and the streams keep
// working.
func TestNeverLinked(t *testing.T) {
	r := newRig(t, nil)
	remote := ffmpeg.Peer{Local: netip.MustParseAddrPort("10.0.0.5:9506"), Remote: netip.MustParseAddrPort("10.0.0.7:40000"), PID: os.Getpid()}
	r.open("remote", remote)
	_, conn := child(t, "read -r -u 3")
	bad := peer(conn, 0)
	bad.PID = -1
	r.open("badpid", bad)
	r.open("nopeer", ffmpeg.Peer{})
	gone := peer(conn, 0)
	gone.PID = 1 << 30 // above any pid_max
	r.open("nopid", gone)
	snap := r.window()
	for name, want := range map[string]Reason{"remote": Remote, "badpid": BadPID, "nopeer": NoPeer, "nopid": NoProcess} {
		if _, ok := stream(snap, name); ok {
			t.Errorf("%s served as linked", name)
		}
		if why, ok := unlinked(snap, name); !ok || why != want {
			t.Errorf("%s: %v %v, want %s", name, Reasons[why], ok, Reasons[want])
		}
		if snap.Failures[want] != 1 {
			t.Errorf("%s counted %d times", Reasons[want], snap.Failures[want])
		}
	}
	// Retrying does not count the same failure again.
	snap = r.window()
	if snap.Failures[Remote] != 1 {
		t.Errorf("failures after a second window: %v", snap.Failures)
	}
	if len(r.hub.Snapshot().Streams) != 4 {
		t.Error("streams lost")
	}
}

// TestNotFound: a loopback connection whose client end no process holds
// any more (it closed) is not found.
func TestNotFound(t *testing.T) {
	r := newRig(t, nil)
	cmd, conn := child(t, "exit 0")
	cmd.Wait()
	r.open("gone", peer(conn, 0))
	snap := r.window()
	if why, ok := unlinked(snap, "gone"); !ok || why != NotFound {
		t.Errorf("%v %v, want not_found", Reasons[why], ok)
	}
}

// TestSurvivesCounterWrap: energy comes from the RAPL source's
// wrap-corrected totals, so a counter wrapping between two windows costs
// nothing: the window's energy is still shared out, never negative, never
// more than counted.
func TestSurvivesCounterWrap(t *testing.T) {
	zones := []raplfixture.Zone{
		{ID: "intel-rapl:0", Name: "package-0", EnergyUJ: raplfixture.IntelMaxUJ - 4_000_000, MaxUJ: raplfixture.IntelMaxUJ},
	}
	r := newRigOn(t, nil, zones)
	cmd, conn := child(t, busy)
	r.open("job", peer(conn, 0))
	r.window()
	counted0 := r.counted()
	var before float64
	for wrapped := false; !wrapped; {
		r.waitCPU(cmd.Process.Pid, 0.1)
		snap := r.window()
		st, _ := stream(snap, "job")
		wrapped = r.meter.Added("intel-rapl:0") > 4
		if st.Energy[CPU] > r.counted()-counted0 {
			t.Fatalf("%.3f J shared out, %.3f J counted", st.Energy[CPU], r.counted()-counted0)
		}
		// Every window, the one the counter wrapped in too, shares out
		// some of what the busy process's share of the machine drew.
		if st.Energy[CPU] <= before {
			t.Fatalf("a window (wrapped: %v) added nothing: %.3f J, then %.3f J", wrapped, before, st.Energy[CPU])
		}
		before = st.Energy[CPU]
	}
}

// TestCPUFromLink: a process that ran long before its stream was linked
// (a new encode on a kept connection, a long-lived process named by
// ?pid=) is charged CPU time from the link, as its energy: the counter
// starts from zero, not from the process's lifetime.
func TestCPUFromLink(t *testing.T) {
	r := newRig(t, nil)
	cmd, conn := child(t, busy)
	r.waitCPU(cmd.Process.Pid, startSlack.Seconds()+0.5) // older than startSlack and two windows of 1 s
	r.window()                                           // a window before the link
	r.open("job", peer(conn, 0))
	st, _ := stream(r.window(), "job")
	if len(st.Processes) != 1 || st.CPUSeconds > 0.011 {
		t.Fatalf("at the link: %+v, want the process with no CPU time yet (it had %.2f s)", st, r.cpu(cmd.Process.Pid))
	}
	from := r.cpu(cmd.Process.Pid)
	r.waitCPU(cmd.Process.Pid, 0.2)
	st, _ = stream(r.window(), "job")
	if used := r.cpu(cmd.Process.Pid) - from; st.CPUSeconds < 0.2-0.011 || st.CPUSeconds > used+0.011 {
		t.Errorf("%.3f s of CPU after the link, want what it used since: %.3f s", st.CPUSeconds, used)
	}
}

// TestProcessesLeftOut: a connection held by more processes than
// MaxProcesses links MaxProcesses of them; the rest are counted and
// health says so.
func TestProcessesLeftOut(t *testing.T) {
	r := newRig(t, nil)
	const extra = 2
	// bash and MaxProcesses+extra-1 subshells, each holding fd 3 and
	// reading it until the test closes the connection.
	_, conn := child(t, fmt.Sprintf("for i in {1..%d}; do read -r -u 3 & done; echo ready >&3; wait", MaxProcesses+extra-1))
	if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	r.open("crowd", peer(conn, 0))
	if err := r.meter.Advance(); err != nil {
		r.t.Fatal(err)
	}
	r.rapl.Sample()
	r.src.Sample(context.Background())
	st, _ := stream(r.src.Snapshot(), "crowd")
	if len(st.Processes) != MaxProcesses || st.ProcessesLeftOut != extra {
		t.Errorf("linked %d processes, %d left out; want %d and %d", len(st.Processes), st.ProcessesLeftOut, MaxProcesses, extra)
	}
	if err := r.src.Health(); err == nil || !strings.Contains(err.Error(), "beyond the limit") {
		t.Errorf("health %v, want the processes left out named", err)
	}
}

// TestTwoSockets: with the topology known (a two-socket fixture: CPU 0 on
// package 0, CPU 1 on package 1, this machine's real CPUs and /proc), an
// encode pinned to CPU 0 is charged from package 0's zones only, never
// from the other socket's, which draws more; each socket has its own idle
// power.
func TestTwoSockets(t *testing.T) {
	if runtime.NumCPU() < 2 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true: this test needs two CPUs to pin a process to one of them")
		}
		t.Skip("needs two CPUs")
	}
	r := newRigOn(t, nil, raplfixture.TwoSockets)
	r.src.cfg.Packages = map[int]string{0: "0", 1: "1"}
	// Socket 1 draws ten times socket 0's: pooled, any share of the
	// machine's CPU time would be charged more than socket 0 counted.
	r.meter = raplfixture.NewMeter(t, r.root, raplfixture.TwoSockets, map[string]float64{"intel-rapl:0": 80, "intel-rapl:0:0": 20, "intel-rapl:1": 1000})
	cmd, conn := child(t, "exec taskset -c 0 bash -c '"+busy+"'")
	r.open("pinned", peer(conn, 0))
	r.window()
	counted0 := r.meter.Added("intel-rapl:0") + r.meter.Added("intel-rapl:0:0")
	for range 4 {
		r.waitCPU(cmd.Process.Pid, 0.2)
		r.window()
	}
	snap := r.src.Snapshot()
	st, _ := stream(snap, "pinned")
	socket0 := r.meter.Added("intel-rapl:0") + r.meter.Added("intel-rapl:0:0") - counted0
	if st.Energy[CPU] <= 0 || st.Energy[CPU] > socket0*(1+1e-9) {
		t.Errorf("pinned to socket 0: %.3f J, socket 0 counted %.3f J since the link: want some of it and never more", st.Energy[CPU], socket0)
	}
	var packages []string
	for _, p := range snap.Idle {
		packages = append(packages, p.Package)
	}
	if !slices.Equal(packages, []string{"0", "1"}) {
		t.Errorf("idle power by package %v, want one per socket", packages)
	}
}
