package encodeprofile

import (
	"bytes"
	"slices"
	"strconv"
)

// MaxStderrStreams bounds the output streams a Stderr reader keeps; an
// encode with more has an Unknown ladder.
const MaxStderrStreams = 64

// Stderr reads an encode profile from ffmpeg's stderr header, fed line by
// line: the "Output #N" sections (each output stream's codec, size, rate
// and target bit rate after filters) and the "Stream mapping:" section
// (each output stream's encoder). Input sections, metadata and every other
// line are passed over; no text of a line is kept. The header is printed
// at -loglevel info and above only, and it never shows the preset.
//
// The ladder is known once the mapping and every mapped stream's Output
// line have been read (ffmpeg prints an output's section as its encoder
// starts, in any order). An "Input #0" line after them starts a new
// encode (a shell loop feeding one connection). The zero value is ready;
// not safe for concurrent use.
type Stderr struct {
	section  byte // 'i' input, 'o' output, 'm' mapping, 0 elsewhere
	file     int  // of the current Output section
	mapped   bool // the mapping section was read to its end
	overflow bool
	streams  []stderrStream
}

type stderrStream struct {
	file, index int
	mapped      bool   // named in the mapping section
	described   bool   // its Output line was read
	video       bool   //
	encoder     string // from the mapping, else the Output line; "" unknown
	out         Output
}

// Reset forgets the encode read so far.
func (s *Stderr) Reset() { *s = Stderr{streams: s.streams[:0]} }

// Line reads one line (with or without its line ending).
func (s *Stderr) Line(line []byte) {
	line = bytes.TrimRight(line, "\r\n")
	line = cutLevelPrefix(line)
	if len(line) == 0 {
		return
	}
	if line[0] != ' ' {
		if s.section == 'm' {
			s.mapped = true // the mapping section ends: every output stream is named
		}
		if s.section == 'o' && (line[0] == '[' || progressLine(line)) {
			// Another thread's log line or a -progress line, printed in
			// the middle of an output's section when they share the stream.
			return
		}
		s.section = 0
		switch {
		case bytes.HasPrefix(line, []byte("Input #")):
			if s.mapped || len(s.streams) > 0 {
				s.Reset()
			}
			s.section = 'i'
		case bytes.HasPrefix(line, []byte("Output #")):
			if n, ok := leadingInt(line[len("Output #"):]); ok {
				s.section, s.file = 'o', n
			}
		case bytes.Equal(line, []byte("Stream mapping:")):
			s.section = 'm'
		}
		return
	}
	switch s.section {
	case 'o':
		// Stream lines are indented by exactly two spaces; metadata and
		// side data, deeper.
		if bytes.HasPrefix(line, []byte("  Stream #")) {
			s.outputStream(line[len("  Stream #"):])
		}
	case 'm':
		s.mapping(bytes.TrimLeft(line, " "))
	}
}

// outputStream reads "F:S[(lang)][[id]]: Video: codec (...), pixfmt, WxH
// [SAR...], ..., 2000 kb/s, 30 fps, 15360 tbn".
func (s *Stderr) outputStream(rest []byte) {
	file, index, rest, ok := streamID(rest)
	if !ok || file != s.file {
		return
	}
	_, after, ok := bytes.Cut(rest, []byte(": "))
	if !ok {
		return
	}
	st := s.stream(file, index)
	if st == nil {
		return
	}
	st.described = true
	desc, ok := bytes.CutPrefix(after, []byte("Video: "))
	if !ok {
		return
	}
	st.video = true
	for i, tok := range topLevelFields(desc) {
		switch {
		case i == 0:
			// "h264 (libx264)" in some builds and muxers; "h264 (avc1 /
			// 0x31637661)" in others: only a known encoder name counts.
			if st.encoder == "" {
				for _, g := range parenGroups(tok) {
					if name := string(g); slices.Contains(Encoders, name) {
						st.encoder = name
					}
				}
			}
		case bytes.HasSuffix(tok, []byte(" fps")):
			if f, err := strconv.ParseFloat(string(bytes.TrimSuffix(tok, []byte(" fps"))), 64); err == nil && fpsKnown(f) {
				st.out.FPS = f
			}
		case bytes.HasSuffix(tok, []byte(" kb/s")):
			if f, err := strconv.ParseFloat(string(bytes.TrimSuffix(tok, []byte(" kb/s"))), 64); err == nil && f > 0 && f < 1e9 {
				st.out.BitrateBPS = f * 1000
			}
		default:
			if w, h, ok := size(tok); ok {
				st.out.Width, st.out.Height = w, h
			}
		}
	}
}

