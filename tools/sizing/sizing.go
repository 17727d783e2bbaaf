// Package sizing measures how large a fleet one gateway collector holds:
// it starts VictoriaMetrics and the gateway (tools/pushpath), grows a
// simulated fleet (tools/fleet) step by step, and at each size reads
// what was dropped, what VictoriaMetrics holds, and what each process
// cost, from the programs' own telemetry and /proc.
package sizing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/tools/fleet"
	"github.com/ffmpeg-rtmp/worker-exporters/tools/pushpath"
)

// Config is a sizing run.
type Config struct {
	Collector       string // bin/otelcol-worker
	CollectorConfig string // otel-collector/config.yaml
	VictoriaMetrics string // bin/victoria-metrics
	VMFlags         string // examples/victoriametrics/flags
	DataDir         string // VictoriaMetrics' storage; a fresh directory

	Workers  []int         // fleet sizes to measure, growing
	Sweep    bool          // after Workers, keep doubling until a size is not held
	Max      int           // the largest size a sweep tries
	Interval time.Duration // between each worker's pushes
	Window   int           // intervals measured at each size

	Log *slog.Logger // the workers' warnings (export outages) and progress
}

// batchDelay is the longest the gateway's batch processor holds points
// (otel-collector/config.yaml); a sample may reach VictoriaMetrics that
// much after it was pushed.
const batchDelay = 5 * time.Second

// closeTimeout bounds the workers' last pushes at the end of a run.
const closeTimeout = 30 * time.Second

// Row is what one fleet size cost and whether it was held.
type Row struct {
	Workers         int
	SeriesPerWorker int     // distinct series one worker pushes
	Fresh           int     // series in VictoriaMetrics with a sample in the last two intervals
	Complete        int     // workers with exactly SeriesPerWorker fresh series
	PointsIn        float64 // per second, accepted by the gateway
	RowsStored      float64 // per second, inserted by VictoriaMetrics
	Dropped         float64 // points the gateway refused or failed to send, since it started
	QueueSize       float64 // the gateway's export queue at the end, in batches
	WorkerProblems  int64   // export failures the workers logged, since they started
	Gateway, VM     Cost
	Simulator       Cost
	BytesPerPush    float64       // written by the simulator per worker per interval: OTLP gRPC as sent
	Load            float64       // the machine's 1-minute load average at the end
	Settle          time.Duration // from the fleet's growth until VictoriaMetrics had registered its series
}

// Cost is a process's CPU (100 = one core busy) over the window and its
// resident memory at the end.
type Cost struct {
	CPUPercent float64
	RSSBytes   float64
}

// Held reports whether the gateway held the fleet: nothing dropped or
// failed anywhere, and every worker's every series fresh in VictoriaMetrics.
func (r Row) Held() bool {
	return r.Dropped == 0 && r.WorkerProblems == 0 && r.Complete == r.Workers && r.Fresh == r.Workers*r.SeriesPerWorker
}

// Run measures each size of cfg, writing each row to out as it is done,
// and returns the rows and the gateway's resident memory before any
// worker pushed.
func Run(ctx context.Context, cfg Config, out io.Writer) (rows []Row, idleRSS float64, err error) {
	vm, err := pushpath.StartVictoriaMetrics(cfg.VictoriaMetrics, cfg.VMFlags, cfg.DataDir)
	if err != nil {
		return nil, 0, err
	}
	defer vm.Stop()
	gw, err := pushpath.StartCollector(cfg.Collector, cfg.CollectorConfig, "VICTORIAMETRICS_URL="+vm.URL)
	if err != nil {
		return nil, 0, err
	}
	defer gw.Stop()
	idle, err := gw.Usage()
	if err != nil {
		return nil, 0, err
	}
	f := fleet.New(fleet.Push{Endpoint: gw.Endpoint(), Interval: cfg.Interval}, cfg.Log)
	defer func() {
		stop, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		f.Close(stop)
	}()

	m := &meter{cfg: cfg, vm: vm, gw: gw, fleet: f}
	PrintHeader(out, cfg, idle.RSSBytes)
	sizes := cfg.Workers
	for i := 0; i < len(sizes); i++ {
		n := sizes[i]
		cfg.Log.Info("growing the fleet", "workers", n)
		if err := f.Grow(ctx, n); err != nil {
			return rows, idle.RSSBytes, err
		}
		row, err := m.measure(ctx)
		if err != nil {
			return rows, idle.RSSBytes, err
		}
		rows = append(rows, row)
		PrintRow(out, row, idle.RSSBytes)
		if !row.Held() {
			break
		}
		if cfg.Sweep && i == len(sizes)-1 && 2*n <= cfg.Max {
			sizes = append(sizes, 2*n)
		}
	}
	return rows, idle.RSSBytes, nil
}

