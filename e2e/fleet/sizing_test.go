package fleet

import (
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/tools/sizing"
)

// TestSizingTableOfASmallFleet runs what `make fleet` runs, small and
// fast: two fleet sizes through one gateway. Each size is held — nothing
// dropped and VictoriaMetrics holding every worker's every series, fresh
// — and each figure of the table is measured.
func TestSizingTableOfASmallFleet(t *testing.T) {
	peer.RequireFile(t, collectorBin, "make collector")
	peer.RequireFile(t, vmBin, "make victoriametrics")
	cfg := sizing.Config{
		Collector: collectorBin, CollectorConfig: gatewayYAML, VictoriaMetrics: vmBin, VMFlags: vmFlags, DataDir: t.TempDir(),
		Workers: []int{5, 10}, Interval: time.Second, Window: 2,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	var table strings.Builder
	rows, idleRSS, err := sizing.Run(t.Context(), cfg, &table)
	t.Logf("\n%s", table.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(cfg.Workers) {
		t.Fatalf("%d rows for %d sizes", len(rows), len(cfg.Workers))
	}
	for i, r := range rows {
		if r.Workers != cfg.Workers[i] || !r.Held() {
			t.Errorf("size %d: %+v; want %d workers held", i, r, cfg.Workers[i])
		}
		if r.SeriesPerWorker < 400 || r.PointsIn <= 0 || r.RowsStored <= 0 || r.BytesPerPush <= 0 ||
			r.Gateway.CPUPercent <= 0 || r.Gateway.RSSBytes <= 0 || r.VM.CPUPercent <= 0 || r.Simulator.CPUPercent <= 0 {
			t.Errorf("size %d: a figure was not measured: %+v", r.Workers, r)
		}
	}
	if idleRSS <= 0 || strings.Count(table.String(), " yes\n") != len(cfg.Workers) {
		t.Errorf("idle RSS %v; table:\n%s", idleRSS, table.String())
	}
}