// mapping reads one line of the mapping section:
//
//	Stream #0:0 -> #0:0 (rawvideo (native) -> h264 (libx264))
//	Stream #0:0 -> #3:0 (copy)
//	split (graph 0) -> Stream #0:0 (libx264)
//	Stream #0:0 (rawvideo) -> split:default (graph 0)   (into a graph: passed over)
func (s *Stderr) mapping(line []byte) {
	_, right, ok := bytes.Cut(line, []byte(" -> "))
	if !ok {
		return
	}
	if r, ok := bytes.CutPrefix(right, []byte("Stream #")); ok { // out of a filter graph
		file, index, rest, ok := streamID(r)
		if !ok {
			return
		}
		groups := parenGroups(rest)
		if len(groups) != 1 {
			return
		}
		s.mapped1(file, index, string(groups[0]))
		return
	}
	r, ok := bytes.CutPrefix(right, []byte("#"))
	if !ok {
		return
	}
	file, index, rest, ok := streamID(r)
	if !ok {
		return
	}
	inner, ok := bytes.CutPrefix(bytes.TrimSpace(rest), []byte("("))
	if inner, ok = bytes.CutSuffix(inner, []byte(")")); !ok {
		return
	}
	if bytes.Equal(inner, []byte(Copy)) {
		s.mapped1(file, index, Copy)
		return
	}
	// "decoder side -> codec (encoder)"; "native" means the encoder is
	// named as its codec.
	at := bytes.LastIndex(inner, []byte(" -> "))
	if at < 0 {
		return
	}
	codec, enc, ok := bytes.Cut(inner[at+len(" -> "):], []byte(" ("))
	if enc, ok = bytes.CutSuffix(enc, []byte(")")); !ok {
		return
	}
	if bytes.Equal(enc, []byte("native")) {
		enc = codec
	}
	s.mapped1(file, index, string(enc))
}

func (s *Stderr) mapped1(file, index int, encoder string) {
	if st := s.stream(file, index); st != nil {
		st.mapped = true
		st.encoder = encoderLabel(encoder)
	}
}

// stream finds or adds output stream file:index; nil past the bound.
func (s *Stderr) stream(file, index int) *stderrStream {
	for i := range s.streams {
		if st := &s.streams[i]; st.file == file && st.index == index {
			return st
		}
	}
	if len(s.streams) >= MaxStderrStreams {
		s.overflow = true
		return nil
	}
	s.streams = append(s.streams, stderrStream{file: file, index: index})
	return &s.streams[len(s.streams)-1]
}

// Profile is what the header read so far says. Hwaccel and the preset
// (but a stream copy's Default) are never known from stderr.
func (s *Stderr) Profile() Profile {
	sorted := slices.Clone(s.streams)
	slices.SortFunc(sorted, func(a, b stderrStream) int {
		if a.file != b.file {
			return a.file - b.file
		}
		return a.index - b.index
	})
	complete := s.mapped && !s.overflow
	var outs []Output
	for _, st := range sorted {
		if st.mapped && !st.described {
			complete = false
		}
		if !st.video {
			continue
		}
		o := st.out
		o.Encoder, o.Preset = either(st.encoder != "", st.encoder, Unknown), Unknown
		if o.Encoder == Copy {
			o.Preset = Default
		}
		outs = append(outs, o)
	}
	p := fromOutputs(FromStderr, outs, complete)
	if p.Encoder.Label != Copy { // a copy has no preset to show
		p.Preset = Value{Unknown, FromNowhere}
	}
	p.Hwaccel = Value{Unknown, FromNowhere}
	return p
}

