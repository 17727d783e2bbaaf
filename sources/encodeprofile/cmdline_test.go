package encodeprofile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const in720 = "ffmpeg -hide_banner -f lavfi -i testsrc2=size=1280x720:rate=30 "

type wantProfile struct {
	encoder, preset, ladder, hwaccel string
	pixels                           float64 // 0: unknown
}

func (w wantProfile) check(t *testing.T, name string, p Profile) {
	t.Helper()
	got := wantProfile{p.Encoder.Label, p.Preset.Label, p.Ladder.Label, p.Hwaccel.Label, 0}
	if px, ok := p.PixelsPerFrame(); ok {
		got.pixels = px
	}
	if w.hwaccel == "" {
		got.hwaccel = ""
	}
	if got != w {
		t.Errorf("%s:\n got %+v\nwant %+v", name, got, w)
	}
	if err := checkProfile(p); err != nil {
		t.Errorf("%s: %v", name, err)
	}
}

func TestFromArgs(t *testing.T) {
	for _, c := range []struct {
		args string
		want wantProfile
	}{
		{in720 + "-c:v libx264 -preset ultrafast -f null -",
			wantProfile{"libx264", "ultrafast", "?x?@?", "none", 0}},
		{in720 + "-vcodec libx264 -s 640x360 -r 30 out.mp4",
			wantProfile{"libx264", Default, "640x360@30", "", 640 * 360}},
		{in720 + "-codec:v libx265 -preset slow -vf scale=854:480 out.mp4",
			wantProfile{"libx265", "slow", "854x480@?", "", 854 * 480}},
		// -s before -vf is still applied after the filters.
		{in720 + "-c:v libx264 -s 640x360 -vf scale=854:480,fps=25 out.mp4",
			wantProfile{"libx264", Default, "640x360@25", "", 640 * 360}},
		// -r wins over an fps filter.
		{in720 + "-c:v libx264 -vf fps=60 -r 30 out.mp4", wantProfile{"libx264", Default, "?x?@30", "", 0}},
		{in720 + "-c:v libx264 -vf scale=-2:540 out.mp4", wantProfile{"libx264", Default, "?x540@?", "", 0}},
		{in720 + "-c:v libx264 -vf scale=iw/2:ih/2 out.mp4", wantProfile{"libx264", Default, "?x?@?", "", 0}},
		{in720 + "-c:v libx264 -vf scale=w=1280:h=720:force_original_aspect_ratio=decrease out.mp4",
			wantProfile{"libx264", Default, "?x?@?", "", 0}},
		{in720 + "-c:v libx264 -vf scale=w=1280:h=720:flags=lanczos out.mp4",
			wantProfile{"libx264", Default, "1280x720@?", "", 1280 * 720}},
		{in720 + "-c:v libx264 -vf yadif=1,scale=1280:720 -s hd720 out.mp4",
			wantProfile{"libx264", Default, "1280x720@?", "", 1280 * 720}},
		// Two outputs, each with its own map.
		{in720 + "-map 0:v -c:v libx264 -preset veryfast -s 1280x720 -r 30 a.mp4 -map 0:v:0 -c:v libx264 -preset veryfast -s 640x360 -r 30 b.mp4",
			wantProfile{"libx264", "veryfast", "1280x720@30,640x360@30", "", 1280*720 + 640*360}},
		// Rungs at the input's unchanged rate keep their ratio 1.
		{in720 + "-map 0:v -c:v libx264 -s 1280x720 a.mp4 -map 0:v -c:v libx264 -s 640x360 b.mp4",
			wantProfile{"libx264", Default, "1280x720@?,640x360@?", "", 1280*720 + 640*360}},
		{in720 + "-c:v libx264 -preset fast a.mp4 -c:v h264_nvenc -preset p4 b.mp4",
			wantProfile{Mixed, Other, "?x?@?,?x?@?", "", 0}},
		// A three-rung ladder with split=3.
		{in720 + "-filter_complex [0:v]split=3[a][b][c];[b]scale=640:360[b2];[c]scale=426:240,fps=15[c2] " +
			"-map [a] -c:v libx264 -preset medium -r 30 a.mp4 -map [b2] -c:v libx264 -preset medium -r 30 b.mp4 -map [c2] -c:v libx264 -preset medium c.mp4",
			wantProfile{"libx264", "medium", "640x360@30,426x240@15,?x?@30", "", 0}},
		{in720 + "-filter_complex [0:v]split=2[a][b];[a]scale=1280:720[a2];[b]scale=640:360[b2] -map [a2] -c:v libx264 a.mp4 -map [b2] -c:v libx264 b.mp4",
			wantProfile{"libx264", Default, "1280x720@?,640x360@?", "", 1280*720 + 640*360}},
		// Two graphs read as one; an output without -map picks its own.
		{in720 + "-filter_complex [0:v]scale=1280:720[a] -filter_complex [0:v]scale=640:360[b] -map [a] -c:v libx264 a.mp4 -map [b] -c:v libx264 b.mp4 -c:v libx264 -s 320x180 c.mp4",
			wantProfile{"libx264", Default, "1280x720@?,640x360@?,320x180@?", "", 1280*720 + 640*360 + 320*180}},
		// A label used before the filter that makes it is not followed
		// back, and is no output of the graph; scale still sets the size.
		{in720 + "-filter_complex [x]scale=640:360[y];[0:v]null[x] -map [y] -c:v libx264 o.mp4",
			wantProfile{"libx264", Default, "640x360@?", "", 640 * 360}},
		{in720 + "-filter_complex [x]scale=640:360[y];[0:v]null[x] -map [x] -c:v libx264 o.mp4",
			wantProfile{Unknown, Unknown, Unknown, "", 0}},
		// One .ts with two video streams, per-stream codecs and sizes.
		{in720 + "-map 0:v -map 0:v -c:v:0 libx264 -preset:v:0 fast -c:v:1 libx264 -preset:v:1 fast -s:v:0 1280x720 -s:v:1 640x360 -r 30 -f mpegts out.ts",
			wantProfile{"libx264", "fast", "1280x720@30,640x360@30", "", 1280*720 + 640*360}},
		{in720 + "-map 0:v -map 0:v -c:v:0 libx264 -c:v:1 copy -s:v:0 640x360 -f mpegts out.ts",
			wantProfile{"libx264", Default, "640x360@?,?x?@?", "", 640 * 360}}, // the copy keeps the input's rate, as the first does
		// An absolute stream index after an audio stream of unknown count.
		{in720 + "-map 0:a -map 0:v -c:1 libx264 out.mp4", wantProfile{Unknown, Default, "?x?@?", "", 0}},
		{in720 + "-map 0:a:0 -map 0:v -c:1 libx264 out.mp4", wantProfile{"libx264", Default, "?x?@?", "", 0}},
		{in720 + "-c:v h264 out.mp4", wantProfile{Unknown, Default, "?x?@?", "", 0}},
		{in720 + "-c:v mpeg4 out.mp4", wantProfile{Other, Default, "?x?@?", "", 0}},
		{in720 + "-c:v libsvtav1 -preset 8 out.mkv", wantProfile{"libsvtav1", "8", "?x?@?", "", 0}},
		{in720 + "-c:v libx264 -vpre fast out.mkv", wantProfile{"libx264", Unknown, "?x?@?", "", 0}},
		{in720 + "-c copy out.mkv", wantProfile{Copy, Default, "?x?@?", "", 0}},
		{in720 + "-vn -c:a aac out.m4a", wantProfile{Unknown, Unknown, Unknown, "", 0}},
		{"ffmpeg -hwaccel cuda -hwaccel_output_format cuda -i in.mp4 -c:v h264_nvenc -preset p5 -vf scale_cuda=1280:720 out.mp4",
			wantProfile{"h264_nvenc", "p5", "1280x720@?", "cuda", 1280 * 720}},
		{"ffmpeg -hwaccel vaapi -i in.mp4 -c:v h264_vaapi -vf format=nv12,hwupload,scale_vaapi=w=1280:h=720 out.mp4",
			wantProfile{"h264_vaapi", Default, "1280x720@?", "vaapi", 1280 * 720}},
		// Unknown boolean flags would shift the parse: -nostdin, -nostats
		// and -re take no argument; a misread would make "-i" a value.
		{"ffmpeg -nostdin -nostats -re -y -i in.flv -c:v libx264 -preset faster -s 640x360 -an out.flv",
			wantProfile{"libx264", "faster", "640x360@?", "none", 640 * 360}},
		// An AVOption takes one argument, even one ffmpeg's table lacks.
		{"ffmpeg -i in.flv -x264-params keyint=60 -tune zerolatency -g 60 -c:v libx264 -preset veryfast out.flv",
			wantProfile{"libx264", "veryfast", "?x?@?", "none", 0}},
		// Not understood: Unknown, never a guess.
		{"ffmpeg -autorotate -i in.mp4 -c:v libx264 out.mp4", wantProfile{Unknown, Unknown, Unknown, Unknown, 0}},
		{"ffmpeg -i in.mp4 -filter_complex_script graph.txt -map [v] -c:v libx264 out.mp4", wantProfile{Unknown, Unknown, Unknown, "none", 0}},
		{"ffmpeg -i in.mp4 -/filter_complex graph.txt -map [v] -c:v libx264 out.mp4", wantProfile{Unknown, Unknown, Unknown, "none", 0}},
		{"ffmpeg -i in.mp4 -map 0 -c:v libx264 out.mkv", wantProfile{Unknown, Unknown, Unknown, "none", 0}},
		{"ffmpeg -i in.mp4 -map 0:v -map 0:v -c:v libx264 -f hls -var_stream_map v:0,v:1 out_%v.m3u8",
			wantProfile{Unknown, Unknown, Unknown, "none", 0}},
		{"ffmpeg -i in.mp4 -c:v libx264 -f tee [f=flv]a.flv|[f=mp4]b.mp4", wantProfile{Unknown, Unknown, Unknown, "none", 0}},
		{"ffmpeg -i in.mp4 -c:v libx264", wantProfile{Unknown, Unknown, Unknown, Unknown, 0}},
	} {
		wantProfile.check(c.want, t, c.args, FromArgs(strings.Fields(c.args)))
	}
}

