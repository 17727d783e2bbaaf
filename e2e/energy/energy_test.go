// Package energy proves energy per encode end to end: the worker-exporter
// binary, real ffmpeg encodes streaming -progress into it, and the kernel's
// own account of their CPU time. These machines have no RAPL: the sysfs
// tree is a fixture whose counters the test advances at a known power.
package energy

import (
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
)

// worker is the worker-exporter binary, in a folder every user may read,
// so that it can also run as nobody.
var worker string

func TestMain(m *testing.M) {
	exportertest.SkipUnderShort("end-to-end tests of energy per encode")
	dir, cleanup := exportertest.BuildPackages("../..", "./cmd/worker-exporter")
	worker = filepath.Join(dir, "worker-exporter")
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// The fixture: one socket whose package draws 80 W and its memory 20 W.
var (
	zones = []raplfixture.Zone{
		{ID: "intel-rapl:0", Name: "package-0", EnergyUJ: 5_000_000, MaxUJ: raplfixture.IntelMaxUJ},
		{ID: "intel-rapl:0:0", Name: "dram", EnergyUJ: 1_000_000, MaxUJ: raplfixture.IntelMaxUJ},
	}
	watts = map[string]float64{"intel-rapl:0": 80, "intel-rapl:0:0": 20}
)

// exporter is worker-exporter serving only its ffmpeg port, with energy
// per encode over a RAPL fixture tree the meter advances.
type exporter struct {
	t     *testing.T
	cmd   *exec.Cmd
	addr  string
	logs  *exportertest.Buffer
	meter *raplfixture.Meter
}

// as is who the exporter runs as: nil for this test's user.
func startExporter(t *testing.T, as *syscall.SysProcAttr, stdin io.Reader, args ...string) *exporter {
	t.Helper()
	return startExporterEnv(t, as, stdin, nil, args...)
}

// startExporterEnv is startExporter with env added to its environment
// (which has no OTEL_* of the test's own).
func startExporterEnv(t *testing.T, as *syscall.SysProcAttr, stdin io.Reader, env []string, args ...string) *exporter {
	t.Helper()
	root, err := os.MkdirTemp("", "energy-sysfs")
	if err == nil {
		err = os.Chmod(root, 0o755) // readable by nobody too
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	raplfixture.Build(t, root, zones)
	e := &exporter{t: t, logs: &exportertest.Buffer{}, meter: raplfixture.NewMeter(t, root, zones, watts)}
	e.meter.Start(100 * time.Millisecond)
	port := exportertest.FreePort(t)
	host := "127.0.0.1"
	for i, a := range args {
		if a == "--web.listen-host" && i+1 < len(args) {
			host = args[i+1] // the last one given is the one in effect
		}
	}
	e.addr = net.JoinHostPort(host, port)
	e.cmd = exec.Command(worker, append([]string{"--web.listen-host", "127.0.0.1",
		"--cpu.port", "0", "--gpu.port", "0", "--docker.port", "0", "--ffmpeg.port", port,
		"--path.sysfs", root, "--energy.interval", "500ms"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			e.cmd.Env = append(e.cmd.Env, kv)
		}
	}
	e.cmd.Env = append(e.cmd.Env, env...)
	e.cmd.Stdin, e.cmd.Stdout, e.cmd.Stderr, e.cmd.SysProcAttr = stdin, e.logs, e.logs, as
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.cmd.Process.Kill()
		e.cmd.Wait()
		if t.Failed() {
			t.Logf("worker-exporter log:\n%s", e.logs.String())
		}
	})
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		resp, err := http.Get("http://" + e.addr + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return e
}

func (e *exporter) scrape() map[string]float64 {
	e.t.Helper()
	_, body := exportertest.Get(e.t, "http://"+e.addr+"/metrics")
	series, err := otlptest.ParseProm(body)
	if err != nil {
		e.t.Fatal(err)
	}
	return series
}

// counted is the energy the zones attribution reads have counted so far.
func (e *exporter) counted() float64 {
	return e.meter.Added("intel-rapl:0") + e.meter.Added("intel-rapl:0:0")
}

func key(name string, labels ...string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[labels[i]] = labels[i+1]
	}
	return otlptest.Key(name, m)
}

// encode is a real ffmpeg: a lavfi test pattern paced in real time,
// encoded with libx264 at preset, its progress sent to url.
func encode(t *testing.T, preset string, seconds int, url string) *exec.Cmd {
	t.Helper()
	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-nostats", "-loglevel", "error", "-progress", url,
		"-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", preset, "-threads", "1", "-f", "null", "-")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// cpuSeconds is what the kernel reports a reaped child used.
func cpuSeconds(cmd *exec.Cmd) float64 {
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// TestTwoEncodes: two encodes of clearly different CPU cost over the same
// period, each linked to its own ffmpeg with no ?pid=, by the other end of
// its progress connection. Each stream's CPU time is the kernel's, its
// energy follows its CPU time, and the streams never get more than the
// zones counted.
func TestTwoEncodes(t *testing.T) {
	e := startExporter(t, nil, nil)
	slow := encode(t, "slow", 8, "http://"+e.addr+"/ingest/slow")
	fast := encode(t, "ultrafast", 8, "http://"+e.addr+"/ingest/fast")
	pids := map[string]int{"slow": slow.Process.Pid, "fast": fast.Process.Pid}
	linked := map[string]bool{}

	// Scrape while they run, and after, until both streams' final windows
	// are in (the exporter unlinks a stream in the window that shares out
	// its last energy).
	exited := make(chan error, 2)
	go func() { exited <- slow.Wait() }()
	go func() { exited <- fast.Wait() }()
	running := 2
	var last map[string]float64
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last scrape:\n%v", last)
		}
	})
	exportertest.WaitFor(t, 45*time.Second, func() bool {
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("ffmpeg: %v", err)
			}
			running--
		default:
		}
		last = e.scrape()
		var sum float64
		for _, name := range []string{"slow", "fast"} {
			sum += streamJoules(last, name, "cpu")
			if _, ok := last[key("ffmpeg_stream_process_info", "command", "ffmpeg", "pid", strconv.Itoa(pids[name]), "stream", name)]; ok {
				linked[name] = true
			}
			for k := range last {
				if strings.HasPrefix(k, "ffmpeg_stream_process_info{") && strings.Contains(k, `stream="`+name+`"`) &&
					!strings.Contains(k, `pid="`+strconv.Itoa(pids[name])+`"`) {
					t.Fatalf("%s linked to another process: %s", name, k)
				}
			}
		}
		if counted := e.counted(); sum > counted {
			t.Fatalf("streams got %.3f J, the zones counted %.3f J", sum, counted)
		}
		return running == 0 && !hasPrefix(last, "ffmpeg_stream_process_info{")
	})

	used := map[string]float64{"slow": cpuSeconds(slow), "fast": cpuSeconds(fast)}
	joules := map[string]float64{}
	for _, name := range []string{"slow", "fast"} {
		if !linked[name] {
			t.Errorf("%s never linked to its ffmpeg (pid %d)", name, pids[name])
		}
		got, ok := last[key("ffmpeg_stream_cpu_seconds_total", "stream", name)]
		if !ok || math.Abs(got-used[name]) > 0.10*used[name] {
			t.Errorf("%s: ffmpeg_stream_cpu_seconds_total %.3f, the kernel says %.3f s", name, got, used[name])
		}
		joules[name] = streamJoules(last, name, "cpu")
		if joules[name] <= 0 {
			t.Errorf("%s: no energy", name)
		}
		if _, ok := last[key("ffmpeg_stream_energy_joules_total", "device", "gpu", "mode", "dynamic", "stream", name)]; ok {
			t.Errorf("%s: GPU energy served with no GPU", name)
		}
		frames := last[key("ffmpeg_total_frames", "stream", name)]
		if jpf := last[key("ffmpeg_stream_energy_per_frame_joules", "stream", name)]; frames < 1 || math.Abs(jpf*frames-joules[name]) > 1e-6*joules[name] {
			t.Errorf("%s: %v J per frame for %v J over %v frames", name, jpf, joules[name], frames)
		}
	}
	t.Logf("CPU s (kernel): %v; J: %v", used, joules)
	if used["slow"] < 1.5*used["fast"] {
		t.Fatalf("slow used %.2f s of CPU, fast %.2f s: not clearly different", used["slow"], used["fast"])
	}
	if want, got := used["slow"]/used["fast"], joules["slow"]/joules["fast"]; math.Abs(got-want) > 0.15*want {
		t.Errorf("energy ratio slow/fast %.2f, CPU time ratio %.2f", got, want)
	}
	if last[key("ffmpeg_energy_available", "device", "cpu")] != 1 {
		t.Error("RAPL reported unavailable")
	}
}

