package ffmpeg

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

// feed runs lines through a parser and returns the completed blocks.
func feed(t *testing.T, text string) []update {
	t.Helper()
	var p progressParser
	var blocks []update
	lr := newLineReader(strings.NewReader(text), MaxLineBytes)
	for {
		line, err := lr.Next()
		if err != nil {
			return blocks
		}
		if u, _ := p.Line(line); u != nil {
			blocks = append(blocks, *u)
		}
	}
}

func want(t *testing.T, u update, f Field, v float64) {
	t.Helper()
	if u.Set&(1<<f) == 0 {
		t.Errorf("field %d not set, want %v", f, v)
		return
	}
	if d := u.Values[f] - v; d > 1e-9 || d < -1e-9 {
		t.Errorf("field %d = %v, want %v", f, u.Values[f], v)
	}
}

func wantCleared(t *testing.T, u update, f Field) {
	t.Helper()
	if u.Set&(1<<f) != 0 || u.Cleared&(1<<f) == 0 {
		t.Errorf("field %d: set=%v cleared=%v, want cleared", f, u.Set&(1<<f) != 0, u.Cleared&(1<<f) != 0)
	}
}

// A block as ffmpeg 5.1 writes it with -progress.
const progressBlock = `frame=240
fps=30.00
stream_0_0_q=28.0
bitrate=1048.6kbits/s
total_size=1048576
out_time_us=8000000
out_time_ms=8000000
out_time=00:00:08.000000
dup_frames=1
drop_frames=2
speed=1.01x
progress=continue
`

func TestProgressBlock(t *testing.T) {
	blocks := feed(t, progressBlock)
	if len(blocks) != 1 {
		t.Fatalf("got %d blocks, want 1", len(blocks))
	}
	u := blocks[0]
	want(t, u, Frames, 240)
	want(t, u, FPS, 30)
	want(t, u, Bitrate, 1048.6)
	want(t, u, Size, 1048576)
	want(t, u, OutTime, 8)
	want(t, u, Duplicated, 1)
	want(t, u, Dropped, 2)
	want(t, u, Speed, 1.01)
	if u.End {
		t.Error("progress=continue read as the end")
	}
}

func TestProgressEndAndNA(t *testing.T) {
	blocks := feed(t, "frame=0\nfps=0.00\nbitrate=N/A\ntotal_size=N/A\nout_time_us=N/A\nout_time=N/A\nspeed=N/A\nprogress=continue\n"+
		"frame=10\nbitrate=   0.5kbits/s\nspeed=   1x\nout_time=-00:00:00.040000\nprogress=end\n")
	if len(blocks) != 2 {
		t.Fatalf("got %d blocks, want 2", len(blocks))
	}
	first, last := blocks[0], blocks[1]
	want(t, first, Frames, 0)
	wantCleared(t, first, Bitrate)
	wantCleared(t, first, Size)
	wantCleared(t, first, OutTime)
	wantCleared(t, first, Speed)
	want(t, last, Frames, 10)
	want(t, last, Bitrate, 0.5)
	want(t, last, Speed, 1)
	wantCleared(t, last, OutTime) // negative before the first packet
	if !last.End || first.End {
		t.Errorf("End: first %v last %v, want false true", first.End, last.End)
	}
}

