package encodeprofile

import (
	"strings"
	"testing"
)

// The ingest feeds every stderr line through Stderr.Line, progress lines
// included: what it costs per line.
func BenchmarkStderrLine(b *testing.B) {
	lines := strings.Split(ladderHeader, "\n")
	status := []byte("frame=  120 fps= 30 q=28.0 size=     512kB time=00:00:04.00 bitrate=1048.6kbits/s speed=1.00x")
	var s Stderr
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%100 < len(lines) {
			s.Line([]byte(lines[i%100]))
		} else {
			s.Line(status)
		}
	}
}

// A three-rung ladder's command line, read once per linked process.
func BenchmarkFromArgs(b *testing.B) {
	argv := strings.Fields(in720 + "-filter_complex [0:v]split=3[a][b][c];[b]scale=640:360[b2];[c]scale=426:240,fps=15[c2] " +
		"-map [a] -c:v libx264 -preset medium -r 30 a.mp4 -map [b2] -c:v libx264 -preset medium -r 30 b.mp4 -map [c2] -c:v libx264 -preset medium c.mp4")
	b.ReportAllocs()
	for b.Loop() {
		FromArgs(argv)
	}
}
