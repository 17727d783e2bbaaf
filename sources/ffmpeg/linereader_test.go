package ffmpeg

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readAll(t *testing.T, lr *lineReader) ([]string, error) {
	t.Helper()
	var lines []string
	for {
		line, err := lr.Next()
		if err != nil {
			return lines, err
		}
		lines = append(lines, string(line))
	}
}

func TestLineReaderSplits(t *testing.T) {
	// One byte per Read: lines must come out whole however the body is chunked.
	lr := newLineReader(iotest.OneByteReader(strings.NewReader("a=1\r\nb=2\rc=3\n\n\nlast")), 16)
	lines, err := readAll(t, lr)
	if err != io.EOF {
		t.Fatalf("err %v, want io.EOF", err)
	}
	if got := strings.Join(lines, "|"); got != "a=1|b=2|c=3|last" {
		t.Errorf("lines %q", got)
	}
}

func TestLineReaderDropsOversized(t *testing.T) {
	long := strings.Repeat("x", 100)
	text := "ok=1\n" + long + "\nok=2\n" + strings.Repeat("y", 16) + "\n" + strings.Repeat("z", 17) + "\nok=3\n" + long
	lr := newLineReader(strings.NewReader(text), 16)
	oversized := 0
	lr.OnOversized = func() { oversized++ }
	lines, err := readAll(t, lr)
	if err != io.EOF {
		t.Fatalf("err %v", err)
	}
	if got := strings.Join(lines, "|"); got != "ok=1|ok=2|"+strings.Repeat("y", 16)+"|ok=3" {
		t.Errorf("lines %q", got)
	}
	if oversized != 3 {
		t.Errorf("oversized %d, want 3", oversized)
	}
	if len(lr.buf) > 17 {
		t.Errorf("buffer grew to %d bytes past the 16-byte limit", len(lr.buf))
	}
}

func TestLineReaderShrinksAfterLongLine(t *testing.T) {
	lr := newLineReader(strings.NewReader(strings.Repeat("x", 10000)+"\nshort\n"), MaxLineBytes)
	lines, _ := readAll(t, lr)
	if len(lines) != 2 || lines[1] != "short" {
		t.Fatalf("lines %d", len(lines))
	}
	if len(lr.buf) != initialLineBuffer {
		t.Errorf("buffer %d bytes after the long line, want back to %d", len(lr.buf), initialLineBuffer)
	}
}

func TestLineReaderError(t *testing.T) {
	boom := errors.New("boom")
	lr := newLineReader(io.MultiReader(strings.NewReader("a=1\npartial"), iotest.ErrReader(boom)), 64)
	lines, err := readAll(t, lr)
	if !errors.Is(err, boom) || strings.Join(lines, "|") != "a=1|partial" {
		t.Errorf("lines %q err %v", lines, err)
	}
}
