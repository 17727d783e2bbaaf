package encodeprofile

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// checkProfile fails unless every string of p is in its bounded domain and
// every number is finite and non-negative: what may be exported.
func checkProfile(p Profile) error {
	in := func(field, v string, domain ...[]string) error {
		for _, d := range domain {
			if slices.Contains(d, v) {
				return nil
			}
		}
		return fmt.Errorf("%s %q is outside its domain", field, v)
	}
	specials := []string{Unknown, Other, Mixed}
	presetSpecials := []string{Unknown, Other, Default}
	for _, err := range []error{
		in("encoder", p.Encoder.Label, Encoders, specials),
		in("preset", p.Preset.Label, allPresets, presetSpecials),
		in("hwaccel", p.Hwaccel.Label, Hwaccels, []string{Unknown, Other, None}),
		checkLadder(p.Ladder.Label),
		in("sources", p.Sources(), []string{"none", "url", "stderr", "cmdline", "url+stderr", "url+cmdline", "stderr+cmdline", "url+stderr+cmdline"}),
	} {
		if err != nil {
			return err
		}
	}
	for _, v := range []Value{p.Encoder, p.Preset, p.Ladder, p.Hwaccel} {
		if v.From > FromCmdline {
			return fmt.Errorf("source %d out of range", v.From)
		}
	}
	if len(p.Outputs) > maxCmdOutputs+MaxStderrStreams {
		return fmt.Errorf("%d outputs", len(p.Outputs))
	}
	for _, o := range p.Outputs {
		if err := in("output encoder", o.Encoder, Encoders, specials); err != nil {
			return err
		}
		if err := in("output preset", o.Preset, allPresets, presetSpecials); err != nil {
			return err
		}
		for _, f := range []float64{float64(o.Width), float64(o.Height), o.FPS, o.BitrateBPS} {
			if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
				return fmt.Errorf("output number %v", f)
			}
		}
	}
	if px, ok := p.PixelsPerFrame(); ok && (math.IsNaN(px) || math.IsInf(px, 0) || px < 0) {
		return fmt.Errorf("pixels per frame %v", px)
	}
	return nil
}

var rungShape = regexp.MustCompile(`^(\?|[1-9][0-9]{0,3})x(\?|[1-9][0-9]{0,3})@(\?|[0-9]{1,3}(\.[0-9]{1,2})?)$`)

func checkLadder(l string) error {
	if l == Unknown || l == Other {
		return nil
	}
	rungs := strings.Split(l, ",")
	if len(rungs) > MaxRungs {
		return fmt.Errorf("ladder %q has %d rungs", l, len(rungs))
	}
	for _, r := range rungs {
		m := rungShape.FindStringSubmatch(r)
		if m == nil {
			return fmt.Errorf("ladder %q: rung %q", l, r)
		}
		for _, d := range m[1:3] {
			if v, err := strconv.Atoi(d); err == nil && v > MaxDimension {
				return fmt.Errorf("ladder %q: %d too large", l, v)
			}
		}
		if f, err := strconv.ParseFloat(m[3], 64); err == nil && (f <= 0 || f > MaxFPS) {
			return fmt.Errorf("ladder %q: rate %v", l, f)
		}
	}
	return nil
}

func TestLadderLabel(t *testing.T) {
	for _, c := range []struct {
		outs []Output
		want string
	}{
		{nil, Unknown},
		{[]Output{{Width: 640, Height: 360, FPS: 30}, {Width: 1280, Height: 720, FPS: 30}}, "1280x720@30,640x360@30"},
		{[]Output{{Width: 1920, Height: 1080, FPS: 30000.0 / 1001}}, "1920x1080@29.97"},
		{[]Output{{Height: 540, FPS: 30}, {Width: 1280, Height: 720}}, "1280x720@?,?x540@30"},
		{[]Output{{Width: 9000, Height: 720, FPS: 300}}, "?x720@?"},
		{make([]Output, MaxRungs+1), Other},
	} {
		if got := ladderLabel(c.outs); got != c.want {
			t.Errorf("ladderLabel(%+v) = %q, want %q", c.outs, got, c.want)
		}
		if err := checkLadder(ladderLabel(c.outs)); err != nil {
			t.Error(err)
		}
	}
}

