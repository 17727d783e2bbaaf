package main

// End-to-end tests: the built ffmpeg-exporter binary fed by the real ffmpeg
// from Debian's package, scraped over HTTP, checked by promtool, and pushing
// OTLP to an in-process receiver.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/cmd/internal/exporters"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
)

var binary string

func TestMain(m *testing.M) { exportertest.Main(m, "ffmpeg-exporter", &binary) }

func start(t *testing.T, stdin io.Reader, env []string, args ...string) *exportertest.Process {
	t.Helper()
	return exportertest.Start(t, binary, stdin, env, args...)
}

func series(name, stream string) string {
	return otlptest.Key(name, map[string]string{"stream": stream})
}

// encode is a real ffmpeg encoding a lavfi test source in realtime.
type encode struct {
	cmd    *exec.Cmd
	stderr *exportertest.Buffer
}

// frames is what ffmpeg itself reported last as frames encoded.
var framesRe = regexp.MustCompile(`frame=\s*(\d+)`)

func (enc *encode) frames(t *testing.T) float64 {
	t.Helper()
	m := framesRe.FindAllStringSubmatch(enc.stderr.String(), -1)
	if len(m) == 0 {
		t.Fatalf("ffmpeg reported no frames:\n%s", enc.stderr.String())
	}
	n, _ := strconv.ParseFloat(m[len(m)-1][1], 64)
	return n
}

// ffmpegArgs encodes seconds of a 25 fps test picture in realtime.
func ffmpegArgs(seconds int, extra ...string) []string {
	args := []string{"-hide_banner", "-nostdin", "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
		"-t", strconv.Itoa(seconds), "-c:v", "mpeg4", "-f", "null", "-"}
	return append(args, extra...)
}

func startEncode(t *testing.T, args ...string) *encode {
	t.Helper()
	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	enc := &encode{cmd: exec.Command(ffmpeg, args...), stderr: &exportertest.Buffer{}}
	enc.cmd.Stderr = enc.stderr
	if err := enc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enc.cmd.Process.Kill(); enc.cmd.Wait() })
	return enc
}

func (enc *encode) wait(t *testing.T) {
	t.Helper()
	if err := enc.cmd.Wait(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, enc.stderr.String())
	}
}

// TestLiveProgress: ffmpeg -progress http://.../ingest/NAME moves the
// metrics while it runs; at the end the frame count is ffmpeg's own, the
// stream is inactive, promtool accepts the scrape, and the OTLP push carries
// the same values.
func TestLiveProgress(t *testing.T) {
	recv, endpoint := otlptest.StartGRPC(t)
	e := start(t, nil, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + endpoint, "OTEL_METRIC_EXPORT_INTERVAL=200"})
	enc := startEncode(t, ffmpegArgs(4, "-progress", "http://"+e.Addr+"/ingest/live1")...)

	active, fps := series("ffmpeg_stream_active", "live1"), series("ffmpeg_fps", "live1")
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		s := e.Scrape(t)
		return s[active] == 1 && s[fps] > 0
	})
	running := e.Scrape(t)[series("ffmpeg_total_frames", "live1")]

	enc.wait(t)
	exportertest.WaitFor(t, 5*time.Second, func() bool { return e.Scrape(t)[active] == 0 })
	final := e.Scrape(t)
	frames := final[series("ffmpeg_total_frames", "live1")]
	if want := enc.frames(t); frames != want || want != 100 {
		t.Errorf("ffmpeg_total_frames %v, ffmpeg reported %v, want 100 (4 s at 25 fps)", frames, want)
	}
	if running >= frames {
		t.Errorf("frames while running (%v) not below the final count (%v): metrics did not move live", running, frames)
	}
	if v := final[series("ffmpeg_out_time_seconds", "live1")]; v < 3.9 || v > 4.1 {
		t.Errorf("ffmpeg_out_time_seconds %v, want about 4", v)
	}
	peer.CheckMetrics(t, e.ScrapeText(t))

	// The push path: the same series with the same values. The self-metrics
	// and the stream's CPU seconds move with every sample (each second), so
	// a scrape is compared with the push that followed it, tried again when
	// a sample fell between them.
	var diffs []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		scraped, exports := e.Scrape(t), recv.Exports()
		exportertest.WaitFor(t, 5*time.Second, func() bool { return recv.Exports() > exports })
		pushed := recv.Points()
		if diffs = diffs[:0]; pushed[series("ffmpeg_total_frames", "live1")] != frames || pushed[active] != 0 {
			diffs = append(diffs, "push has not caught up with the scrape")
		}
		for k, v := range scraped {
			if strings.HasPrefix(k, "ffmpeg_stream_last_update") {
				continue
			}
			if got, ok := pushed[k]; !ok || got != v {
				diffs = append(diffs, fmt.Sprintf("%s: scraped %v, pushed %v (%v)", k, v, got, ok))
			}
		}
		if len(diffs) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, d := range diffs {
		t.Error(d)
	}
}

