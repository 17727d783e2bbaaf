package encodeprofile

import (
	"net/url"
	"strings"
	"testing"
)

// Each parser, whatever it is fed, answers labels from the bounded domains
// only, keeps bounded state, and never panics.

func FuzzFromQuery(f *testing.F) {
	for _, s := range []string{
		"encoder=libx264&preset=medium&ladder=1280x720@30,640x360@30",
		"ladder=1920x1080@29.97,?x360@?", "encoder=h264_nvenc&preset=p7", "preset=8", "ladder=1x1@0.01",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		p, err := FromQuery(q)
		if err != nil {
			if _, isParam := err.(*ParamError); !isParam {
				t.Fatalf("error %v is not a ParamError", err)
			}
			return
		}
		if err := checkProfile(p); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzStderr(f *testing.F) {
	f.Add(ladderHeader)
	f.Add(adversarialStderr)
	f.Add("Stream mapping:\n  Stream #0:0 -> #0:0 (a (b) -> c (libx265))\nOutput #0, x, to 'y':\n  Stream #0:0: Video: hevc (libx265), yuv420p(tv, bt709), 7680x4320, q=2-31, 59.94 fps\n")
	f.Fuzz(func(t *testing.T, text string) {
		var s Stderr
		for _, l := range strings.Split(text, "\n") {
			s.Line([]byte(l))
			if len(s.streams) > MaxStderrStreams {
				t.Fatalf("%d streams kept", len(s.streams))
			}
		}
		if err := checkProfile(s.Profile()); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzFromArgs(f *testing.F) {
	f.Add(strings.Join(adversarialArgs, "\x00"))
	f.Add(strings.Join(strings.Fields(in720+"-filter_complex [0:v]split=3[a][b][c];[b]scale=640:360[b2];[c]scale=426:240,fps=15[c2] "+
		"-map [a] -c:v libx264 -r 30 a.mp4 -map [b2] -c:v:0 h264_nvenc -preset:v:0 p4 b.mp4 -map [c2] -map 0:a:0 -c:0 libsvtav1 -preset 4 c.mp4"), "\x00"))
	f.Add("ffmpeg\x00-hwaccel\x00cuda\x00-i\x00x\x00-map\x000:v\x00-map\x000:v\x00-c:v:1\x00copy\x00-s:v:0\x00hd720\x00-vf\x00yadif,fps=ntsc\x00-r:v:1\x0030000/1001\x00o")
	f.Fuzz(func(t *testing.T, joined string) {
		argv := strings.Split(joined, "\x00")
		if err := checkProfile(FromArgs(argv)); err != nil {
			t.Fatal(err)
		}
	})
}