func TestLaddersAdmitsAtMostN(t *testing.T) {
	l := NewLadders(2)
	for _, c := range []struct{ in, want string }{
		{"1280x720@30", "1280x720@30"},
		{Unknown, Unknown},
		{"640x360@30", "640x360@30"},
		{"426x240@30", Other}, // a third distinct ladder
		{"1280x720@30", "1280x720@30"},
		{Other, Other},
	} {
		if got := l.Admit(c.in); got != c.want {
			t.Errorf("Admit(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if l.Len() != 2 {
		t.Errorf("Len = %d, want 2", l.Len())
	}
	if NewLadders(0).max != DefaultMaxLadders {
		t.Error("NewLadders(0) does not take the default")
	}
}

func TestPresetLabel(t *testing.T) {
	for _, c := range []struct{ enc, v, want string }{
		{"libx264", "", Default},
		{"libx264", "ultrafast", "ultrafast"},
		{"libx264", "p4", Other},
		{"h264_nvenc", "p4", "p4"},
		{"hevc_nvenc", "llhq", "llhq"},
		{"libsvtav1", "8", "8"},
		{"libsvtav1", "14", Other},
		{"h264_vaapi", "fast", Other},
		{Unknown, "veryslow", "veryslow"},
		{Copy, "slow", Default},
		{"libx264", "rtmp://secret", Other},
	} {
		if got := presetLabel(c.enc, c.v); got != c.want {
			t.Errorf("presetLabel(%q, %q) = %q, want %q", c.enc, c.v, got, c.want)
		}
	}
}

func TestMergeTakesEachFieldFromTheMostTrusted(t *testing.T) {
	url := Profile{Encoder: Value{Unknown, FromURL}, Preset: Value{"medium", FromURL}, Ladder: Value{Unknown, FromURL}}
	stderr := Profile{Encoder: Value{"libx264", FromStderr}, Preset: Value{Unknown, FromNowhere},
		Ladder: Value{"1280x720@30", FromStderr}, Outputs: []Output{{Encoder: "libx264", Preset: Unknown, Width: 1280, Height: 720, FPS: 30}}}
	cmd := Profile{Encoder: Value{"libx265", FromCmdline}, Preset: Value{"slow", FromCmdline},
		Ladder: Value{"?x?@?", FromCmdline}, Hwaccel: Value{"cuda", FromCmdline}, Outputs: []Output{{}}}
	m := Merge(cmd, stderr, url)
	want := [4]Value{{"libx264", FromStderr}, {"medium", FromURL}, {"1280x720@30", FromStderr}, {"cuda", FromCmdline}}
	if got := [4]Value{m.Encoder, m.Preset, m.Ladder, m.Hwaccel}; got != want {
		t.Errorf("Merge = %+v, want %+v", got, want)
	}
	if len(m.Outputs) != 1 || m.Outputs[0].Width != 1280 {
		t.Errorf("Merge took the outputs %+v, not the ladder's", m.Outputs)
	}
	if s := m.Sources(); s != "url+stderr" {
		t.Errorf("Sources = %q, want url+stderr", s)
	}
	empty := Merge()
	if empty.Encoder.Label != Unknown || empty.Ladder.Label != Unknown || empty.Sources() != "none" {
		t.Errorf("Merge() = %+v", empty)
	}
	if err := checkProfile(m); err != nil {
		t.Error(err)
	}
}

func TestPixelsPerFrame(t *testing.T) {
	for _, c := range []struct {
		name string
		outs []Output
		want float64 // 0: unknown
	}{
		{"none", nil, 0},
		{"one rung, rate unknown", []Output{{Width: 854, Height: 480}}, 854 * 480},
		{"three rungs at one rate", []Output{{Width: 1280, Height: 720, FPS: 30}, {Width: 640, Height: 360, FPS: 30}, {Width: 426, Height: 240, FPS: 30}},
			1280*720 + 640*360 + 426*240},
		{"a rung at half the rate", []Output{{Width: 1280, Height: 720, FPS: 30}, {Width: 640, Height: 360, FPS: 15}}, 1280*720 + 640*360/2},
		{"a copy encodes nothing", []Output{{Encoder: Copy}, {Width: 640, Height: 360}}, 0}, // rates unknown
		{"copy keeps the input's rate", []Output{{Encoder: Copy, rateOf: 1}, {Width: 640, Height: 360, rateOf: 1}}, 640 * 360},
		{"size unknown", []Output{{Width: 1280, Height: 720, FPS: 30}, {Height: 360, FPS: 30}}, 0},
		{"second rate unknown", []Output{{Width: 1280, Height: 720, FPS: 30}, {Width: 640, Height: 360}}, 0},
	} {
		p := Profile{Outputs: c.outs}
		got, ok := p.PixelsPerFrame()
		if ok != (c.want != 0) || got != c.want {
			t.Errorf("%s: PixelsPerFrame = %v, %v; want %v", c.name, got, ok, c.want)
		}
	}
}
