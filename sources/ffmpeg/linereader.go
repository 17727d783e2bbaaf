package ffmpeg

import (
	"bytes"
	"io"
)

// MaxLineBytes is the longest line kept; longer lines are dropped and counted.
const MaxLineBytes = 64 << 10

// initialLineBuffer fits every line ffmpeg writes; the buffer grows toward
// MaxLineBytes only for a longer line and shrinks back after it, so a thousand
// idle streams do not hold 64 KiB each.
const initialLineBuffer = 2 << 10

// lineReader splits a stream on '\n' and '\r' (ffmpeg redraws its status line
// with '\r') as the bytes arrive, without waiting for the end of the body.
type lineReader struct {
	r           io.Reader
	max         int
	buf         []byte
	start, end  int
	discarding  bool // inside a line longer than max
	err         error
	OnOversized func() // if set, called as each such line is found, before its end arrives
}

// newLineReader reads lines of at most max bytes from r.
func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: r, max: max}
}

// Next returns the next non-empty line without its terminator. The slice is
// valid until the next call. At the end it returns the reader's error (io.EOF
// for a clean end) after any unterminated last line.
func (l *lineReader) Next() ([]byte, error) {
	for {
		if i := bytes.IndexAny(l.buf[l.start:l.end], "\r\n"); i >= 0 {
			line := l.buf[l.start : l.start+i]
			l.start += i + 1
			if l.discarding {
				l.discarding = false
				continue
			}
			if len(line) == 0 {
				continue
			}
			return line, nil
		}
		if l.err != nil {
			return l.finish()
		}
		l.fill()
	}
}

// finish returns the unterminated last line, then the error.
func (l *lineReader) finish() ([]byte, error) {
	line := l.buf[l.start:l.end]
	l.start = l.end
	if len(line) > 0 && !l.discarding {
		return line, nil
	}
	l.discarding = false
	return nil, l.err
}

// fill reads more bytes, growing, compacting or dropping the buffer as needed.
func (l *lineReader) fill() {
	pending := l.end - l.start
	switch {
	case pending > l.max:
		// The line is already too long: drop what we have and skip to its end.
		if !l.discarding {
			if l.OnOversized != nil {
				l.OnOversized()
			}
		}
		l.discarding = true
		l.start, l.end = 0, 0
		pending = 0
	case l.start > 0:
		copy(l.buf, l.buf[l.start:l.end])
		l.start, l.end = 0, pending
	}
	// The buffer holds up to max+1 bytes: a line of max bytes and its terminator.
	base := min(initialLineBuffer, l.max+1)
	switch {
	case pending == 0 && len(l.buf) != base:
		l.buf = make([]byte, base)
	case l.end == len(l.buf):
		grown := make([]byte, min(2*len(l.buf), l.max+1))
		copy(grown, l.buf[:l.end])
		l.buf = grown
	}
	n, err := l.r.Read(l.buf[l.end:])
	l.end += n
	if err != nil {
		l.err = err
	}
}
