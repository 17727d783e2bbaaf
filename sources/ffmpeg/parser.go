// Package ffmpeg turns FFmpeg progress output into per-stream readings.
//
// It understands the key=value blocks that `ffmpeg -progress URL` writes (each
// block ends in progress=continue or progress=end) and the classic status line
// ffmpeg prints on stderr (frame= fps= ... speed=), mixed with ordinary log
// lines, as `ffmpeg ... 2>&1` produces them.
package ffmpeg

import (
	"bytes"
	"strconv"
)

// Field is one reading of a stream.
type Field uint8

// The readings a stream carries.
const (
	Frames     Field = iota // frames encoded so far
	FPS                     // frames per second
	Bitrate                 // output bitrate in kbit/s
	Speed                   // encoding speed, 1 = realtime
	OutTime                 // output timestamp in seconds
	Size                    // output size in bytes
	Dropped                 // frames dropped
	Duplicated              // frames duplicated
	NumFields
)

// Update is what one block (a progress block or a status line) says.
// Set marks the fields it gives a value; Cleared marks fields it reports as
// N/A, which makes them unknown again.
type Update struct {
	Values  [NumFields]float64
	Set     uint16
	Cleared uint16
	End     bool // progress=end: ffmpeg finished this output
}

func (u *Update) set(f Field, v float64) {
	u.Values[f] = v
	u.Set |= 1 << f
	u.Cleared &^= 1 << f
}

func (u *Update) clear(f Field) {
	u.Set &^= 1 << f
	u.Cleared |= 1 << f
}

// LineKind says how the parser read a line.
type LineKind uint8

const (
	Ignored  LineKind = iota // a log line, garbage, or an unknown key
	Progress                 // a -progress key=value line
	Status                   // a stderr status line
)

// Parser reads one connection's lines. It is not safe for concurrent use.
type Parser struct {
	block Update // the -progress block being read
}

// Line reads one line, without its terminator. When the line completes a
// block, it returns that block and done=true.
func (p *Parser) Line(line []byte) (u Update, done bool, kind LineKind) {
	line = bytes.TrimSpace(line)
	key, value, ok := bytes.Cut(line, []byte{'='})
	if !ok || !isKey(key) {
		return u, false, Ignored
	}
	value = bytes.TrimLeft(value, " ")
	// A status line holds several key= value pairs separated by spaces;
	// a -progress line holds exactly one.
	if sp := bytes.IndexByte(value, ' '); sp >= 0 && bytes.IndexByte(value[sp:], '=') >= 0 {
		if !statusKeys[string(key)] {
			return u, false, Ignored
		}
		if !parseStatus(&u, line) {
			return Update{}, false, Ignored
		}
		return u, true, Status
	}
	if string(key) == "progress" {
		u = p.block
		u.End = string(value) == "end"
		p.block = Update{}
		return u, true, Progress
	}
	if !apply(&p.block, key, value) {
		return u, false, Ignored
	}
	return u, false, Progress
}

// statusKeys are the keys a stderr status line starts with.
var statusKeys = map[string]bool{"frame": true, "size": true, "Lsize": true}

func isKey(b []byte) bool {
	if len(b) == 0 || len(b) > 64 {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// parseStatus reads "frame=  240 fps= 30 q=28.0 size=    1024kB time=... speed=1.01x".
// It reports whether at least one known field was read.
func parseStatus(u *Update, line []byte) bool {
	known := false
	for len(line) > 0 {
		eq := bytes.IndexByte(line, '=')
		if eq <= 0 {
			break
		}
		key := bytes.TrimSpace(line[:eq])
		rest := bytes.TrimLeft(line[eq+1:], " ")
		end := bytes.IndexByte(rest, ' ')
		if end < 0 {
			end = len(rest)
		}
		if apply(u, key, rest[:end]) {
			known = true
		}
		line = rest[end:]
	}
	return known
}

// apply reads one key's value into u and reports whether the key is known.
// A known key with an unreadable value (N/A, garbage) clears the field.
func apply(u *Update, key, value []byte) bool {
	var (
		f  Field
		v  float64
		ok bool
	)
	switch string(key) {
	case "frame":
		f = Frames
		v, ok = number(value, "")
	case "fps":
		f = FPS
		v, ok = number(value, "")
	case "bitrate":
		f = Bitrate
		v, ok = number(value, "kbits/s")
	case "speed":
		f = Speed
		v, ok = number(value, "x")
	case "total_size":
		f = Size
		v, ok = number(value, "")
	case "size", "Lsize":
		f = Size
		v, ok = kibibytes(value)
	case "out_time_us", "out_time_ms": // both are microseconds (an old ffmpeg bug kept for compatibility)
		f = OutTime
		v, ok = number(value, "")
		v /= 1e6
	case "out_time", "time":
		f = OutTime
		v, ok = clock(value)
	case "drop_frames", "drop":
		f = Dropped
		v, ok = number(value, "")
	case "dup_frames", "dup":
		f = Duplicated
		v, ok = number(value, "")
	default:
		return false
	}
	if ok && v >= 0 {
		u.set(f, v)
	} else {
		u.clear(f)
	}
	return true
}

// number parses a decimal with an optional unit suffix, such as "1048.6kbits/s".
func number(b []byte, suffix string) (float64, bool) {
	b = bytes.TrimSuffix(bytes.TrimSpace(b), []byte(suffix))
	if len(b) == 0 || len(b) > 32 || !looksNumeric(b) {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(b), 64)
	return v, err == nil
}

// looksNumeric rejects N/A, inf, nan and hex before strconv sees them.
func looksNumeric(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E') {
			return false
		}
	}
	return true
}

// kibibytes parses a stderr size such as "1024kB" or "1024KiB" (both mean KiB in ffmpeg).
func kibibytes(b []byte) (float64, bool) {
	for _, unit := range []string{"KiB", "kB"} {
		if bytes.HasSuffix(b, []byte(unit)) {
			v, ok := number(b, unit)
			return v * 1024, ok
		}
	}
	return number(b, "B")
}

// clock parses "HH:MM:SS.micro"; a negative time (ffmpeg prints one before the
// first packet) is reported as unreadable.
func clock(b []byte) (float64, bool) {
	h, rest, ok1 := bytes.Cut(b, []byte{':'})
	m, s, ok2 := bytes.Cut(rest, []byte{':'})
	if !ok1 || !ok2 || bytes.HasPrefix(h, []byte{'-'}) {
		return 0, false
	}
	hv, ok1 := number(h, "")
	mv, ok2 := number(m, "")
	sv, ok3 := number(s, "")
	if !ok1 || !ok2 || !ok3 {
		return 0, false
	}
	return hv*3600 + mv*60 + sv, true
}
