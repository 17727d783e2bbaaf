package main

// Issue 14 and 15 against the real ffmpeg: realtime lag, quantizers per
// output, log errors and warnings from stderr, one client per stream, and
// a stream limit served without overflow series.

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/otlptest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
)

func labelled(name string, labels ...string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[labels[i]] = labels[i+1]
	}
	return otlptest.Key(name, m)
}

// TestRealtimeLagGrows: a live (-re) encode too slow for realtime — x264
// veryslow on 1080p, one thread — shows ffmpeg_realtime_lag_seconds growing
// between scrapes, while ffmpeg itself reports a speed below 1.
func TestRealtimeLagGrows(t *testing.T) {
	e := start(t, nil, nil)
	startEncode(t, "-hide_banner", "-nostdin", "-re", "-f", "lavfi", "-i", "testsrc=size=1920x1080:rate=25", "-t", "60",
		"-c:v", "libx264", "-preset", "veryslow", "-tune", "zerolatency", "-threads", "1", "-f", "null", "-",
		"-progress", "http://"+e.Addr+"/ingest/slow")
	lag, speed := series("ffmpeg_realtime_lag_seconds", "slow"), series("ffmpeg_speed", "slow")
	var first map[string]float64
	exportertest.WaitFor(t, 60*time.Second, func() bool {
		first = e.Scrape(t)
		_, ok := first[lag]
		return ok && first[speed] > 0
	})
	later := first
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lag %v s, then %v s; ffmpeg_speed %v (this test needs an encode slower than realtime)", first[lag], later[lag], later[speed])
		}
	})
	exportertest.WaitFor(t, 60*time.Second, func() bool {
		later = e.Scrape(t)
		return later[lag] > first[lag]+1
	})
	if later[speed] >= 1 {
		t.Errorf("lag grew while ffmpeg reports a speed of %v", later[speed])
	}
	t.Logf("lag %.2f s, then %.2f s; ffmpeg's speed %.3gx", first[lag], later[lag], later[speed])
	if s := e.Scrape(t)[series("ffmpeg_stream_started_timestamp_seconds", "slow")]; s <= 0 || s > float64(time.Now().Unix()) {
		t.Errorf("ffmpeg_stream_started_timestamp_seconds %v", s)
	}
}

// TestQuantizerEveryOutput: an encode with two outputs (x264 and mpeg4)
// has a quantizer series for each, with the last q ffmpeg reported for it
// (x264's final report says -1: no quality, so its previous q stays).
func TestQuantizerEveryOutput(t *testing.T) {
	e := start(t, nil, nil)
	enc := startEncode(t, "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=4",
		"-map", "0", "-c:v", "libx264", "-f", "null", "-", "-map", "0", "-c:v", "mpeg4", "-f", "null", "-",
		"-stats_period", "0.1", "-progress", "http://"+e.Addr+"/ingest/two")
	enc.wait(t)
	exportertest.WaitFor(t, 5*time.Second, func() bool { return e.Scrape(t)[series("ffmpeg_stream_active", "two")] == 0 })
	s := e.Scrape(t)
	// Each status line on stderr carries the same report's q of each output, in order.
	want := lastQuantizers(t, enc.stderr.String())
	if len(want) != 2 || want[0] <= 0 || want[1] <= 0 {
		t.Fatalf("ffmpeg reported q %v, want a q above 0 for each of 2 outputs:\n%s", want, enc.stderr.String())
	}
	t.Logf("ffmpeg's last q per output: %v", want)
	for i, q := range want {
		key := labelled("ffmpeg_quantizer", "stream", "two", "output", strconv.Itoa(i)+":0")
		if got, ok := s[key]; !ok || got != q {
			t.Errorf("%s = %v (%v), ffmpeg's last q was %v", key, got, ok, q)
		}
	}
}

var quantizerRe = regexp.MustCompile(`(?:^|\s)L?q=\s*(-?[0-9.]+)`)

// lastQuantizers is each output's last q other than -1 in ffmpeg's status lines.
func lastQuantizers(t *testing.T, stderr string) []float64 {
	t.Helper()
	var last []float64
	for _, line := range strings.FieldsFunc(stderr, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if !strings.HasPrefix(line, "frame=") {
			continue
		}
		for i, m := range quantizerRe.FindAllStringSubmatch(line, -1) {
			q, err := strconv.ParseFloat(m[1], 64)
			if err != nil {
				t.Fatal(err)
			}
			if i == len(last) {
				last = append(last, q)
			}
			if q != -1 {
				last[i] = q
			}
		}
	}
	return last
}