type meter struct {
	cfg   Config
	vm    *pushpath.VictoriaMetrics
	gw    *pushpath.Collector
	fleet *fleet.Fleet
}

// reading is everything read at one moment.
type reading struct {
	at           time.Time
	gw, vm, sim  pushpath.Usage
	telemetry    map[string]float64
	rowsInserted float64
}

func (m *meter) read(ctx context.Context) (reading, error) {
	r := reading{at: time.Now()}
	var errs [5]error
	r.gw, errs[0] = m.gw.Usage()
	r.vm, errs[1] = m.vm.Usage()
	r.sim, errs[2] = pushpath.UsageOf(os.Getpid())
	r.telemetry, errs[3] = m.gw.Telemetry(ctx)
	var vmMetrics map[string]float64
	vmMetrics, errs[4] = m.vm.Metrics(ctx)
	r.rowsInserted = vmMetrics["vm_rows_inserted_total"]
	return r, errors.Join(errs[:]...)
}

// measure waits until the newest workers have pushed, then measures
// Window intervals and checks what VictoriaMetrics holds.
func (m *meter) measure(ctx context.Context) (Row, error) {
	n := m.fleet.Len()
	perWorker, err := m.fleet.Workers()[0].Series()
	if err != nil {
		return Row{}, err
	}
	// The last worker started pushes one interval after it started; then
	// VictoriaMetrics registers the new series, slower than it stores
	// samples of known ones. Measure the steady state that follows.
	grown := time.Now()
	if err := sleep(ctx, m.cfg.Interval+batchDelay); err != nil {
		return Row{}, err
	}
	if err := m.settle(ctx, n*perWorker); err != nil {
		return Row{}, err
	}
	settled := time.Since(grown)
	before, err := m.read(ctx)
	if err != nil {
		return Row{}, err
	}
	if err := sleep(ctx, time.Duration(m.cfg.Window)*m.cfg.Interval); err != nil {
		return Row{}, err
	}
	after, err := m.read(ctx)
	if err != nil {
		return Row{}, err
	}
	problems, _ := m.fleet.Problems()
	secs := after.at.Sub(before.at).Seconds()
	cost := func(b, a pushpath.Usage) Cost {
		return Cost{CPUPercent: 100 * (a.CPUSeconds - b.CPUSeconds) / secs, RSSBytes: a.RSSBytes}
	}
	row := Row{
		Workers:         n,
		SeriesPerWorker: perWorker,
		PointsIn:        (after.telemetry["otelcol_receiver_accepted_metric_points"] - before.telemetry["otelcol_receiver_accepted_metric_points"]) / secs,
		RowsStored:      (after.rowsInserted - before.rowsInserted) / secs,
		QueueSize:       after.telemetry["otelcol_exporter_queue_size"],
		WorkerProblems:  problems,
		Gateway:         cost(before.gw, after.gw),
		VM:              cost(before.vm, after.vm),
		Simulator:       cost(before.sim, after.sim),
		BytesPerPush:    (after.sim.WrittenBytes - before.sim.WrittenBytes) / float64(n) / (secs / m.cfg.Interval.Seconds()),
		Load:            loadAverage(),
		Settle:          settled,
	}
	for _, d := range pushpath.Dropped {
		row.Dropped += after.telemetry[d]
	}
	// Fresh: a sample within two intervals, allowing for the batch delay.
	window := 2*m.cfg.Interval + batchDelay
	fresh, err := m.vm.Query(ctx, fmt.Sprintf(`count by (host_name) (last_over_time({service_name=%q}[%dms]))`, fleet.ServiceName, window.Milliseconds()))
	if err != nil {
		return row, err
	}
	for _, s := range fresh {
		row.Fresh += int(s.Value)
		if int(s.Value) == perWorker {
			row.Complete++
		}
	}
	return row, nil
}

// settleIntervals bounds how long settle waits, in push intervals.
const settleIntervals = 20

// settle waits until VictoriaMetrics has registered series new series in
// all and the gateway's export queue is empty, or settleIntervals have gone
// by: a fleet that never settles is measured as it is, and not held.
func (m *meter) settle(ctx context.Context, series int) error {
	deadline := time.Now().Add(settleIntervals * m.cfg.Interval)
	for time.Now().Before(deadline) {
		vm, err := m.vm.Metrics(ctx)
		if err != nil {
			return err
		}
		gw, err := m.gw.Telemetry(ctx)
		if err != nil {
			return err
		}
		if vm["vm_new_timeseries_created_total"] >= float64(series) && gw["otelcol_exporter_queue_size"] == 0 {
			return nil
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// loadAverage is the machine's 1-minute load average; 0 when unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var load float64
	fmt.Sscan(strings.Fields(string(b))[0], &load)
	return load
}
