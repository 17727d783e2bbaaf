package sizing

import (
	"fmt"
	"io"
)

const mib = 1 << 20

// PrintHeader writes what the table measures and its column names.
func PrintHeader(w io.Writer, cfg Config, idleRSS float64) {
	fmt.Fprintf(w, "== Fleet sizing: simulated workers -> one gateway (%s) -> VictoriaMetrics single node\n", cfg.CollectorConfig)
	fmt.Fprintf(w, "== each worker pushes every %v; each size measured over %d intervals; CPU%%: 100 = one core busy;\n", cfg.Interval, cfg.Window)
	fmt.Fprintf(w, "== /1kw: per 1,000 workers (gateway RSS: above its %.0f MiB before any push); the simulator runs on the same machine\n", idleRSS/mib)
	fmt.Fprintf(w, "%7s %8s %17s %9s %9s %7s %5s %6s %6s %7s %7s %6s %7s %7s %6s %7s %8s %6s %5s %4s\n",
		"workers", "series/w", "fresh/expected", "points/s", "vm-rows/s", "dropped", "queue",
		"gw-CPU", "/1kw", "gw-MiB", "MiB/1kw", "vm-CPU", "vm-MiB", "sim-CPU", "/1kw", "sim-MiB", "B/w/push", "settle", "load", "held")
}

// PrintRow writes one size's figures.
func PrintRow(w io.Writer, r Row, idleRSS float64) {
	perK := func(v float64) float64 { return v * 1000 / float64(r.Workers) }
	held := "yes"
	if !r.Held() {
		held = "NO"
	}
	fmt.Fprintf(w, "%7d %8d %17s %9.0f %9.0f %7.0f %5.0f %5.1f%% %5.1f%% %7.0f %7.0f %5.1f%% %7.0f %6.1f%% %5.1f%% %7.0f %8.0f %5.0fs %5.2f %4s\n",
		r.Workers, r.SeriesPerWorker, fmt.Sprintf("%d/%d", r.Fresh, r.Workers*r.SeriesPerWorker), r.PointsIn, r.RowsStored,
		r.Dropped+float64(r.WorkerProblems), r.QueueSize,
		r.Gateway.CPUPercent, perK(r.Gateway.CPUPercent), r.Gateway.RSSBytes/mib, perK(r.Gateway.RSSBytes-idleRSS)/mib,
		r.VM.CPUPercent, r.VM.RSSBytes/mib, r.Simulator.CPUPercent, perK(r.Simulator.CPUPercent), r.Simulator.RSSBytes/mib,
		r.BytesPerPush, r.Settle.Seconds(), r.Load, held)
}
