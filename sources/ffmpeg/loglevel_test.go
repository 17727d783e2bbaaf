package ffmpeg

import (
	"strings"
	"testing"
)

// countLevels runs text through one connection's classifier.
func countLevels(text string) [NumLevels]int {
	var l logLevels
	var n [NumLevels]int
	for _, line := range strings.Split(text, "\n") {
		if lvl, k := l.Line([]byte(line)); k > 0 {
			n[lvl] += k
		}
	}
	return n
}

// Lines as Debian's ffmpeg 5.1 writes them decoding a corrupted mpegts
// file, with -loglevel level+info and without.
const (
	markedLog = `[info] Input #0, mpegts, from 'bad.ts':
[info]   Duration: 00:00:04.00, start: 1.400000, bitrate: 114 kb/s
[mpegts @ 0x5581] [warning] Packet corrupt (stream = 0, dts = 356400).
[h264 @ 0x5582] [error] error while decoding MB 19 1, bytestream 2550
[h264 @ 0x5582] [info] concealing 12 DC, 12 AC, 12 MV errors in P frame
[warning] bad.ts: corrupt decoded frame in stream 0
[error] Error while decoding stream #0:0: Invalid data found when processing input
[h264 @ 0x5582] [error] gray chroma
[h264 @ 0x5583] [warning] Cannot use next picture in error concealment
[null @ 0x5584] [error] Application provided invalid, non monotonically increasing dts to muxer in stream 0: 44 >= 44
[h264 @ 0x5582] [fatal] imaginary fatal message
frame=   90 fps=0.0 q=-0.0 Lsize=N/A time=00:00:03.56 bitrate=N/A speed=6.59x
Packet corrupt: an unmarked line among marked ones is a bare print, not a guess`

	unmarkedLog = `Input #0, mpegts, from 'bad.ts':
  Metadata:
    title           : error handling demo
[mpegts @ 0x5581] Packet corrupt (stream = 0, dts = 356400).
[mpegts @ 0x5581] PES packet size mismatch
[h264 @ 0x5582] error while decoding MB 19 1, bytestream 2550
[h264 @ 0x5582] concealing 12 DC, 12 AC, 12 MV errors in P frame
    Last message repeated 2 times
[h264 @ 0x5582] reference picture missing during reorder
[h264 @ 0x5582] Missing reference picture, default is 65548
    Last message repeated 1 times
bad.ts: corrupt decoded frame in stream 0
Error while decoding stream #0:0: Invalid data found when processing input
[h264 @ 0x5583] Cannot use next picture in error concealment
[mp4 @ 0x5585] Non-monotonous DTS in output stream 0:0; previous: 5, current: 4; changing to 6.
[http @ 0x5586] Will reconnect at 1234 in 1 second(s), error=Connection refused.
[tcp @ 0x5587] Connection to tcp://10.0.0.1:1935 failed: Connection refused`
)

func TestLogLevelsMarked(t *testing.T) {
	// Markers are taken as they are: "gray chroma" is an error because
	// ffmpeg says so; "concealing ... errors" is info; fatal counts as error.
	if got, want := countLevels(markedLog), [NumLevels]int{LevelError: 5, LevelWarning: 3}; got != want {
		t.Errorf("marked: %v, want %v", got, want)
	}
}

func TestLogLevelsGuessed(t *testing.T) {
	// errors: decoding MB, missing reference (+1 repeat), Error while
	// decoding, tcp refused; warnings: Packet corrupt, PES mismatch,
	// corrupt decoded frame, error concealment, Non-monotonous DTS, reconnect.
	// The metadata line and "concealing ... errors" (repeated) are not counted.
	if got, want := countLevels(unmarkedLog), [NumLevels]int{LevelError: 5, LevelWarning: 6}; got != want {
		t.Errorf("unmarked: %v, want %v", got, want)
	}
}

func TestLogLevelsHostile(t *testing.T) {
	for _, text := range []string{
		"Last message repeated 5 times", // nothing before it to repeat
		"Last message repeated 99999999999 times",
		"[error]", "[", "[] ", "[h264 @ 0x1]", "[h264 @ 0x1] ", "[errorr] x", "[ERROR] x",
		strings.Repeat("x", 1000) + " error while decoding", // past the head that is read
	} {
		if got := countLevels(text); got != [NumLevels]int{} {
			t.Errorf("%q counted %v", text, got)
		}
	}
}
