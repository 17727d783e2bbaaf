package energy

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
)

// TestNothingSecretExported: a real ffmpeg whose command line and stderr
// carry a stream key, a token, credentials, a customer's path, metadata
// and headers reports its progress and its stderr (at -loglevel info, so
// the header with its Input and Output lines is sent) to the exporter,
// which profiles the encode from both and from the command line: none of
// those strings appears in /metrics, /health or the exporter's log, while
// the profile itself is served, and none is in the OTLP push.
func TestNothingSecretExported(t *testing.T) {
	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	secrets := []string{"sk_live_SECRET", "hunter2", "s3cr3tpass", "customer-SECRET", "SECRET_TITLE", "SECRET_HEADER", "SECRET_AGENT"}

	// The input: a short clip served over HTTP under a stream key and a token.
	dir := t.TempDir()
	clip := filepath.Join(dir, "clip.ts")
	if out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
		"-t", "4", "-c:v", "libx264", "-preset", "ultrafast", clip).CombinedOutput(); err != nil {
		t.Fatalf("making the clip: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, clip) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	input := "http://user:s3cr3tpass@" + ln.Addr().String() + "/live/sk_live_SECRET?token=hunter2"
	out := filepath.Join(dir, "customer-SECRET", "out.mp4")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}

	recv, endpoint := otlptest.StartHTTP(t)
	e := startExporterEnv(t, nil, nil, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_METRIC_EXPORT_INTERVAL=500"})
	cmd := exec.Command(ffmpeg, "-hide_banner", "-nostats", "-loglevel", "info", "-progress", "http://"+e.addr+"/ingest/job",
		"-headers", "X-Key: SECRET_HEADER\r\n", "-user_agent", "SECRET_AGENT", "-re", "-i", input,
		"-c:v", "libx264", "-preset", "veryfast", "-s", "320x180", "-metadata", "title=SECRET_TITLE", "-y", out)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// ffmpeg's stderr, to the same stream's second ingest: the README's curl pipe.
	var logged strings.Builder
	posted := make(chan error, 1)
	go func() {
		resp, err := http.Post("http://"+e.addr+"/ingest/job-log", "text/plain", io.TeeReader(stderr, &logged))
		if err == nil {
			resp.Body.Close()
		}
		posted <- err
	}()

	var body string
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		_, body = exportertest.Get(t, "http://"+e.addr+"/metrics")
		return strings.Contains(body, `ffmpeg_stream_encode_info{encoder="libx264",ladder="320x180@25",preset="veryfast"`)
	})
	// The post ends at the end of ffmpeg's stderr; only then may Wait close
	// the pipe (os/exec: Wait closes it, whatever still reads it).
	if err := <-posted; err != nil {
		t.Fatalf("posting stderr: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	_, health := exportertest.Get(t, "http://"+e.addr+"/health")
	_, final := exportertest.Get(t, "http://"+e.addr+"/metrics")
	if !strings.Contains(logged.String(), "sk_live_SECRET") && !strings.Contains(logged.String(), "customer-SECRET") {
		t.Fatalf("ffmpeg's stderr carried none of the secrets, so this test proves nothing:\n%s", logged.String())
	}
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		for k := range recv.Points() {
			if strings.HasPrefix(k, "ffmpeg_stream_encode_info{") {
				return true
			}
		}
		return false
	})
	var pushed strings.Builder
	for k := range recv.Points() {
		pushed.WriteString(k + "\n")
	}
	for k, v := range recv.Resource() {
		pushed.WriteString(k + "=" + v + "\n")
	}
	for where, text := range map[string]string{"/metrics": body + final, "/health": health, "the exporter's log": e.logs.String(), "the OTLP push": pushed.String()} {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows %q", where, s)
			}
		}
	}
}
