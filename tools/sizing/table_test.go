package sizing

import (
	"strings"
	"testing"
)

func TestHeldOnlyWhenNothingIsMissingOrDropped(t *testing.T) {
	held := Row{Workers: 10, SeriesPerWorker: 100, Fresh: 1000, Complete: 10}
	if !held.Held() {
		t.Fatalf("%+v not held", held)
	}
	for name, change := range map[string]func(*Row){
		"a point refused":           func(r *Row) { r.Dropped = 1 },
		"a worker's export failed":  func(r *Row) { r.WorkerProblems = 1 },
		"a worker incomplete":       func(r *Row) { r.Complete = 9 },
		"a series stale":            func(r *Row) { r.Fresh = 999 },
		"a series too many":         func(r *Row) { r.Fresh = 1001 },
		"a worker missing entirely": func(r *Row) { r.Complete, r.Fresh = 9, 900 },
	} {
		r := held
		change(&r)
		if r.Held() {
			t.Errorf("%s: %+v held", name, r)
		}
	}
}

func TestRowShowsPerThousandWorkers(t *testing.T) {
	var b strings.Builder
	r := Row{Workers: 500, SeriesPerWorker: 100, Fresh: 50000, Complete: 500,
		Gateway: Cost{CPUPercent: 20, RSSBytes: 150 * mib}, Simulator: Cost{CPUPercent: 10}}
	PrintHeader(&b, Config{CollectorConfig: "config.yaml", Interval: 15e9, Window: 2}, 100*mib)
	PrintRow(&b, r, 100*mib)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	row := strings.Fields(lines[len(lines)-1])
	header := strings.Fields(lines[len(lines)-2])
	if len(row) != len(header) {
		t.Fatalf("%d columns under %d names:\n%s", len(row), len(header), b.String())
	}
	// 20% for 500 workers is 40% per 1,000; 50 MiB above idle is 100 MiB per 1,000.
	for col, want := range map[int]string{0: "500", 2: "50000/50000", 7: "20.0%", 8: "40.0%", 10: "100", 14: "20.0%", 19: "yes"} {
		if row[col] != want {
			t.Errorf("column %s = %s, want %s:\n%s", header[col], row[col], want, b.String())
		}
	}
}
