package ffmpeg

import (
	"bytes"
	"strconv"
)

// Level is the severity of an ffmpeg log message, among those counted.
type Level uint8

const (
	LevelError   Level = iota // error, fatal or panic
	LevelWarning              // warning
	NumLevels
)

// Levels names each Level, in order, for the metric attribute.
var Levels = [NumLevels]string{"error", "warning"}

// notCounted is the level of every other message (info, verbose, ...).
const notCounted = NumLevels

// markers are the levels that `-loglevel level+...` prints before each
// message, after its "[context @ 0x...] " if it has one.
var markers = map[string]Level{
	"panic": LevelError, "fatal": LevelError, "error": LevelError, "warning": LevelWarning,
	"info": notCounted, "verbose": notCounted, "debug": notCounted, "trace": notCounted,
}

// Without markers a message says nothing of its level: these phrases of
// ffmpeg's own messages (lower case) say it instead, warnings first, as
// some warnings mention an error ("error concealment", "error=...").
var (
	warningPhrases = [][]byte{
		[]byte("packet corrupt"), []byte("corrupt decoded frame"), []byte("corrupt input packet"),
		[]byte("non-monotonous dts"), []byte("out of order"), []byte("pes packet size mismatch"),
		[]byte("invalid timestamps"), []byte("past duration"), []byte("reconnect"),
		[]byte("error concealment"), []byte("underflow"),
	}
	errorPhrases = [][]byte{
		[]byte("error while decoding"), []byte("decode_slice_header error"), []byte("invalid data found"),
		[]byte("non monotonically increasing dts"), []byte("missing reference picture"),
		[]byte("non-existing pps"), []byte("no frame!"), []byte("corrupted macroblock"),
		[]byte("invalid nal unit"), []byte("conversion failed"), []byte("connection refused"),
		[]byte("connection timed out"), []byte("broken pipe"), []byte("error opening"), []byte("error writing"),
	}
)

// logLevels reads the level of one connection's log lines.
type logLevels struct {
	marked  bool  // a marker was seen: this ffmpeg marks every message, so nothing is guessed
	last    Level // of the last log line, if counted: "Last message repeated N times" repeats it
	counted bool  // the last log line was counted
	lower   [256]byte
}

// Line returns the level of a log line and how many messages it stands
// for (more than one for "Last message repeated N times"); n is 0 for a
// line of a level not counted.
func (l *logLevels) Line(line []byte) (lvl Level, n int) {
	msg := cutContext(bytes.TrimSpace(line))
	lvl, msg, marked := cutLevel(msg)
	l.marked = l.marked || marked
	if times, ok := repeated(msg); ok {
		if !l.counted {
			return notCounted, 0
		}
		return l.last, times
	}
	if !marked {
		lvl = l.guess(msg)
	}
	l.last, l.counted = lvl, lvl != notCounted
	if !l.counted {
		return notCounted, 0
	}
	return lvl, 1
}

// guess reads the level of an unmarked message from what it says.
func (l *logLevels) guess(msg []byte) Level {
	if l.marked {
		return notCounted // a status line or a bare print among marked messages
	}
	// ffmpeg's messages are short: the head is enough, and a long line costs no more.
	lower := l.lower[:min(len(msg), len(l.lower))]
	for i, c := range msg[:len(lower)] {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	for _, p := range warningPhrases {
		if bytes.Contains(lower, p) {
			return LevelWarning
		}
	}
	for _, p := range errorPhrases {
		if bytes.Contains(lower, p) {
			return LevelError
		}
	}
	return notCounted
}

// cutContext drops the "[h264 @ 0x55d0c8a0] " that names a message's source.
func cutContext(line []byte) []byte {
	if len(line) == 0 || line[0] != '[' {
		return line
	}
	end := bytes.Index(line, []byte("] "))
	if end < 0 || !bytes.Contains(line[:end], []byte(" @ ")) {
		return line
	}
	return line[end+2:]
}

// cutLevel cuts a leading "[error] " marker and returns its level.
func cutLevel(line []byte) (lvl Level, rest []byte, ok bool) {
	if len(line) < 3 || line[0] != '[' {
		return notCounted, line, false
	}
	end := bytes.IndexByte(line, ']')
	if end < 0 || end+1 >= len(line) || line[end+1] != ' ' {
		return notCounted, line, false
	}
	lvl, ok = markers[string(line[1:end])]
	if !ok {
		return notCounted, line, false
	}
	return lvl, line[end+2:], true
}

// repeated reads ffmpeg's "Last message repeated 3 times".
func repeated(line []byte) (int, bool) {
	n, ok := bytes.CutPrefix(line, []byte("Last message repeated "))
	if !ok {
		return 0, false
	}
	if n, ok = bytes.CutSuffix(n, []byte(" times")); !ok || len(n) > 6 {
		return 0, false
	}
	times, err := strconv.Atoi(string(n))
	return times, err == nil && times > 0
}