func TestStatusLines(t *testing.T) {
	// ffmpeg's stderr, as `2>&1` pipes it: log lines, then status lines redrawn with \r.
	text := "Input #0, lavfi, from 'testsrc=size=320x240:rate=25':\n" +
		"  Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24, 320x240 [SAR 1:1 DAR 4:3], 25 tbr\n" +
		"[libx264 @ 0x55d0] 264 - core 164 - options: cabac=1 ref=3 deblock=1:0:0\n" +
		"frame=  240 fps= 30 q=28.0 size=    1024kB time=00:00:08.00 bitrate=1048.6kbits/s dup=0 drop=2 speed=1.01x    \r" +
		"frame=  250 fps=N/A q=-1.0 Lsize=    2048KiB time=00:01:00.50 bitrate=N/A dup=3 drop=4 elapsed=0:00:10.00 speed=N/A\n" +
		"size=N/A time=N/A bitrate=N/A speed=N/A\r"
	blocks := feed(t, text)
	if len(blocks) != 3 {
		t.Fatalf("got %d blocks, want 3", len(blocks))
	}
	a, b, c := blocks[0], blocks[1], blocks[2]
	want(t, a, Frames, 240)
	want(t, a, FPS, 30)
	want(t, a, Size, 1024*1024)
	want(t, a, OutTime, 8)
	want(t, a, Bitrate, 1048.6)
	want(t, a, Duplicated, 0)
	want(t, a, Dropped, 2)
	want(t, a, Speed, 1.01)
	want(t, b, Frames, 250)
	wantCleared(t, b, FPS)
	want(t, b, Size, 2048*1024)
	want(t, b, OutTime, 60.5)
	wantCleared(t, b, Bitrate)
	want(t, b, Duplicated, 3)
	want(t, b, Dropped, 4)
	wantCleared(t, b, Speed)
	wantCleared(t, c, Size)
	wantCleared(t, c, OutTime)
	if c.Set != 0 {
		t.Errorf("all-N/A line set fields %b", c.Set)
	}
}

func TestMixedProgressAndStderr(t *testing.T) {
	// -progress pipe:1 2>&1: a status line can land in the middle of a block.
	text := "frame=5\nfps=5.0\nframe=    6 fps=6.0 q=1 size=1kB time=00:00:00.24 bitrate=1.0kbits/s speed=0.5x\r" +
		"total_size=100\nprogress=continue\n"
	blocks := feed(t, text)
	if len(blocks) != 2 {
		t.Fatalf("got %d blocks, want 2", len(blocks))
	}
	want(t, blocks[0], Frames, 6) // the status line
	want(t, blocks[1], Frames, 5) // the block, unaffected by the status line inside it
	want(t, blocks[1], Size, 100)
}

func TestIgnoredLines(t *testing.T) {
	var p progressParser
	for _, line := range []string{
		"", "garbage", "=", "==", "key with space=1", "\x00\xff=\x01", "[h264 @ 0x1] frame=1 fps=2",
		"x264 options: cabac=1 ref=3", "foo=bar", strings.Repeat("a", 100) + "=1",
		"stream_00_0_q=1", "stream_0_q=1", "stream_0_0_0_q=1", "stream_x_0_q=1", "stream_123456_0_q=1",
		"fps=1 q=2", // several pairs, but not a status line's first key
	} {
		if u, kind := p.Line([]byte(line)); u != nil || kind != lineIgnored {
			t.Errorf("%q: done=%v kind=%v, want ignored", line, u != nil, kind)
		}
	}
	// Unreadable values of known keys are read as N/A, not as zero.
	_, kind := p.Line([]byte("fps=abc"))
	u, _ := p.Line([]byte("progress=continue"))
	if kind != lineProgress {
		t.Errorf("fps=abc kind %v, want Progress", kind)
	}
	wantCleared(t, *u, FPS)
	for _, v := range []string{"inf", "NaN", "1e999", "0x10", "-5"} {
		p.Line([]byte("fps=" + v))
		u, _ := p.Line([]byte("progress=continue"))
		if u.Set&(1<<FPS) != 0 {
			t.Errorf("fps=%s read as %v", v, u.Values[FPS])
		}
	}
}

