// Package ffmpeg turns FFmpeg progress output into per-stream readings.
//
// It understands the key=value blocks that `ffmpeg -progress URL` writes (each
// block ends in progress=continue or progress=end) and the classic status line
// ffmpeg prints on stderr (frame= fps= ... speed=), mixed with ordinary log
// lines, as `ffmpeg ... 2>&1` produces them.
package ffmpeg

import (
	"bytes"
	"math"
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

// limits are the largest readings that can be real. A value above its
// limit, negative or not finite is refused: the line counts as rejected and
// the field keeps the value it had. Each is far beyond any encode (a remux
// runs thousands of times realtime; a PiB of output; 31 years of media).
var limits = [NumFields]float64{
	Frames:     1e12,
	FPS:        1e6,
	Bitrate:    1e9, // kbit/s: 1 Pbit/s
	Speed:      1e6,
	OutTime:    1e9, // seconds
	Size:       1 << 50,
	Dropped:    1e12,
	Duplicated: 1e12,
}

// maxQuantizer is the largest quantizer that can be real: ffmpeg's scale
// ends near 278 (FF_LAMBDA_MAX / FF_QP2LAMBDA).
const maxQuantizer = 1000

// MaxOutputs is how many output streams of one encode keep a quantizer
// reading: each is a series, so one stream holds a bounded number of them.
// The key of a further output counts as an ignored line.
const MaxOutputs = 16

// Quantizer is the q of one output stream of an encode.
type Quantizer struct {
	Output string // the output stream as ffmpeg numbers it, FILE:INDEX ("0:0", "1:0")
	Q      float64
}

// update is what one block (a progress block or a status line) says.
// Set marks the fields it gives a value; Cleared marks fields it reports as
// N/A, which makes them unknown again.
type update struct {
	Values        [NumFields]float64
	Set           uint16
	Cleared       uint16
	End           bool // progress=end: ffmpeg finished this output
	NumQuantizers int
	Quantizers    [MaxOutputs]Quantizer // the first NumQuantizers hold readings
}

func (u *update) set(f Field, v float64) {
	u.Values[f] = v
	u.Set |= 1 << f
	u.Cleared &^= 1 << f
}

func (u *update) clear(f Field) {
	u.Set &^= 1 << f
	u.Cleared |= 1 << f
}

func (u *update) setQuantizer(output string, q float64) {
	for i := range u.Quantizers[:u.NumQuantizers] {
		if u.Quantizers[i].Output == output {
			u.Quantizers[i].Q = q
			return
		}
	}
	u.Quantizers[u.NumQuantizers] = Quantizer{output, q}
	u.NumQuantizers++
}

// lineKind says how the parser read a line.
type lineKind uint8

const (
	lineIgnored  lineKind = iota // a log line, garbage, or an unknown key
	lineProgress                 // a -progress key=value line
	lineStatus                   // a stderr status line
	lineRejected                 // a progress or status line with a value that cannot be real, dropped
)

// progressParser reads one connection's lines. It is not safe for concurrent use.
type progressParser struct {
	block   update   // the -progress block being read
	done    update   // the block or status line last completed
	outputs []string // output streams named so far by this encode, at most MaxOutputs
}

// Line reads one line, without its terminator. When the line completes a
// block, it returns that block, valid until the next call; otherwise nil.
func (p *progressParser) Line(line []byte) (*update, lineKind) {
	line = bytes.TrimSpace(line)
	if _, rest, ok := cutLevel(line); ok {
		line = rest // -loglevel level+info prints "[info] frame=..."
	}
	key, value, ok := bytes.Cut(line, []byte{'='})
	if !ok || !isKey(key) {
		return nil, lineIgnored
	}
	value = bytes.TrimLeft(value, " ")
	// A status line holds several key= value pairs separated by spaces;
	// a -progress line holds exactly one.
	if sp := bytes.IndexByte(value, ' '); sp >= 0 && bytes.IndexByte(value[sp:], '=') >= 0 {
		if !statusKeys[string(key)] {
			return nil, lineIgnored
		}
		p.done = update{}
		switch parseStatus(&p.done, line) {
		case unknownKey:
			return nil, lineIgnored
		case refused:
			return &p.done, lineRejected
		}
		return &p.done, lineStatus
	}
	if string(key) == "progress" {
		p.done, p.block = p.block, update{}
		p.done.End = string(value) == "end"
		if p.done.End {
			p.outputs = nil // what follows is another encode
		}
		return &p.done, lineProgress
	}
	switch p.apply(&p.block, key, value) {
	case unknownKey:
		return nil, lineIgnored
	case refused:
		return nil, lineRejected
	}
	return nil, lineProgress
}

// progressShaped reports whether line looks like key=value, as -progress
// writes; an ignored line that does not is a log line.
func progressShaped(line []byte) bool {
	key, _, ok := bytes.Cut(bytes.TrimSpace(line), []byte{'='})
	return ok && isKey(key)
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

// result is what reading one key=value did.
type result uint8

const (
	unknownKey result = iota
	read              // a reading, or N/A
	refused           // a value that cannot be real
)

// parseStatus reads "frame=  240 fps= 30 q=28.0 size=    1024kB time=... speed=1.01x":
// unknownKey when no known key is in it, refused when a value was refused
// (the other values are read all the same).
func parseStatus(u *update, line []byte) result {
	res := unknownKey
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
		if r := apply(u, key, rest[:end]); r > res {
			res = r
		}
		line = rest[end:]
	}
	return res
}

// apply reads one -progress key, including each output's quantizer.
func (p *progressParser) apply(u *update, key, value []byte) result {
	if output, ok := quantizerKey(key); ok {
		return p.quantizer(u, output, value)
	}
	return apply(u, key, value)
}

// apply reads one key's value into u. A known key with an unreadable value
// (N/A, garbage) clears the field; one that cannot be real leaves it as it is.
func apply(u *update, key, value []byte) result {
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
		return unknownKey
	}
	switch {
	case !ok, f == OutTime && v < 0 && v >= -limits[OutTime]: // ffmpeg's time before the first packet
		u.clear(f)
	case !(v >= 0 && v <= limits[f]): // also NaN and ±Inf
		return refused
	default:
		u.set(f, v)
	}
	return read
}