// streamJoules is a stream's energy on device: its dynamic energy and its
// share of idle power.
func streamJoules(series map[string]float64, stream, device string) float64 {
	var j float64
	for _, mode := range []string{"dynamic", "idle"} {
		j += series[key("ffmpeg_stream_energy_joules_total", "device", device, "mode", mode, "stream", stream)]
	}
	return j
}

// TestLeaderboard: two real encodes of one ladder, libx264 ultrafast and
// medium, each profiled from its command line; the leaderboard's counters
// by encoder, preset and ladder count every frame and the pixels of every
// rung, rank the presets by pixels per joule in the order their CPU time
// says, and outlive the streams.
func TestLeaderboard(t *testing.T) {
	e := startExporter(t, nil, nil, "--stream.retention", "1s")
	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	run := func(preset string) *exec.Cmd {
		cmd := exec.Command(ffmpeg, "-hide_banner", "-nostats", "-loglevel", "error", "-progress", "http://"+e.addr+"/ingest/"+preset,
			"-re", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-t", "6",
			"-c:v", "libx264", "-preset", preset, "-s", "640x360", "-r", "25", "-threads", "1", "-f", "null", "-")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	cmds := map[string]*exec.Cmd{"ultrafast": run("ultrafast"), "medium": run("medium")}
	for name, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("ffmpeg %s: %v", name, err)
		}
	}
	// The streams go after their retention, their profiles with them; the
	// leaderboard stays.
	var s map[string]float64
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		s = e.scrape()
		return !hasPrefix(s, "ffmpeg_total_frames{") && !hasPrefix(s, "ffmpeg_stream_encode_info{")
	})
	ppj := map[string]float64{}
	for preset, cmd := range cmds {
		labels := []string{"encoder", "libx264", "preset", preset, "ladder", "640x360@25"}
		frames, ok := s[key("ffmpeg_encode_frames_total", labels...)]
		pixels := s[key("ffmpeg_encode_output_pixels_total", labels...)]
		var joules float64
		for _, mode := range []string{"dynamic", "idle"} {
			joules += s[key("ffmpeg_encode_energy_joules_total", append(labels, "device", "cpu", "mode", mode)...)]
		}
		if !ok || frames < 140 || frames > 160 || pixels != frames*640*360 || joules <= 0 || s[key("ffmpeg_encode_seconds_total", labels...)] < 4 {
			t.Errorf("%s after its stream went: %v frames, %v pixels, %v J, want its 150 frames of 640x360 and its energy", preset, frames, pixels, joules)
		}
		ppj[preset] = pixels / joules
		t.Logf("%s: %.0f frames, %.3g pixels, %.2f J, %.3g pixels/J, %.2f CPU s", preset, frames, pixels, joules, ppj[preset], cpuSeconds(cmd))
	}
	if cpuSeconds(cmds["medium"]) > cpuSeconds(cmds["ultrafast"]) != (ppj["ultrafast"] > ppj["medium"]) {
		t.Errorf("pixels per joule ultrafast %.3g, medium %.3g: not in the order their CPU time says (%.2f s, %.2f s)",
			ppj["ultrafast"], ppj["medium"], cpuSeconds(cmds["ultrafast"]), cpuSeconds(cmds["medium"]))
	}
}

