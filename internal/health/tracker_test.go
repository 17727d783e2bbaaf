package health

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLogsChangesOnlyAndCounts(t *testing.T) {
	var buf bytes.Buffer
	tr := &Tracker{Logger: slog.New(slog.NewTextHandler(&buf, nil)), What: "RAPL"}
	denied, missing := errors.New("permission denied"), errors.New("no such file")
	t0 := time.Unix(1_800_000_000, 0)
	for i, err := range []error{nil, nil, denied, denied, denied, missing, missing, nil, nil} {
		tr.Observe(err, t0.Add(time.Duration(i)*time.Second), time.Duration(i)*time.Millisecond)
	}
	out := buf.String()
	if n := strings.Count(out, "not fully readable"); n != 2 {
		t.Errorf("%d problem lines, want 2 (one per distinct problem):\n%s", n, out)
	}
	if n := strings.Count(out, "readable again"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, out)
	}
	s := tr.Stats()
	if s.Errors != 5 || s.Duration != 8*time.Millisecond || !s.LastSuccess.Equal(t0.Add(8*time.Second)) {
		t.Errorf("stats %+v", s)
	}
}