// TestDecodeErrorsCounted: a corrupted h264/mpegts file decoded by ffmpeg,
// its stderr piped to the ingest with curl as it is written. With
// -loglevel level+warning the counts are exactly ffmpeg's [error] and
// [warning] lines; without markers, known phrases still find both levels.
func TestDecodeErrorsCounted(t *testing.T) {
	ffmpeg := peer.Require(t, "ffmpeg", "apt-get install -y ffmpeg")
	curl := peer.Require(t, "curl", "apt-get install -y curl")
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "in.ts"), filepath.Join(dir, "bad.ts")
	if out, err := exec.Command(ffmpeg, "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=4",
		"-c:v", "libx264", "-g", "25", "-f", "mpegts", good).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(data) / 4; i < 3*len(data)/4; i += 97 { // flip bytes through the middle half
		data[i] ^= 0x5a
	}
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}

	e := start(t, nil, nil)
	decode := func(stream, loglevel string) string {
		t.Helper()
		log := filepath.Join(dir, stream+".log")
		shell := fmt.Sprintf("%s -hide_banner -nostdin %s -i %s -f null - 2>&1 | tee %s | %s -sS -X POST -T - http://%s/ingest/%s",
			ffmpeg, loglevel, bad, log, curl, e.Addr, stream)
		if out, err := exec.Command("bash", "-o", "pipefail", "-c", shell).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", shell, err, out)
		}
		text, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		return string(text)
	}
	count := func(s map[string]float64, stream, level string) float64 {
		return s[labelled("ffmpeg_log_messages_total", "stream", stream, "level", level)]
	}

	marked := decode("marked", "-loglevel level+warning -stats")
	s := e.Scrape(t)
	for level, re := range map[string]*regexp.Regexp{
		"error":   regexp.MustCompile(`(?m)^(\[[^]\r\n]+ @ 0x[0-9a-f]+\] )?\[(error|fatal|panic)\] `),
		"warning": regexp.MustCompile(`(?m)^(\[[^]\r\n]+ @ 0x[0-9a-f]+\] )?\[warning\] `),
	} {
		want := len(re.FindAllString(strings.ReplaceAll(marked, "\r", "\n"), -1))
		if want == 0 {
			t.Fatalf("the corrupted file gave no %s lines:\n%s", level, marked)
		}
		if got := count(s, "marked", level); got != float64(want) {
			t.Errorf("marked %s: %v counted, ffmpeg printed %d", level, got, want)
		}
	}
	if s[series("ffmpeg_total_frames", "marked")] <= 0 {
		t.Error("the status lines among the marked messages were not read")
	}

	decode("plain", "")
	s = e.Scrape(t)
	for _, level := range []string{"error", "warning"} {
		if count(s, "plain", level) == 0 {
			t.Errorf("plain stderr: no %s counted", level)
		}
	}
	t.Logf("marked: %v errors, %v warnings; plain: %v errors, %v warnings", count(s, "marked", "error"), count(s, "marked", "warning"),
		count(s, "plain", "error"), count(s, "plain", "warning"))
}

// TestSecondEncodeSameName: a second ffmpeg sending -progress to a stream
// that one is feeding is refused (409, counted): the first encode's frames
// only ever rise, and end at ffmpeg's own count.
func TestSecondEncodeSameName(t *testing.T) {
	e := start(t, nil, nil)
	first := startEncode(t, ffmpegArgs(4, "-progress", "http://"+e.Addr+"/ingest/shared")...)
	frames := series("ffmpeg_total_frames", "shared")
	exportertest.WaitFor(t, 10*time.Second, func() bool { return e.Scrape(t)[frames] > 0 })
	second := startEncode(t, ffmpegArgs(2, "-progress", "http://"+e.Addr+"/ingest/shared")...)
	busy := labelled("ffmpeg_ingest_rejected_requests_total", "reason", "stream_busy")
	seen := 0.0
	exportertest.WaitFor(t, 15*time.Second, func() bool {
		s := e.Scrape(t)
		if s[frames] < seen {
			t.Fatalf("ffmpeg_total_frames went back from %v to %v: two encodes interleave", seen, s[frames])
		}
		seen = s[frames]
		return s[series("ffmpeg_stream_active", "shared")] == 0 && s[busy] == 1
	})
	second.cmd.Wait()
	first.wait(t)
	if got, want := e.Scrape(t)[frames], first.frames(t); got != want {
		t.Errorf("ffmpeg_total_frames %v, the first encode's own count %v", got, want)
	}
}

// TestManyStreamsNoOverflow: with --ingest.max-streams 3000, 2,500 streams
// with MaxOutputs outputs each are all on /metrics: the SDK's cardinality
// limit follows the stream limit, so nothing folds into otel_metric_overflow.
func TestManyStreamsNoOverflow(t *testing.T) {
	const streams, outputs = 2500, 16
	e := start(t, nil, nil, "--ingest.max-streams", "3000")
	var block strings.Builder
	for i := range outputs {
		fmt.Fprintf(&block, "stream_0_%d_q=%d.0\n", i, i)
	}
	block.WriteString("frame=1\nfps=25\nprogress=end\n")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < streams; i += 4 {
				resp, err := client.Post(fmt.Sprintf("http://%s/ingest/s%04d", e.Addr, i), "text/plain", strings.NewReader(block.String()))
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					errs <- fmt.Errorf("stream %d: %s", i, resp.Status)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	counts := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(e.ScrapeText(t)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "otel_metric_overflow") {
			t.Fatalf("overflow series: %s", line)
		}
		if name, _, ok := strings.Cut(line, "{"); ok && !strings.HasPrefix(line, "#") {
			counts[name]++
		}
	}
	if counts["ffmpeg_fps"] != streams || counts["ffmpeg_quantizer"] != streams*outputs {
		t.Errorf("served %d ffmpeg_fps and %d ffmpeg_quantizer series, want %d and %d",
			counts["ffmpeg_fps"], counts["ffmpeg_quantizer"], streams, streams*outputs)
	}
}
