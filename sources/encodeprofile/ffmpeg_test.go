package encodeprofile

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
)

// These tests run the real ffmpeg (Debian's package) and read each
// profile from its stderr and from its command line.

func requireFFmpeg(t *testing.T) string {
	return peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
}

// source720 is one second of 1280x720 at 30 fps.
var source720 = []string{"-nostdin", "-hide_banner", "-t", "1", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"}

// encode runs ffmpeg in dir and returns its argument vector and stderr.
func encode(t *testing.T, dir string, args ...string) ([]string, string) {
	t.Helper()
	bin := requireFFmpeg(t)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return append([]string{bin}, args...), stderr.String()
}

// readStderr feeds stderr as the ingest does: split at '\n' and '\r'.
func readStderr(stderr string) Profile {
	var s Stderr
	for _, l := range strings.FieldsFunc(stderr, func(r rune) bool { return r == '\n' || r == '\r' }) {
		s.Line([]byte(l))
	}
	return s.Profile()
}

func TestRealFFmpegProfiles(t *testing.T) {
	requireFFmpeg(t)
	dir := t.TempDir()
	x264 := func(preset string) []string { return []string{"-c:v", "libx264", "-preset", preset} }
	cat := func(parts ...[]string) []string {
		var all []string
		for _, p := range parts {
			all = append(all, p...)
		}
		return all
	}
	for _, c := range []struct {
		name            string
		args            []string
		stderr, cmdline wantProfile
	}{
		{"libx264 ultrafast", cat(source720, x264("ultrafast"), []string{"-f", "null", "-"}),
			wantProfile{"libx264", Unknown, "1280x720@30", Unknown, 1280 * 720},
			wantProfile{"libx264", "ultrafast", "?x?@?", "none", 0}},
		{"libx264 medium", cat(source720, x264("medium"), []string{"-f", "null", "-"}),
			wantProfile{"libx264", Unknown, "1280x720@30", Unknown, 1280 * 720},
			wantProfile{"libx264", "medium", "?x?@?", "none", 0}},
		{"-s 640x360", cat(source720, x264("ultrafast"), []string{"-s", "640x360", "s.mp4"}),
			wantProfile{"libx264", Unknown, "640x360@30", Unknown, 640 * 360},
			wantProfile{"libx264", "ultrafast", "640x360@?", "none", 640 * 360}},
		{"-vf scale=854:480", cat(source720, x264("ultrafast"), []string{"-vf", "scale=854:480", "-f", "flv", "vf.flv"}),
			wantProfile{"libx264", Unknown, "854x480@30", Unknown, 854 * 480},
			wantProfile{"libx264", "ultrafast", "854x480@?", "none", 854 * 480}},
		{"-s before -vf is applied last", cat(source720, x264("ultrafast"), []string{"-s", "640x360", "-vf", "scale=854:480", "last.mp4"}),
			wantProfile{"libx264", Unknown, "640x360@30", Unknown, 640 * 360},
			wantProfile{"libx264", "ultrafast", "640x360@?", "none", 640 * 360}},
		{"two outputs with -map", cat(source720,
			[]string{"-map", "0:v"}, x264("ultrafast"), []string{"-s", "1280x720", "a.mp4"},
			[]string{"-map", "0:v"}, x264("ultrafast"), []string{"-s", "640x360", "-r", "15", "b.mp4"}),
			wantProfile{"libx264", Unknown, "1280x720@30,640x360@15", Unknown, 1280*720 + 640*360/2},
			wantProfile{"libx264", "ultrafast", "1280x720@?,640x360@15", "none", 0}},
		{"three rungs with split=3", cat(source720,
			[]string{"-filter_complex", "[0:v]split=3[a][b][c];[b]scale=640:360[b2];[c]scale=426:240,fps=15[c2]"},
			[]string{"-map", "[a]"}, x264("veryfast"), []string{"-r", "30", "r1.mp4"},
			[]string{"-map", "[b2]"}, x264("veryfast"), []string{"r2.mp4"},
			[]string{"-map", "[c2]"}, x264("veryfast"), []string{"r3.mp4"}),
			wantProfile{"libx264", Unknown, "1280x720@30,640x360@30,426x240@15", Unknown, 1280*720 + 640*360 + 426*240/2},
			wantProfile{"libx264", "veryfast", "640x360@?,426x240@15,?x?@30", "none", 0}},
		{"one .ts, -c:v:0 and -c:v:1", cat(source720,
			[]string{"-map", "0:v", "-map", "0:v", "-c:v:0", "libx264", "-preset:v:0", "ultrafast", "-c:v:1", "libx264",
				"-preset:v:1", "ultrafast", "-s:v:1", "640x360", "-f", "mpegts", "ladder.ts"}),
			wantProfile{"libx264", Unknown, "1280x720@30,640x360@30", Unknown, 1280*720 + 640*360},
			wantProfile{"libx264", "ultrafast", "640x360@?,?x?@?", "none", 0}},
		{"one .ts, an encode and a copy", cat(source720,
			[]string{"-map", "0:v", "-map", "0:v", "-c:v:0", "libx264", "-preset", "ultrafast", "-s:v:0", "640x360", "-c:v:1", "copy",
				"-f", "mpegts", "copy.ts"}),
			wantProfile{"libx264", Unknown, "1280x720@?,640x360@30", Unknown, 640 * 360}, // the copy's rate is not said
			wantProfile{"libx264", "ultrafast", "640x360@?,?x?@?", "none", 640 * 360}},
		{"libx265 with an AVOption and level prefixes", cat([]string{"-loglevel", "level+info"}, source720,
			[]string{"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-s", "320x180", "hevc.mp4"}),
			wantProfile{"libx265", Unknown, "320x180@30", Unknown, 320 * 180},
			wantProfile{"libx265", "ultrafast", "320x180@?", "none", 320 * 180}},
		{"libsvtav1, a numbered preset", cat(source720, []string{"-c:v", "libsvtav1", "-preset", "12", "-vf", "scale=320:180,fps=15", "av1.mkv"}),
			wantProfile{"libsvtav1", Unknown, "320x180@15", Unknown, 320 * 180},
			wantProfile{"libsvtav1", "12", "320x180@15", "none", 320 * 180}},
		{"stream copy", cat(source720, []string{"-c:v", "copy", "-f", "nut", "copy.nut"}),
			wantProfile{Copy, Default, "1280x720@?", Unknown, 0}, // the copy's rate is not said; it encodes no pixels
			wantProfile{Copy, Default, "?x?@?", "none", 0}},
		// Forms the command line does not follow: Unknown there, while
		// stderr still says what ffmpeg did.
		{"scale=-2:360", cat(source720, x264("ultrafast"), []string{"-vf", "scale=-2:360", "even.mp4"}),
			wantProfile{"libx264", Unknown, "640x360@30", Unknown, 640 * 360},
			wantProfile{"libx264", "ultrafast", "?x360@?", "none", 0}},
		{"iw/2", cat(source720, x264("ultrafast"), []string{"-vf", "scale=iw/2:ih/2", "half.mp4"}),
			wantProfile{"libx264", Unknown, "640x360@30", Unknown, 640 * 360},
			wantProfile{"libx264", "ultrafast", "?x?@?", "none", 0}},
		{"-filter_complex_script", cat(source720, []string{"-filter_complex_script", "graph.txt", "-map", "[v]"}, x264("ultrafast"), []string{"script.mp4"}),
			wantProfile{"libx264", Unknown, "854x480@30", Unknown, 854 * 480},
			wantProfile{Unknown, Unknown, Unknown, "none", 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, "graph.txt"), []byte("[0:v]scale=854:480[v]"), 0o644); err != nil {
				t.Fatal(err)
			}
			argv, stderr := encode(t, dir, append(c.args, "-y")...)
			fromStderr, fromCmdline := readStderr(stderr), FromArgs(argv)
			c.stderr.check(t, "stderr", fromStderr)
			c.cmdline.check(t, "cmdline", fromCmdline)

			// Merged, each field comes from the most trusted place that
			// knows it: stderr's ladder and encoder, the command line's
			// preset (stderr shows none but a copy's).
			m := Merge(fromStderr, fromCmdline)
			if m.Ladder != fromStderr.Ladder || m.Encoder != fromStderr.Encoder {
				t.Errorf("merged %+v, want stderr's ladder and encoder", m)
			}
			if want := fromCmdline.Preset; want.known() && !fromStderr.Preset.known() && m.Preset != want {
				t.Errorf("merged preset %+v, want %+v", m.Preset, want)
			}
			if err := checkProfile(m); err != nil {
				t.Error(err)
			}
		})
	}
}

