//go:build cgo

package instruments

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/sdk/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/gpumock"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
)

// fixedTime pins the sample timestamps so the golden text is stable.
type fixedTime struct{ *nvml.Source }

func (f fixedTime) Snapshot() *nvml.Snapshot {
	snap := *f.Source.Snapshot()
	snap.GPUs = append([]nvml.GPU(nil), snap.GPUs...)
	for i := range snap.GPUs {
		snap.GPUs[i].LastSample = time.Unix(1_800_000_000, 0)
		if !snap.GPUs[i].LastXID.IsZero() {
			snap.GPUs[i].LastXID = time.Unix(1_799_999_990, 0)
		}
	}
	return &snap
}

// TestGPUGolden: the whole /metrics text for two mock GPUs (no GPU here:
// go-nvml's mock stands in), the second a consumer-like card without
// encoder stats, an energy counter, ECC or row remapping, that has seen
// XID 79 twice.
func TestGPUGolden(t *testing.T) {
	m := gpumock.New(2)
	consumerCard(m.Devices[1].(*server.Device))
	src := nvml.New(nvml.Config{Lib: m, Interval: time.Second, Timeout: time.Second, RetryInterval: time.Second})
	defer src.Close()
	src.Sample(context.Background())
	for range 2 {
		m.Events <- gonvml.EventData{Device: m.Devices[1], EventType: gonvml.EventTypeXidCriticalError, EventData: 79}
	}
	exportertest.WaitFor(t, 5*time.Second, func() bool { // the XID events seen
		src.Sample(context.Background())
		x := src.Snapshot().GPUs[1].XIDs
		return len(x) == 1 && x[0].Count == 2
	})
	got := scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterGPU(mp.Meter("test"), fixedTime{src}) })
	golden(t, "testdata/gpu.golden", got)
	peer.CheckMetrics(t, got)
	checkReordered(t, gpuTable, fixedTime{src}.Snapshot, func(t *testing.T, got string) { golden(t, "testdata/gpu.golden", got) })
}

// consumerCard makes d a GPU without encoder stats, energy counter, ECC or
// row remapping: NVML answers "not supported".
func consumerCard(d *server.Device) {
	d.GetEncoderStatsFunc = func() (int, uint32, uint32, gonvml.Return) { return 0, 0, 0, gonvml.ERROR_NOT_SUPPORTED }
	d.GetTotalEnergyConsumptionFunc = func() (uint64, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	d.GetTotalEccErrorsFunc = func(gonvml.MemoryErrorType, gonvml.EccCounterType) (uint64, gonvml.Return) {
		return 0, gonvml.ERROR_NOT_SUPPORTED
	}
	d.GetRemappedRowsFunc = func() (int, int, bool, bool, gonvml.Return) { return 0, 0, false, false, gonvml.ERROR_NOT_SUPPORTED }
}

// TestGPUParityMetrics: the series added for parity with dcgm-exporter and
// nvidia_gpu_exporter carry the mock's readings (internal/testkit/gpumock: no GPU
// here) under the right labels and units, and a card without ECC or row
// remapping has none of those series.
func TestGPUParityMetrics(t *testing.T) {
	m := gpumock.New(2)
	consumerCard(m.Devices[1].(*server.Device))
	src := nvml.New(nvml.Config{Lib: m, Interval: time.Second, Timeout: time.Second, RetryInterval: time.Second})
	defer src.Close()
	src.Sample(context.Background())
	m.Events <- gonvml.EventData{Device: m.Devices[0], EventType: gonvml.EventTypeXidCriticalError, EventData: 48}
	before := time.Now()
	exportertest.WaitFor(t, 5*time.Second, func() bool { // the XID event seen
		src.Sample(context.Background())
		return len(src.Snapshot().GPUs[0].XIDs) != 0
	})
	got := scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterGPU(mp.Meter("test"), src) })
	for _, want := range []string{
		`nvidia_gpu_pcie_throughput_bytes_per_second{gpu="0",direction="tx"} 102400`, // 100 KB/s
		`nvidia_gpu_pcie_throughput_bytes_per_second{gpu="1",direction="rx"} 205824`, // 201 KB/s
		`nvidia_gpu_pcie_replay_errors_total{gpu="1"} 4`,
		`nvidia_gpu_ecc_errors_total{gpu="0",type="corrected"} 7`,
		`nvidia_gpu_ecc_errors_total{gpu="0",type="uncorrected"} 0`,
		`nvidia_gpu_remapped_rows{gpu="0",type="correctable"} 1`,
		`nvidia_gpu_remapped_rows{gpu="0",type="failed"} 0`,
		`nvidia_gpu_clock_throttle_seconds_total{gpu="0",reason="power"} 0.5`,
		`nvidia_gpu_clock_throttle_seconds_total{gpu="1",reason="total_base_clocks"} 6`,
		`nvidia_gpu_process_utilization_percent{gpu="1",pid="1001",engine="sm"} 31`,
		`nvidia_gpu_process_utilization_percent{gpu="1",pid="1001",engine="encoder"} 21`,
		`nvidia_gpu_process_utilization_percent{gpu="1",pid="1001",engine="decoder"} 6`,
		`nvidia_gpu_process_info{gpu="0",pid="1000",name="ffmpeg"} 1`,
		`nvidia_gpu_processes_left_out{gpu="0"} 0`,
	} {
		if !hasSample(got, want) {
			t.Errorf("missing %s", want)
		}
	}
	for _, absent := range []string{`nvidia_gpu_ecc_errors_total{gpu="1"`, `nvidia_gpu_remapped_rows{gpu="1"`, `nvidia_gpu_xid_last_timestamp_seconds{gpu="1"`} {
		if strings.Contains(got, absent) {
			t.Errorf("%s... reported for a GPU without it", absent)
		}
	}
	xid := sampleValue(t, got, `nvidia_gpu_xid_last_timestamp_seconds{gpu="0"}`)
	if float64(before.Add(-time.Second).Unix()) > xid || xid > float64(time.Now().Unix()+1) {
		t.Errorf("XID timestamp %v, want about %v", xid, before.Unix())
	}
	peer.CheckMetrics(t, got)
}