func TestFromArgsRungOrderFollowsFFmpeg(t *testing.T) {
	p := FromArgs(strings.Fields(in720 + "-map 0:v -c:v libx264 -s 640x360 -r 15 a.mp4 -map 0:v -c:v libx264 -s 1280x720 -r 30 b.mp4"))
	if p.Ladder.Label != "1280x720@30,640x360@15" {
		t.Fatalf("ladder %q", p.Ladder.Label)
	}
	// frame= counts the first output (15 fps): the 30 fps rung encodes two
	// frames for each.
	if px, ok := p.PixelsPerFrame(); !ok || px != 640*360+2*1280*720 {
		t.Errorf("PixelsPerFrame = %v, %v", px, ok)
	}
}

func TestFromProcess(t *testing.T) {
	root := t.TempDir()
	write := func(pid, content string) {
		if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, "cmdline"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10", "/usr/bin/ffmpeg\x00-i\x00in.flv\x00-c:v\x00libx264\x00-preset\x00slow\x00out.flv\x00")
	write("11", "curl\x00-s\x00-T\x00-\x00http://127.0.0.1/ingest\x00")
	write("12", "")
	write("13", "ffmpeg\x00"+strings.Repeat("x", MaxCmdlineBytes))
	p, err := FromProcess(root, 10)
	if err != nil || p.Encoder.Label != "libx264" || p.Preset.Label != "slow" || p.Encoder.From != FromCmdline {
		t.Errorf("FromProcess(ffmpeg) = %+v, %v", p, err)
	}
	if _, err := FromProcess(root, 11); err != ErrNotFFmpeg {
		t.Errorf("FromProcess(curl): %v, want ErrNotFFmpeg", err)
	}
	if _, err := FromProcess(root, 12); err != ErrNoCmdline {
		t.Errorf("FromProcess(empty cmdline): %v, want ErrNoCmdline", err)
	}
	if _, err := FromProcess(root, 13); err != ErrCmdlineTooLong {
		t.Errorf("FromProcess(huge): %v, want ErrCmdlineTooLong", err)
	}
	if _, err := FromProcess(root, 14); err == nil {
		t.Error("FromProcess(gone) did not fail")
	}
}

func TestFromArgsNumbers(t *testing.T) {
	p := FromArgs([]string{"ffmpeg", "-i", "in.flv",
		"-filter_complex", "[0:v] split=2 [a][b];\n[b] scale=640:360 [b2]",
		"-map", "[a]", "-c:v", "libx264", "-crf", "23", "-s", "hd720", "-r", "ntsc", "a.mp4",
		"-map", "[b2]", "-c:v", "libx264", "-b:v", "2500k", "-b:a", "128k", "-r", "30000/1001", "b.mp4"})
	if p.Ladder.Label != "1280x720@29.97,640x360@29.97" || len(p.Outputs) != 2 {
		t.Fatalf("ladder %q, outputs %+v", p.Ladder.Label, p.Outputs)
	}
	a, b := p.Outputs[0], p.Outputs[1]
	if !a.HasCRF || a.CRF != 23 || a.BitrateBPS != 0 || b.HasCRF || b.BitrateBPS != 2.5e6 {
		t.Errorf("numbers: %+v %+v", a, b)
	}
	if px, ok := p.PixelsPerFrame(); !ok || px != 1280*720+640*360 {
		t.Errorf("PixelsPerFrame = %v, %v", px, ok)
	}
}