// quantizer reads an output's q. -1 is ffmpeg's "no quality in this
// report" (the last report of libx264, say): the reading stays as it was.
func (p *progressParser) quantizer(u *update, output, value []byte) result {
	name, ok := p.output(output)
	if !ok {
		return unknownKey
	}
	q, ok := number(value, "")
	switch {
	case !ok || q == -1:
	case !(q >= 0 && q <= maxQuantizer):
		return refused
	default:
		u.setQuantizer(name, q)
	}
	return read
}

// output returns the name of output FILE_INDEX ("0_0" gives "0:0"), made
// once per encode; ok is false past MaxOutputs.
func (p *progressParser) output(id []byte) (string, bool) {
	file, index, _ := bytes.Cut(id, []byte{'_'})
	for _, name := range p.outputs {
		if len(name) == len(id) && name[:len(file)] == string(file) && name[len(file)+1:] == string(index) {
			return name, true
		}
	}
	if len(p.outputs) == MaxOutputs {
		return "", false
	}
	name := string(file) + ":" + string(index)
	p.outputs = append(p.outputs, name)
	return name, true
}

// quantizerKey reads stream_FILE_INDEX_q, as ffmpeg prints it (%d_%d: no
// leading zeros), and returns FILE_INDEX.
func quantizerKey(key []byte) ([]byte, bool) {
	id, ok := bytes.CutPrefix(key, []byte("stream_"))
	if !ok {
		return nil, false
	}
	if id, ok = bytes.CutSuffix(id, []byte("_q")); !ok {
		return nil, false
	}
	file, index, ok := bytes.Cut(id, []byte{'_'})
	return id, ok && decimal(file) && decimal(index)
}

// decimal reports whether b is a small number as %d prints it.
func decimal(b []byte) bool {
	if len(b) == 0 || len(b) > 5 || (b[0] == '0' && len(b) > 1) {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// number parses a decimal with an optional unit suffix, such as "1048.6kbits/s".
// A number too large for a float64 reads as ±Inf, and NaN or ±Inf spelled
// out ("nan", "-nan", "inf", "Infinity", any case) as themselves, for the
// limits to refuse; N/A, other words and hex are unreadable.
func number(b []byte, suffix string) (float64, bool) {
	b = bytes.TrimSuffix(bytes.TrimSpace(b), []byte(suffix))
	if len(b) == 0 || len(b) > 32 {
		return 0, false
	}
	if !looksNumeric(b) {
		return notFinite(b)
	}
	v, err := strconv.ParseFloat(string(b), 64)
	return v, err == nil || math.IsInf(v, 0)
}

// notFinite reads NaN or ±Inf spelled out with an optional sign, as C's
// printf writes them ("-nan" included).
func notFinite(b []byte) (float64, bool) {
	sign := 1
	if b[0] == '+' || b[0] == '-' {
		if b[0] == '-' {
			sign = -1
		}
		b = b[1:]
	}
	switch {
	case bytes.EqualFold(b, []byte("nan")):
		return math.NaN(), true
	case bytes.EqualFold(b, []byte("inf")), bytes.EqualFold(b, []byte("infinity")):
		return math.Inf(sign), true
	}
	return 0, false
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
