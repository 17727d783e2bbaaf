package energy

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
)

// TestLadderPixels: a real three-rung ladder (split=3, the third rung at
// half the rate), its profile given in the ingest URL as upstream's agent
// sends it. The leaderboard's pixels equal the sum over the rungs of
// W × H × the frames ffmpeg wrote to each, counted by ffprobe in the files
// (progress's frame= counts the first output only), within a frame a rung.
func TestLadderPixels(t *testing.T) {
	e := startExporter(t, nil, nil, "--stream.retention", "1s")
	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	ffprobe := peer.Require(t, "ffprobe", "apt-get install -y ffmpeg")
	const ladder = "1280x720@30,640x360@30,426x240@15"
	rungs := []struct {
		file string
		w, h int
	}{{"r1.mp4", 1280, 720}, {"r2.mp4", 640, 360}, {"r3.mp4", 426, 240}}
	dir := t.TempDir()
	args := []string{"-hide_banner", "-nostats", "-loglevel", "error",
		"-progress", "http://" + e.addr + "/ingest/ladder?encoder=libx264&preset=ultrafast&ladder=" + ladder,
		"-re", "-t", "4", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", // -t before -i: it bounds every output
		"-filter_complex", "[0:v]split=3[a][b][c];[b]scale=640:360[b2];[c]scale=426:240,fps=15[c2]"}
	for i, label := range []string{"[a]", "[b2]", "[c2]"} {
		args = append(args, "-map", label, "-c:v", "libx264", "-preset", "ultrafast", "-threads", "1", filepath.Join(dir, rungs[i].file))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, ffmpeg, args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}

	var written, oneFrameEach float64
	for _, r := range rungs {
		out, err := exec.Command(ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
			"-show_entries", "stream=nb_read_frames,width,height", "-of", "csv=p=0", filepath.Join(dir, r.file)).Output()
		if err != nil {
			t.Fatalf("ffprobe %s: %v", r.file, err)
		}
		f := strings.Split(strings.TrimSpace(string(out)), ",") // width,height,frames
		frames, err := strconv.Atoi(f[len(f)-1])
		if err != nil || len(f) != 3 || f[0] != strconv.Itoa(r.w) || f[1] != strconv.Itoa(r.h) {
			t.Fatalf("ffprobe %s: %q, want %dx%d and a frame count", r.file, out, r.w, r.h)
		}
		written += float64(frames * r.w * r.h)
		oneFrameEach += float64(r.w * r.h)
		t.Logf("%s: %d frames of %dx%d", r.file, frames, r.w, r.h)
	}

	var s map[string]float64
	exportertest.WaitFor(t, 30*time.Second, func() bool { // the stream gone, the leaderboard kept
		s = e.scrape()
		return !hasPrefix(s, "ffmpeg_total_frames{")
	})
	labels := []string{"encoder", "libx264", "preset", "ultrafast", "ladder", ladder}
	frames, ok := s[key("ffmpeg_encode_frames_total", labels...)]
	pixels := s[key("ffmpeg_encode_output_pixels_total", labels...)]
	if !ok || frames < 100 {
		t.Fatalf("leaderboard of %s: %v frames (%v), want the encode's 120", ladder, frames, ok)
	}
	if d := pixels - written; d < -oneFrameEach || d > oneFrameEach {
		t.Errorf("leaderboard pixels %.0f, the rungs' files hold %.0f: off by %.0f, more than a frame a rung (%.0f)", pixels, written, d, oneFrameEach)
	}
	t.Logf("%s: %.0f frames, %.0f pixels counted, %.0f written", ladder, frames, pixels, written)
}
