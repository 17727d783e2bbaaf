package healthlog

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestLogsChangesOnly(t *testing.T) {
	var buf bytes.Buffer
	l := &Log{Logger: slog.New(slog.NewTextHandler(&buf, nil)), What: "RAPL"}
	denied, missing := errors.New("permission denied"), errors.New("no such file")
	for _, err := range []error{nil, nil, denied, denied, denied, missing, missing, nil, nil} {
		l.Observe(err)
	}
	out := buf.String()
	if n := strings.Count(out, "not fully readable"); n != 2 {
		t.Errorf("%d problem lines, want 2 (one per distinct problem):\n%s", n, out)
	}
	if n := strings.Count(out, "readable again"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, out)
	}
}