// FuzzParser: any bytes, split any way, neither panic nor produce a
// reading that cannot be real (negative, infinite, NaN, past its limit),
// in a block or in the snapshot of a stream fed the same bytes.
func FuzzParser(f *testing.F) {
	f.Add([]byte(progressBlock))
	f.Add([]byte("frame=  240 fps= 30 q=28.0 size=    1024kB time=00:00:08.00 bitrate=1048.6kbits/s dup=0 drop=2 speed=1.01x\r"))
	f.Add([]byte("out_time=-00:00:00.040000\nprogress=end\n"))
	f.Add([]byte("size=N/A time=99999999:00:00.00 bitrate=N/A speed=N/A\r\x00\xff"))
	f.Add([]byte("frame=1 size=1e308kB time=1e300:00:00 speed=1e999x\rfps=1e308\nstream_0_0_q=1e400\nstream_1_0_q=-1.0\nprogress=continue\n"))
	f.Add([]byte("frame=1 fps=-nan q=1.0 size=1kB time=00:00:01.00 bitrate=infkbits/s speed=Infinityx\rfps=NaN\nstream_0_0_q=nan\nprogress=continue\n"))
	f.Add([]byte("[h264 @ 0x55] [error] error while decoding MB 1 2\n    Last message repeated 3 times\n[info] frame=1 fps=2 q=3.0 size=1kB time=00:00:01.00 bitrate=1kbits/s speed=1x\r"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lr := newLineReader(strings.NewReader(string(data)), 64)
		var p progressParser
		for {
			line, err := lr.Next()
			if err != nil {
				break
			}
			if len(line) > 64 {
				t.Fatalf("line of %d bytes passed a 64-byte limit", len(line))
			}
			u, _ := p.Line(line)
			if u == nil {
				continue
			}
			for f := range NumFields {
				if u.Set&(1<<f) != 0 && !possible(u.Values[f], limits[f]) {
					t.Fatalf("field %d = %v from %q", f, u.Values[f], data)
				}
			}
			for _, q := range u.Quantizers[:u.NumQuantizers] {
				if !possible(q.Q, maxQuantizer) {
					t.Fatalf("quantizer %+v from %q", q, data)
				}
			}
			if u.Set&u.Cleared != 0 {
				t.Fatalf("fields both set and cleared: %b %b", u.Set, u.Cleared)
			}
		}

		h, _ := newTestHub(8)
		c := open(t, h, "fuzz")
		c.Consume(strings.NewReader(string(data)))
		s, _ := streamByName(t, h, "fuzz")
		for f := range NumFields {
			if s.Has(f) && !possible(s.Values[f], limits[f]) {
				t.Fatalf("snapshot field %d = %v from %q", f, s.Values[f], data)
			}
		}
		if len(s.Quantizers) > MaxOutputs {
			t.Fatalf("%d quantizers, past MaxOutputs", len(s.Quantizers))
		}
		for _, q := range s.Quantizers {
			if !possible(q.Q, maxQuantizer) {
				t.Fatalf("snapshot quantizer %+v from %q", q, data)
			}
		}
		if math.IsInf(s.Lag, 0) || math.IsNaN(s.Lag) {
			t.Fatalf("snapshot lag %v from %q", s.Lag, data)
		}
	})
}

// possible reports whether v can be a reading: finite, 0 or more, at most max.
func possible(v, max float64) bool { return v >= 0 && v <= max }

