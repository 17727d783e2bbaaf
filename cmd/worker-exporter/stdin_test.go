package main

import (
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
)

// TestStdinEndsFFmpegSourceOnly: the worker built as a binary, fed through
// --stdin. When its input ends and the linger is over, the ffmpeg port
// closes and the other ports keep serving; SIGTERM then ends the worker
// cleanly (the stdin reader does not hold it).
func TestStdinEndsFFmpegSourceOnly(t *testing.T) {
	bin, cleanup := exportertest.Build("worker-exporter")
	defer cleanup()
	cpu, ffm := exportertest.FreePort(t), exportertest.FreePort(t)
	cmd := exec.Command(bin, "--web.listen-host", "127.0.0.1", "--cpu.port", cpu, "--ffmpeg.port", ffm, "--gpu.port", "0", "--docker.port", "0",
		"--path.sysfs", t.TempDir(), "--stdin", "--stdin.stream", "piped", "--stdin.linger", "1s")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &exportertest.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	}()
	answers := func(port string) bool {
		resp, err := http.Get("http://127.0.0.1:" + port + "/metrics")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(body), "# HELP")
	}
	exportertest.WaitFor(t, 10*time.Second, func() bool { return answers(cpu) && answers(ffm) })
	io.WriteString(in, "frame=7\nprogress=continue\n")
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		_, body := exportertest.Get(t, "http://127.0.0.1:"+ffm+"/metrics")
		return strings.Contains(body, `ffmpeg_total_frames{stream="piped"} 7`)
	})
	in.Close()
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+ffm, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-exited:
		t.Fatalf("the whole worker ended with its stdin: %v", err)
	default:
	}
	if !answers(cpu) {
		t.Error("the cpu port stopped with the ffmpeg source")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit within 10 s of SIGTERM")
	}
}
