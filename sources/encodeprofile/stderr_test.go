package encodeprofile

import (
	"strconv"
	"strings"
	"testing"
)

// A three-rung ladder and a stream copy, as ffmpeg 5.1 prints them: the
// Output sections in the order the encoders start, the copy's before the
// mapping.
const ladderHeader = `Input #0, lavfi, from 'testsrc2=size=1280x720:rate=30':
  Duration: N/A, start: 0.000000, bitrate: N/A
  Stream #0:0: Video: rawvideo (I420 / 0x30323449), yuv420p, 1280x720 [SAR 1:1 DAR 16:9], 30 tbr, 30 tbn
Input #1, lavfi, from 'sine':
  Duration: N/A, start: 0.000000, bitrate: 705 kb/s
  Stream #1:0: Audio: pcm_s16le, 44100 Hz, mono, s16, 705 kb/s
Output #3, mpegts, to 'd.ts':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #3:0: Video: rawvideo (I420 / 0x30323449), yuv420p, 1280x720 [SAR 1:1 DAR 16:9], q=2-31, 30 tbr, 90k tbn
Stream mapping:
  Stream #0:0 (rawvideo) -> split:default (graph 0)
  split (graph 0) -> Stream #0:0 (libx264)
  Stream #1:0 -> #0:1 (pcm_s16le (native) -> aac (native))
  scale:default (graph 0) -> Stream #1:0 (libx264)
  fps:default (graph 0) -> Stream #2:0 (libx264)
  Stream #0:0 -> #3:0 (copy)
[mpegts @ 0x55eb78055e80] Stream 0, codec rawvideo, is muxed as a private data stream and may not be recognized upon reading.
Output #1, flv, to 'b.flv':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #1:0: Video: h264 ([7][0][0][0] / 0x0007), yuv420p(tv, progressive), 640x360 [SAR 1:1 DAR 16:9], q=2-31, 30 fps, 1k tbn
    Metadata:
      encoder         : Lavc59.37.100 libx264
    Side data:
      cpb: bitrate max/min/avg: 0/0/0 buffer size: 0 vbv_delay: N/A
Output #0, mp4, to 'a1.mp4':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: h264 (avc1 / 0x31637661), yuv420p(progressive), 1280x720 [SAR 1:1 DAR 16:9], q=2-31, 2000 kb/s, 30 fps, 15360 tbn
    Metadata:
      encoder         : Lavc59.37.100 libx264
  Stream #0:1: Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 69 kb/s
    Metadata:
      encoder         : Lavc59.37.100 aac
Output #2, mp4, to 'c.mp4':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #2:0: Video: h264 (avc1 / 0x31637661), yuv420p(tv, progressive), 426x240 [SAR 1:1 DAR 71:40], q=2-31, 200 kb/s, SAR 640:639 DAR 16:9, 15 fps, 15360 tbn
    Metadata:
      encoder         : Lavc59.37.100 libx264
frame=    6 fps=0.0 q=21.0 q=0.0 q=2.0 q=-1.0 size=       0kB time=00:00:00.30 bitrate=   1.3kbits/s speed=0.439x
`

func feed(s *Stderr, text string) {
	for _, l := range strings.SplitAfter(text, "\n") {
		s.Line([]byte(l))
	}
}

func TestStderrLadder(t *testing.T) {
	var s Stderr
	feed(&s, ladderHeader)
	p := s.Profile()
	// The copy encodes nothing; the 15 fps rung encodes one frame for two
	// of the first output's.
	wantProfile{"libx264", Unknown, "1280x720@30,1280x720@?,640x360@30,426x240@15", Unknown,
		1280*720 + 640*360 + 426*240/2}.check(t, "ladder", p)
	if len(p.Outputs) != 4 || p.Outputs[0].BitrateBPS != 2e6 || p.Outputs[3].Encoder != Copy {
		t.Errorf("outputs %+v", p.Outputs)
	}
	// A copy first: frame= counts it, and its rate is unknown (tbr is a
	// guess), so no rung's share of it is known.
	p.Outputs[0], p.Outputs[3] = p.Outputs[3], p.Outputs[0]
	if px, ok := p.PixelsPerFrame(); ok {
		t.Errorf("pixels %v known against a copy of unknown rate", px)
	}
	if p.Ladder.From != FromStderr || p.Preset.From != FromNowhere {
		t.Errorf("sources %+v", p)
	}
}

// The ladder is Unknown until every mapped stream's Output line is read.
func TestStderrWaitsForTheWholeHeader(t *testing.T) {
	var s Stderr
	lines := strings.SplitAfter(ladderHeader, "\n")
	whole := indexOf(lines, "  Stream #2:0")
	for i, l := range lines {
		s.Line([]byte(l))
		if known := s.Profile().Ladder.Label != Unknown; known != (i >= whole) {
			t.Fatalf("after line %d %q: ladder %q", i, l, s.Profile().Ladder.Label)
		}
	}
}

func indexOf(lines []string, prefix string) int {
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return i
		}
	}
	return -1
}