// progressLine: "key=value" (-progress) or "frame=  120 fps=..." (status).
func progressLine(line []byte) bool {
	for i, c := range line {
		switch {
		case c == '=':
			return i > 0
		case c != '_' && (c < 'a' || c > 'z') && (c < '0' || c > '9'):
			return false
		}
	}
	return false
}

var levelNames = [][]byte{[]byte("quiet"), []byte("panic"), []byte("fatal"), []byte("error"), []byte("warning"),
	[]byte("info"), []byte("verbose"), []byte("debug"), []byte("trace")}

// cutLevelPrefix drops the "[info] " that -loglevel level+... adds.
func cutLevelPrefix(line []byte) []byte {
	if len(line) == 0 || line[0] != '[' {
		return line
	}
	end := bytes.IndexByte(line, ']')
	if end < 0 || end+1 >= len(line) || line[end+1] != ' ' {
		return line
	}
	for _, l := range levelNames {
		if bytes.Equal(line[1:end], l) {
			return line[end+2:]
		}
	}
	return line
}

// streamID reads "F:S" and returns what follows.
func streamID(b []byte) (file, index int, rest []byte, ok bool) {
	file, n := digits(b)
	if n == 0 || n >= len(b) || b[n] != ':' {
		return 0, 0, nil, false
	}
	index, m := digits(b[n+1:])
	if m == 0 {
		return 0, 0, nil, false
	}
	return file, index, b[n+1+m:], true
}

func leadingInt(b []byte) (int, bool) {
	v, n := digits(b)
	return v, n > 0
}

// digits reads up to 6 leading decimal digits.
func digits(b []byte) (v, n int) {
	for n < len(b) && n < 6 && b[n] >= '0' && b[n] <= '9' {
		v = v*10 + int(b[n]-'0')
		n++
	}
	if n < len(b) && b[n] >= '0' && b[n] <= '9' {
		return 0, 0 // too long to be an index
	}
	return v, n
}

// topLevelFields splits at ", " outside parentheses and brackets:
// "yuv420p(tv, bt709, progressive)" is one field.
func topLevelFields(b []byte) [][]byte {
	var out [][]byte
	depth, start := 0, 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '(', '[':
			depth++
		case ')', ']':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 && i+1 < len(b) && b[i+1] == ' ' {
				out = append(out, b[start:i])
				start = i + 2
				i++
			}
		}
	}
	return append(out, b[start:])
}

// parenGroups returns the contents of the top-level parenthesised groups.
func parenGroups(b []byte) [][]byte {
	var out [][]byte
	depth, start := 0, 0
	for i, c := range b {
		switch c {
		case '(':
			if depth == 0 {
				start = i + 1
			}
			depth++
		case ')':
			if depth == 0 {
				continue
			}
			if depth--; depth == 0 {
				out = append(out, b[start:i])
			}
		}
	}
	return out
}

// size reads "WxH" at the start of a field ("1280x720 [SAR 1:1 DAR 16:9]").
func size(tok []byte) (w, h int, ok bool) {
	w, n := digits(tok)
	if n == 0 || n >= len(tok) || tok[n] != 'x' {
		return 0, 0, false
	}
	h, m := digits(tok[n+1:])
	if m == 0 || (n+1+m < len(tok) && tok[n+1+m] != ' ') {
		return 0, 0, false
	}
	if w < 1 || h < 1 || w > MaxDimension || h > MaxDimension {
		return 0, 0, true // a size, but out of bounds: unknown
	}
	return w, h, true
}