// A running encode's command line, read where the exporter reads it:
// /proc/PID/cmdline of the linked process.
func TestRealFFmpegProcCmdline(t *testing.T) {
	bin := requireFFmpeg(t)
	cmd := exec.Command(bin, "-nostdin", "-hide_banner", "-re", "-t", "2", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-c:v", "libx264", "-preset", "veryfast", "-s", "320x180", "-r", "15", "-f", "null", "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	var p Profile
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		var err error
		p, err = FromProcess("/proc", cmd.Process.Pid)
		return err == nil // ErrNotFFmpeg until the exec
	})
	wantProfile{"libx264", "veryfast", "320x180@15", "none", 320 * 180}.check(t, "/proc cmdline", p)

	if err := cmd.Wait(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, stderr.String())
	}
	wantProfile{"libx264", Unknown, "320x180@15", Unknown, 320 * 180}.check(t, "its stderr", readStderr(stderr.String()))
	m := Merge(readStderr(stderr.String()), p)
	if m.Sources() != "stderr+cmdline" || m.Preset.Label != "veryfast" {
		t.Errorf("merged %+v from %s", m, m.Sources())
	}
}

// A real encode whose input URL, headers, user agent, output path,
// metadata and drawtext all carry secrets: none of it reaches a profile.
func TestRealFFmpegSecretsStayOut(t *testing.T) {
	requireFFmpeg(t)
	dir := t.TempDir()
	encode(t, dir, "-nostdin", "-t", "1", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-c:v", "libx264", "-preset", "ultrafast", "-f", "flv", "src.flv")
	src, err := os.ReadFile(filepath.Join(dir, "src.flv"))
	if err != nil {
		t.Fatal(err)
	}
	var sawHeader atomic.Bool
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawHeader.Store(r.Header.Get("X-Key") == "SECRET" && strings.Contains(r.UserAgent(), "SECRET"))
		w.Header().Set("Content-Type", "video/x-flv")
		_, _ = w.Write(src)
	}))
	defer origin.Close()
	if err := os.Mkdir(filepath.Join(dir, "customer-SECRET"), 0o755); err != nil {
		t.Fatal(err)
	}
	argv, stderr := encode(t, dir, "-nostdin", "-headers", "X-Key: SECRET\r\n", "-user_agent", "Mozilla/5.0 SECRET",
		"-i", origin.URL+"/live/sk_live_SECRET?token=hunter2",
		"-metadata", "title=SECRET", "-metadata:s:v:0", "handler_name=SECRET",
		"-vf", "drawtext=text='SECRET hunter2':x=1:y=1,scale=320:180",
		"-c:v", "libx264", "-preset", "ultrafast", "-f", "flv", "-y", "customer-SECRET/sk_live_SECRET-hunter2.flv")
	// The secrets did reach ffmpeg, its command line and its stderr.
	if !sawHeader.Load() {
		t.Error("the origin never saw the secret header and user agent")
	}
	for _, s := range []string{"sk_live_SECRET", "hunter2", "title           : SECRET"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr lacks %q: the test would prove nothing", s)
		}
	}
	fromStderr, fromCmdline := readStderr(stderr), FromArgs(argv)
	wantProfile{"libx264", Unknown, "320x180@30", Unknown, 320 * 180}.check(t, "stderr", fromStderr)
	wantProfile{"libx264", "ultrafast", "320x180@?", "none", 320 * 180}.check(t, "cmdline", fromCmdline)
	for name, p := range map[string]Profile{"stderr": fromStderr, "cmdline": fromCmdline, "merged": Merge(fromStderr, fromCmdline)} {
		assertNoSecret(t, name, p)
	}
}