func TestStderrSingleOutput(t *testing.T) {
	for _, c := range []struct {
		name, text string
		want       wantProfile
	}{
		{"encoder in the codec field, level prefixes", `[info] Input #0, flv, from 'rtmp://127.0.0.1:1935/live/sk_live_SECRET':
[info]   Stream #0:0: Video: h264 (High), yuv420p(progressive), 1920x1080, 30 fps, 30 tbr, 1k tbn
[info] Stream mapping:
[info]   Stream #0:0 -> #0:0 (h264 (native) -> h264 (libx264))
[info] Output #0, flv, to 'rtmp://127.0.0.1:1935/live/out?token=hunter2':
[info]   Stream #0:0: Video: h264 (libx264), yuv420p(progressive), 1280x720, q=2-31, 29.97 fps, 1k tbn
`, wantProfile{"libx264", Unknown, "1280x720@29.97", Unknown, 1280 * 720}},
		{"nvenc, native audio", `Input #0, lavfi, from 'x':
Stream mapping:
  Stream #0:0 -> #0:0 (rawvideo (native) -> hevc (hevc_nvenc))
  Stream #1:0 -> #0:1 (pcm_s16le (native) -> aac (native))
Output #0, mp4, to 'out.mp4':
  Stream #0:0: Video: hevc (hev1 / 0x31766568), yuv420p(tv, progressive), 3840x2160, q=2-31, 60 fps, 15360 tbn
  Stream #0:1: Audio: aac (LC), 48000 Hz, stereo, fltp, 128 kb/s
`, wantProfile{"hevc_nvenc", Unknown, "3840x2160@60", Unknown, 3840 * 2160}},
		{"a native encoder is other", `Stream mapping:
  Stream #0:0 -> #0:0 (rawvideo (native) -> mpeg4 (native))
Output #0, avi, to 'out.avi':
  Stream #0:0: Video: mpeg4 (FMP4 / 0x34504D46), yuv420p, 640x480, q=2-31, 200 kb/s, 25 fps, 25 tbn
`, wantProfile{Other, Unknown, "640x480@25", Unknown, 640 * 480}},
		{"input sections never count", `Input #0, lavfi, from 'x':
  Stream #0:0: Video: h264 (libx264), yuv420p, 1920x1080, 30 fps
Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> h264 (libx264))
`, wantProfile{Unknown, Unknown, Unknown, Unknown, 0}},
		{"a stream line outside an output section", `Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> h264 (libx264))
Output #0, flv, to 'x':
Press [q] to stop, [?] for help
  Stream #0:0: Video: h264 (libx264), yuv420p, 1920x1080, 30 fps
`, wantProfile{Unknown, Unknown, Unknown, Unknown, 0}},
		{"a stream copy's header: the mapping last", `Input #0, mpegts, from 'in.ts':
  Stream #0:0[0x100]: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p(progressive), 1920x1080, 25 fps, 25 tbr, 90k tbn
Output #0, mpegts, to 'out.ts':
  Stream #0:0: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p(progressive), 1920x1080, q=2-31, 25 fps, 25 tbr, 90k tbn
Stream mapping:
  Stream #0:0 -> #0:0 (copy)
frame=  250 fps=0.0 q=-1.0 size=    1024kB time=00:00:10.00 bitrate= 838.9kbits/s speed= 500x
`, wantProfile{Copy, Default, "1920x1080@25", Unknown, 0}},
		{"log and progress lines inside a section", `Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> h264 (libx264))
[libx264 @ 0x55] using cpu capabilities: AVX2
frame=1
Output #0, flv, to 'x':
[info] [flv @ 0x1] some log line
progress=continue
frame=   10 fps=0.0 q=28.0 size=       0kB time=00:00:00.30 bitrate=N/A speed=0.6x
  Stream #0:0: Video: h264 (libx264), yuv420p, 1920x1080, 30 fps
`, wantProfile{"libx264", Unknown, "1920x1080@30", Unknown, 1920 * 1080}},
		{"out of bounds", `Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> h264 (libx264))
Output #0, flv, to 'x':
  Stream #0:0: Video: h264 (libx264), yuv420p, 16384x720, q=2-31, 1k fps
`, wantProfile{"libx264", Unknown, "?x?@?", Unknown, 0}},
	} {
		var s Stderr
		feed(&s, c.text)
		c.want.check(t, c.name, s.Profile())
	}
}

// A second encode on the same connection (a shell loop into one curl)
// starts again at its "Input #0".
func TestStderrNewEncodeResets(t *testing.T) {
	var s Stderr
	feed(&s, ladderHeader)
	feed(&s, `Input #0, lavfi, from 'x':
  Stream #0:0: Video: rawvideo, yuv420p, 1280x720, 30 tbr
Stream mapping:
  Stream #0:0 -> #0:0 (rawvideo (native) -> h264 (h264_qsv))
Output #0, null, to 'pipe:':
  Stream #0:0: Video: h264, nv12, 854x480, q=2-31, 25 fps, 25 tbn
`)
	wantProfile{"h264_qsv", Unknown, "854x480@25", Unknown, 854 * 480}.check(t, "second encode", s.Profile())
	s.Reset()
	wantProfile{Unknown, Unknown, Unknown, Unknown, 0}.check(t, "reset", s.Profile())
}

func TestStderrBoundsItsStreams(t *testing.T) {
	var s Stderr
	s.Line([]byte("Stream mapping:"))
	for i := range 10 * MaxStderrStreams {
		s.Line([]byte("  Stream #0:0 -> #" + strconv.Itoa(i) + ":0 (copy)"))
	}
	if len(s.streams) > MaxStderrStreams {
		t.Fatalf("%d streams kept", len(s.streams))
	}
	if p := s.Profile(); p.Ladder.Label != Unknown {
		t.Errorf("ladder %q after overflow", p.Ladder.Label)
	}
}