// TestTwoEncodesAtOnce: two streams side by side keep their own values.
func TestTwoEncodesAtOnce(t *testing.T) {
	e := start(t, nil, nil)
	a := startEncode(t, ffmpegArgs(2, "-progress", "http://"+e.Addr+"/ingest/a")...)
	b := startEncode(t, ffmpegArgs(3, "-progress", "http://"+e.Addr+"/ingest?stream=b")...)
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		s := e.Scrape(t)
		return s[series("ffmpeg_stream_active", "a")] == 1 && s[series("ffmpeg_stream_active", "b")] == 1
	})
	a.wait(t)
	b.wait(t)
	exportertest.WaitFor(t, 5*time.Second, func() bool {
		s := e.Scrape(t)
		return s[series("ffmpeg_stream_active", "a")] == 0 && s[series("ffmpeg_stream_active", "b")] == 0
	})
	s := e.Scrape(t)
	if got, want := s[series("ffmpeg_total_frames", "a")], a.frames(t); got != want || want != 50 {
		t.Errorf("stream a: %v frames, ffmpeg said %v (want 50)", got, want)
	}
	if got, want := s[series("ffmpeg_total_frames", "b")], b.frames(t); got != want || want != 75 {
		t.Errorf("stream b: %v frames, ffmpeg said %v (want 75)", got, want)
	}
}

// TestStderrThroughStdin: `ffmpeg ... 2>&1 | ffmpeg-exporter --stdin`, the
// classic stderr status lines read live, then the exporter exits by itself
// after --stdin.linger.
func TestStderrThroughStdin(t *testing.T) {
	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	enc := exec.Command(ffmpeg, append(ffmpegArgs(3), "-stats_period", "0.2")...)
	enc.Stderr = pw // 2>&1: the child writes straight into the exporter's stdin
	enc.Stdout = pw
	if err := enc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enc.Process.Kill(); enc.Wait() })
	pw.Close()
	e := start(t, pr, nil, "--stdin", "--stream", "piped", "--stdin.linger", "3s") // the old name of --stdin.stream
	pr.Close()

	active := series("ffmpeg_stream_active", "piped")
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		s := e.Scrape(t)
		return s[active] == 1 && s[series("ffmpeg_fps", "piped")] > 0
	})
	if err := enc.Wait(); err != nil {
		t.Fatal(err)
	}
	exportertest.WaitFor(t, 5*time.Second, func() bool { return e.Scrape(t)[active] == 0 })
	if got := e.Scrape(t)[series("ffmpeg_total_frames", "piped")]; got != 75 {
		t.Errorf("ffmpeg_total_frames %v, want 75 (3 s at 25 fps)", got)
	}
	exited := make(chan error, 1)
	go func() { exited <- e.Cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exporter exited with %v after stdin ended", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("exporter still running 10 s after stdin ended with --stdin.linger 3s")
	}
}

// TestGuideCurlPipe: the deployment guide's form,
// ffmpeg ... -progress pipe:1 2>&1 | curl -X POST --data-binary @- http://localhost:9506/ingest
func TestGuideCurlPipe(t *testing.T) {
	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	curl := peer.Require(t, "curl", "apt-get install -y curl")
	e := start(t, nil, nil)
	shell := fmt.Sprintf("%s %s -progress pipe:1 2>&1 | %s -sS -X POST --data-binary @- http://%s/ingest",
		ffmpeg, strings.Join(ffmpegArgs(1), " "), curl, e.Addr)
	if out, err := exec.Command("bash", "-o", "pipefail", "-c", shell).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", shell, err, out)
	}
	s := e.Scrape(t)
	if s[series("ffmpeg_total_frames", "default")] != 25 || s[series("ffmpeg_stream_active", "default")] != 0 {
		t.Errorf("after the guide's pipe: frames %v active %v, want 25 and 0",
			s[series("ffmpeg_total_frames", "default")], s[series("ffmpeg_stream_active", "default")])
	}
}

// TestSIGTERM: the exporter stops gracefully on SIGTERM, pushing a last export.
func TestSIGTERM(t *testing.T) {
	recv, endpoint := otlptest.StartHTTP(t)
	e := start(t, nil, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_METRIC_EXPORT_INTERVAL=3600000"})
	if err := e.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exited := make(chan error, 1)
	go func() { exited <- e.Cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("no exit within 10 s of SIGTERM")
	}
	if recv.Exports() == 0 {
		t.Error("no last OTLP export on SIGTERM")
	}
	if !strings.Contains(e.Logs.String(), "shutting down") {
		t.Errorf("log does not say it is shutting down:\n%s", e.Logs.String())
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--log.format", "xml"}, {"--ingest.max-streams", "0"}, {"--port", "70000"}, {"stray"}} {
		if err := exporters.FFmpeg().Run(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