// The caller's declaration travels in the -progress URL's query, which
// ffmpeg sends through verbatim: the URL profile as the ingest reads it.
func TestRealFFmpegProgressURL(t *testing.T) {
	requireFFmpeg(t)
	type result struct {
		p   Profile
		err error
	}
	got := make(chan result, 4)
	ingest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := FromQuery(r.URL.Query())
		got <- result{p, err}
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer ingest.Close()
	args := append(append([]string{}, source720...),
		"-progress", ingest.URL+"/ingest?stream=cam1&encoder=libx264&preset=ultrafast&ladder=1280x720@30,640x360@15",
		"-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast", "-f", "null", "-",
		"-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast", "-s", "640x360", "-r", "15", "-f", "null", "-")
	argv, stderr := encode(t, t.TempDir(), args...)
	var r result
	select {
	case r = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("ffmpeg never posted its progress")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := wantProfile{"libx264", "ultrafast", "1280x720@30,640x360@15", Unknown, 1280*720 + 640*360/2}
	want.check(t, "url", r.p)
	// Merged, the URL wins every field it declares; the three agree here.
	fromStderr := readStderr(stderr)
	m := Merge(FromArgs(argv), fromStderr, r.p)
	if m.Sources() != "url" || m.Ladder.Label != fromStderr.Ladder.Label || m.Encoder.Label != fromStderr.Encoder.Label {
		t.Errorf("merged %+v from %s; stderr says %+v", m, m.Sources(), fromStderr)
	}
}