func hasPrefix(series map[string]float64, prefix string) bool {
	for k := range series {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// nobody runs the exporter as uid 65534, with the capabilities given.
func nobody(t *testing.T, caps ...uintptr) *syscall.SysProcAttr {
	t.Helper()
	peer.RequireRoot(t, "the exporter runs as another user than ffmpeg")
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, AmbientCaps: caps}
}

// TestAnotherUser: ffmpeg runs as root, the exporter as nobody, so the
// kernel refuses it root's /proc/PID/fd. The stream is served, unlinked,
// with the reason; so is one naming its process with ?pid=, which cannot
// be checked to hold the connection; with CAP_DAC_READ_SEARCH and
// CAP_SYS_PTRACE both link.
func TestAnotherUser(t *testing.T) {
	const capDACReadSearch, capSysPtrace = 2, 19
	for _, c := range []struct {
		name string
		caps []uintptr
	}{{"without capabilities", nil}, {"with CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE", []uintptr{capDACReadSearch, capSysPtrace}}} {
		t.Run(c.name, func(t *testing.T) {
			e := startExporter(t, nobody(t, c.caps...), nil)
			auto := encode(t, "ultrafast", 4, "http://"+e.addr+"/ingest/auto")
			// sh execs ffmpeg, which keeps the shell's PID: $$ names it.
			ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
			byPID := exec.Command("sh", "-c", `exec "$0" -hide_banner -nostats -loglevel error -progress "http://`+e.addr+`/ingest/bypid?pid=$$" `+
				`-re -f lavfi -i testsrc2=size=320x240:rate=25 -t 4 -c:v libx264 -preset ultrafast -threads 1 -f null -`, ffmpeg)
			if err := byPID.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { byPID.Process.Kill(); byPID.Wait() })

			autoInfo := key("ffmpeg_stream_process_info", "command", "ffmpeg", "pid", strconv.Itoa(auto.Process.Pid), "stream", "auto")
			byPIDInfo := key("ffmpeg_stream_process_info", "command", "ffmpeg", "pid", strconv.Itoa(byPID.Process.Pid), "stream", "bypid")
			denied := key("ffmpeg_stream_unlinked", "reason", "permission", "stream", "auto")
			deniedByPID := key("ffmpeg_stream_unlinked", "reason", "permission", "stream", "bypid")
			var s map[string]float64
			exportertest.WaitFor(t, 15*time.Second, func() bool {
				s = e.scrape()
				_, a := s[autoInfo]
				_, d := s[denied]
				_, b := s[byPIDInfo]
				_, db := s[deniedByPID]
				return (a || d) && (b || db)
			})
			_, linked := s[autoInfo]
			_, linkedByPID := s[byPIDInfo]
			if linkedByPID == (c.caps == nil) {
				t.Errorf("bypid linked %v, want %v", linkedByPID, c.caps != nil)
			}
			_, frames := s[key("ffmpeg_total_frames", "stream", "auto")]
			if !frames {
				t.Error("the unlinked stream's progress is not served")
			}
			if c.caps == nil {
				_, cpu := s[key("ffmpeg_stream_cpu_seconds_total", "stream", "auto")]
				if linked || cpu || s[key("ffmpeg_stream_link_failures_total", "reason", "permission")] < 1 {
					t.Errorf("without capabilities: linked %v, cpu series %v, permission failures %v",
						linked, cpu, s[key("ffmpeg_stream_link_failures_total", "reason", "permission")])
				}
			} else if !linked {
				t.Errorf("with the capabilities, auto not linked: %v", s)
			}
		})
	}
}

// TestStdin: ffmpeg's stderr piped into the exporter's standard input
// (--stdin) links the stream to ffmpeg, the writer of the pipe.
func TestStdin(t *testing.T) {
	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(ffmpeg, "-hide_banner", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "4",
		"-c:v", "libx264", "-preset", "ultrafast", "-threads", "1", "-f", "null", "-")
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close() // ffmpeg is the pipe's only writer, as in `ffmpeg ... 2>&1 | worker-exporter --stdin`
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	e := startExporter(t, nil, r, "--stdin", "--stdin.stream", "piped")
	info := key("ffmpeg_stream_process_info", "command", "ffmpeg", "pid", strconv.Itoa(cmd.Process.Pid), "stream", "piped")
	exportertest.WaitFor(t, 15*time.Second, func() bool {
		_, ok := e.scrape()[info]
		return ok
	})
}
