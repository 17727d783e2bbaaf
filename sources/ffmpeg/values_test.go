package ffmpeg

import (
	"strings"
	"testing"
)

// nonFinite are values written as text that name no number a reading can
// be: NaN and ±Inf as C's printf and others spell them.
var nonFinite = []string{"NaN", "nan", "-nan", "+NaN", "inf", "-inf", "+Inf", "INF", "Infinity", "-infinity"}

// TestNonFiniteTextIsRefused: fps=NaN, speed=inf and the like in a
// -progress block or a status line are refused (the line counts as
// rejected), never read as N/A: the field is neither set nor cleared, and
// the line's other values still apply.
func TestNonFiniteTextIsRefused(t *testing.T) {
	for _, v := range nonFinite {
		for _, line := range []string{
			"fps=" + v, "speed=" + v + "x", "bitrate=" + v + "kbits/s", "total_size=" + v, "frame=" + v,
			"out_time_us=" + v, "drop_frames=" + v, "dup_frames=" + v, "stream_0_0_q=" + v,
			"frame=  10 fps=" + v + " q=28.0 size=    1024kB time=00:00:01.00 bitrate=1kbits/s speed=" + v + "x",
		} {
			var p progressParser
			u, kind := p.Line([]byte(line))
			status := strings.Contains(line, " ")
			if !status {
				u, _ = p.Line([]byte("progress=continue"))
			}
			if kind != lineRejected {
				t.Errorf("%q: kind %v, want rejected", line, kind)
			}
			for f := range NumFields {
				if status && f != FPS && f != Speed {
					continue // the status line's good values
				}
				if (u.Set|u.Cleared)&(1<<f) != 0 {
					t.Errorf("%q: field %d touched (set %b cleared %b)", line, f, u.Set, u.Cleared)
				}
			}
			if good := uint16(1<<Frames | 1<<Size | 1<<OutTime | 1<<Bitrate); status && u.Set&good != good {
				t.Errorf("%q: the line's good values were dropped with the bad", line)
			}
			if u.NumQuantizers != 0 {
				t.Errorf("%q: quantizer %+v", line, u.Quantizers[0])
			}
		}
	}
	// Words that name no number at all stay unreadable, as N/A is.
	for _, v := range []string{"N/A", "abc", "nanx", "infinit", "-", "+-inf"} {
		var p progressParser
		if _, kind := p.Line([]byte("fps=" + v)); kind != lineProgress {
			t.Errorf("fps=%s: kind %v, want progress (read as N/A)", v, kind)
		}
	}
}

// TestNonFiniteTextKeepsTheReading: what the README promises, through the
// hub: the stream keeps its previous fps and speed, and the lines count as
// rejected, not parsed.
func TestNonFiniteTextKeepsTheReading(t *testing.T) {
	h, _ := newTestHub(8)
	c := open(t, h, "job")
	c.Line([]byte("frame=  10 fps=25 size=  1024kB time=00:00:01.00 speed=1.5x"))
	c.Line([]byte("frame=  20 fps=NaN size=  2048kB time=00:00:02.00 speed=infx"))
	for _, l := range []string{"fps=-nan", "speed=inf", "progress=continue"} {
		c.Line([]byte(l))
	}
	s, _ := streamByName(t, h, "job")
	if !s.Has(FPS) || !s.Has(Speed) || s.Values[FPS] != 25 || s.Values[Speed] != 1.5 || s.Values[Frames] != 20 {
		t.Errorf("after NaN and inf as text: fps %v (has %v), speed %v (has %v), frames %v; want 25, 1.5, 20",
			s.Values[FPS], s.Has(FPS), s.Values[Speed], s.Has(Speed), s.Values[Frames])
	}
	if got := h.Snapshot().Lines; got[LinesRejected] != 3 || got[LinesParsed] != 2 {
		t.Errorf("lines %v, want 3 rejected and 2 parsed", got)
	}
}
