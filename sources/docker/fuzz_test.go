package docker

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzLimitedBody: whatever the body and however it is read, a response
// gives at most max bytes before its error, an event stream at most max
// bytes per line, and a body within the bound comes through whole.
func FuzzLimitedBody(f *testing.F) {
	f.Add([]byte(`{"a":1}`), uint8(4), uint8(3), false)
	f.Add([]byte("{}\n{}\n{\"long\":\"line\"}\n"), uint8(6), uint8(1), true)
	f.Fuzz(func(t *testing.T, data []byte, bound, chunk uint8, perLine bool) {
		if bound == 0 || chunk == 0 {
			return
		}
		l := &limitedBody{rc: io.NopCloser(bytes.NewReader(data)), left: int64(bound), max: int64(bound), what: "GET /x", perLine: perLine}
		var got []byte
		buf := make([]byte, chunk)
		var err error
		for err == nil {
			var n int
			n, err = l.Read(buf)
			got = append(got, buf[:n]...)
		}
		var tooBig *tooLarge
		if !errors.Is(err, io.EOF) && !errors.As(err, &tooBig) {
			t.Fatalf("error %v", err)
		}
		if !bytes.HasPrefix(data, got) {
			t.Fatalf("read %q, not a prefix of %q", got, data)
		}
		longest := len(got)
		if perLine {
			longest = 0
			for _, line := range strings.SplitAfter(string(got), "\n") {
				longest = max(longest, len(strings.TrimSuffix(line, "\n")))
			}
		}
		if longest > int(bound) {
			t.Fatalf("%d bytes in one piece through a bound of %d", longest, bound)
		}
		within := len(data) <= int(bound)
		if perLine {
			within = true
			for _, line := range strings.Split(string(data), "\n") {
				within = within && len(line) <= int(bound)
			}
		}
		if within != errors.Is(err, io.EOF) || within && !bytes.Equal(got, data) {
			t.Fatalf("data %q bound %d: read %q, %v", data, bound, got, err)
		}
	})
}