// TestValuesThatCannotBeReal: a value that cannot be real is refused, the
// line counted as rejected, and the field neither set nor cleared, so the
// stream keeps its reading; the limits themselves are accepted.
func TestValuesThatCannotBeReal(t *testing.T) {
	for _, line := range []string{
		"size=1e308kB time=00:00:01.00 speed=1x", // the issue's: +Inf bytes
		"frame=1 fps=1e308 time=00:00:01.00",
		"frame=1 time=1e300:00:00 speed=1x",
		"fps=1e308", "fps=1000001", "speed=1000001x", "bitrate=1000000001kbits/s", "total_size=1125899906842625",
		"out_time=1e300:00:00", "out_time=277778:00:00", "out_time_us=1000000001000000", "out_time_us=1e400",
		"frame=1000000000001", "frame=1e999", "drop_frames=-1", "dup_frames=1e13", "fps=-5",
		"stream_0_0_q=1001", "stream_0_0_q=-5", "stream_0_0_q=1e400",
	} {
		var p progressParser
		u, kind := p.Line([]byte(line))
		if !strings.Contains(line, " ") {
			u, _ = p.Line([]byte("progress=continue"))
		}
		if kind != lineRejected {
			t.Errorf("%q: kind %v, want Rejected", line, kind)
		}
		for _, f := range []Field{FPS, Bitrate, Size, Dropped, Duplicated} {
			if (u.Set|u.Cleared)&(1<<f) != 0 {
				t.Errorf("%q: touched field %d (set %b cleared %b)", line, f, u.Set, u.Cleared)
			}
		}
		if strings.HasPrefix(line, "frame=1 ") && u.Set&(1<<Frames) == 0 {
			t.Errorf("%q: the line's good values were dropped with the bad one", line)
		}
		if u.NumQuantizers != 0 {
			t.Errorf("%q: quantizer %+v", line, u.Quantizers[0])
		}
	}
	atLimits := "frame=1000000000000\nfps=1000000\nbitrate=1000000000kbits/s\ntotal_size=1125899906842624\n" +
		"out_time_us=1000000000000000\ndup_frames=1000000000000\ndrop_frames=1000000000000\nspeed=1000000x\nstream_0_0_q=1000\nprogress=continue\n"
	u := feed(t, atLimits)[0]
	for f := range NumFields {
		want(t, u, f, limits[f])
	}
	if u.NumQuantizers != 1 || u.Quantizers[0].Q != maxQuantizer {
		t.Errorf("quantizer at its limit: %+v", u.Quantizers[:u.NumQuantizers])
	}
}

// TestQuantizers: each output's stream_FILE_INDEX_q, named FILE:INDEX; -1
// (no quality in this report) is no reading; at most MaxOutputs outputs.
func TestQuantizers(t *testing.T) {
	blocks := feed(t, "frame=1\nstream_0_0_q=0.0\nstream_1_0_q=4.7\nstream_0_0_q=28.0\nprogress=continue\n"+
		"frame=50\nstream_0_0_q=-1.0\nstream_1_0_q=2.0\nprogress=end\n")
	quantizers := func(u update) []Quantizer { return u.Quantizers[:u.NumQuantizers] }
	if got := quantizers(blocks[0]); !slices.Equal(got, []Quantizer{{"0:0", 28}, {"1:0", 4.7}}) {
		t.Errorf("first block: %+v", got)
	}
	if got := quantizers(blocks[1]); !slices.Equal(got, []Quantizer{{"1:0", 2}}) {
		t.Errorf("last block: %+v, want 1:0 only (0:0 said -1)", got)
	}

	var p progressParser
	for i := range MaxOutputs {
		if _, kind := p.Line(fmt.Appendf(nil, "stream_%d_%d_q=%d", i/2, i%2+1, i)); kind != lineProgress {
			t.Errorf("output %d: kind %v, want Progress", i+1, kind)
		}
	}
	if _, kind := p.Line([]byte("stream_99_0_q=1")); kind != lineIgnored {
		t.Errorf("output past MaxOutputs: kind %v, want Ignored", kind)
	}
	if u, _ := p.Line([]byte("progress=end")); u.NumQuantizers != MaxOutputs || u.Quantizers[MaxOutputs-1].Output != "7:2" {
		t.Errorf("%d quantizers, last %+v", u.NumQuantizers, u.Quantizers[MaxOutputs-1])
	}
	// After progress=end the next encode names its own outputs.
	p.Line([]byte("stream_9_9_q=3"))
	if u, _ := p.Line([]byte("progress=continue")); u.NumQuantizers != 1 || u.Quantizers[0] != (Quantizer{"9:9", 3}) {
		t.Errorf("next encode: %+v", u.Quantizers[:u.NumQuantizers])
	}
}

// TestStatusLineWithLevel: -loglevel level+info marks the status line
// "[info] "; it is read all the same.
func TestStatusLineWithLevel(t *testing.T) {
	blocks := feed(t, "[info] frame=   25 fps=0.0 q=-1.0 Lsize=N/A time=00:00:00.92 bitrate=N/A speed=34.3x    \r")
	if len(blocks) != 1 {
		t.Fatalf("%d blocks, want 1", len(blocks))
	}
	want(t, blocks[0], Frames, 25)
	want(t, blocks[0], Speed, 34.3)
}
