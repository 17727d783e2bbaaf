package docker

import (
	"bytes"
	"errors"
	"io"
	"strconv"
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

// FuzzCgroupFiles: whatever a cgroup file holds, its parser returns a
// clear error or figures that are the file's own: every number a flat
// keyed file (cpu.stat, memory.stat) names comes back under its key, and
// the bytes summed over devices (io.stat, blkio) are at least each
// device's, never wrapped.
func FuzzCgroupFiles(f *testing.F) {
	f.Add([]byte("usage_usec 12500000\nuser_usec 8333333\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"))
	f.Add([]byte("259:0 rbytes=2048 wbytes=524288 rios=3 wios=5 dbytes=0 dios=0\n8:0 rbytes=2048 wbytes=524288 rios=1 wios=2 dbytes=0 dios=0\n"))
	f.Add([]byte("8:0 Read 65536\n8:0 Write 131072\n8:0 Sync 131072\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 196608\nTotal 196608\n"))
	f.Add([]byte("max\n"))
	f.Add([]byte("8:0 rbytes=18446744073709551615 wbytes=1\n8:1 rbytes=1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if kv, err := parseKeyed("f", data); err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				if k, v, ok := strings.Cut(line, " "); ok {
					if n, err := strconv.ParseUint(v, 10, 64); err == nil && kv[k] != n && !strings.Contains(string(data), "\n"+k+" ") {
						t.Fatalf("%q: %s = %d, file says %d", data, k, kv[k], n)
					}
				}
			}
		}
		parseUint("f", data)
		if r, w, err := parseIOStat("f", data); err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				fields := strings.Fields(line)
				for i := 1; i < len(fields); i++ { // the first is the device
					k, v, _ := strings.Cut(fields[i], "=")
					if n, err := strconv.ParseUint(v, 10, 64); err == nil && (k == "rbytes" && r < n || k == "wbytes" && w < n) {
						t.Fatalf("%q: sums %d %d below a device's %s=%d", data, r, w, k, n)
					}
				}
			}
		}
		if r, w, _, err := parseBlkio("f", data); err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				if fs := strings.Fields(line); len(fs) == 3 {
					if n, err := strconv.ParseUint(fs[2], 10, 64); err == nil && (fs[1] == "Read" && r < n || fs[1] == "Write" && w < n) {
						t.Fatalf("%q: sums %d %d below a device's %s %d", data, r, w, fs[1], n)
					}
				}
			}
		}
	})
}
