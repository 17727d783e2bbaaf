package ffmpeg

import (
	"bytes"
	"strings"
	"testing"
)

// benchConsume measures lines/s and allocations per block for a body of
// repeated blocks read through the line reader, parser and stream update.
func benchConsume(b *testing.B, block string, linesPerBlock int) {
	body := []byte(strings.Repeat(block, 1000))
	hub := NewHub(DefaultConfig)
	conn, err := hub.Open("bench")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := conn.Consume(bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
	blocks := float64(b.N) * 1000
	b.ReportMetric(blocks*float64(linesPerBlock)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(testing.AllocsPerRun(1, func() { conn.Consume(bytes.NewReader(body)) }))/1000, "allocs/block")
}

func BenchmarkParseProgress(b *testing.B) {
	benchConsume(b, progressBlock, strings.Count(progressBlock, "\n"))
}

func BenchmarkParseStatus(b *testing.B) {
	benchConsume(b, "frame=  240 fps= 30 q=28.0 size=    1024kB time=00:00:08.00 bitrate=1048.6kbits/s dup=0 drop=2 speed=1.01x\r", 1)
}