// TestGPUSeriesLimit: on a MeterProvider whose cardinality limit is
// GPUSeriesLimit, GPUs each at the per-process bound (distinct processes
// holding memory and using the GPU: the most series and names) are served
// whole, and with one process more on each list the source leaves it out
// and counts it, never folding series into the SDK's overflow series. No
// GPU here: go-nvml's mock (internal/testkit/gpumock) stands in for the driver.
func TestGPUSeriesLimit(t *testing.T) {
	const gpus = 2
	for _, procs := range []int{nvml.MaxProcesses, nvml.MaxProcesses + 1} {
		m := gpumock.New(gpus)
		for _, d := range m.Devices {
			d := d.(*server.Device)
			d.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
				out := make([]gonvml.ProcessInfo, procs)
				for i := range out {
					out[i] = gonvml.ProcessInfo{Pid: uint32(10_000 + i), UsedGpuMemory: 1 << 20}
				}
				return out, gonvml.SUCCESS
			}
			d.GetProcessUtilizationFunc = func(uint64) ([]gonvml.ProcessUtilizationSample, gonvml.Return) {
				out := make([]gonvml.ProcessUtilizationSample, procs)
				for i := range out { // other processes than those holding memory
					out[i] = gonvml.ProcessUtilizationSample{Pid: uint32(20_000 + i), TimeStamp: 1, SmUtil: 1}
				}
				return out, gonvml.SUCCESS
			}
		}
		m.SystemGetProcessNameFunc = func(int) (string, gonvml.Return) { return "ffmpeg", gonvml.SUCCESS }
		src := nvml.New(nvml.Config{Lib: m, Interval: time.Second, Timeout: 10 * time.Second, RetryInterval: time.Second})
		src.Sample(context.Background())
		src.Close()

		got := scrapeGPULimited(t, src, metric.WithCardinalityLimit(GPUSeriesLimit(gpus)))
		if strings.Contains(got, "otel_metric_overflow") {
			t.Errorf("%d processes per GPU: series folded into the overflow series at GPUSeriesLimit(%d) = %d",
				procs, gpus, GPUSeriesLimit(gpus))
		}
		series := map[string]int{}
		for _, line := range strings.Split(got, "\n") {
			if line != "" && !strings.HasPrefix(line, "#") {
				series[line[:strings.IndexAny(line, "{ ")]]++
			}
		}
		// The limit is tight: the largest instrument has one series fewer
		// (the SDK keeps limit-1 series and folds the rest).
		if n, want := series["nvidia_gpu_process_utilization_percent"], 3*nvml.MaxProcesses*gpus; n != want {
			t.Errorf("%d processes per GPU: %d process utilisation series, want %d", procs, n, want)
		}
		for name, n := range series {
			if n >= GPUSeriesLimit(gpus) {
				t.Errorf("%s has %d series, not under GPUSeriesLimit(%d) = %d", name, n, gpus, GPUSeriesLimit(gpus))
			}
		}
		for g := range gpus {
			left := sampleValue(t, got, `nvidia_gpu_processes_left_out{gpu="`+strconv.Itoa(g)+`"}`)
			if want := float64(procs - nvml.MaxProcesses); left != want {
				t.Errorf("%d processes per GPU: gpu %d left out %v, want %v", procs, g, left, want)
			}
		}
	}
}

// scrapeGPULimited is scrapeWith for src on a MeterProvider with opts.
func scrapeGPULimited(t *testing.T, src *nvml.Source, opts ...metric.Option) string {
	t.Helper()
	registry := prometheus.NewRegistry()
	bridge, err := otelprom.New(otelprom.WithRegisterer(registry), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo(),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes))
	if err != nil {
		t.Fatal(err)
	}
	provider := metric.NewMeterProvider(append(opts, metric.WithReader(bridge))...)
	t.Cleanup(func() { provider.Shutdown(context.Background()) })
	if err := RegisterGPU(provider.Meter("test"), src); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

type fixedSnapshot struct{ s *nvml.Snapshot }

func (f fixedSnapshot) Snapshot() *nvml.Snapshot { return f.s }

// hasSample reports whether text has the sample line want, its labels in
// any order.
func hasSample(text, want string) bool {
	for _, line := range strings.Split(text, "\n") {
		if sameSample(line, want) {
			return true
		}
	}
	return false
}

func sameSample(a, b string) bool {
	key := func(s string) string {
		i, j := strings.Index(s, "{"), strings.LastIndex(s, "}")
		if i < 0 || j < i {
			return s
		}
		labels := strings.Split(s[i+1:j], ",")
		sort.Strings(labels)
		return s[:i] + "{" + strings.Join(labels, ",") + "}" + s[j+1:]
	}
	return key(a) == key(b)
}

// sampleValue is the value of the sample whose name and labels are series.
func sampleValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if i := strings.LastIndex(line, " "); i > 0 && sameSample(line[:i], series) {
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no %s in\n%s", series, text)
	return 0
}
