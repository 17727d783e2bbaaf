//go:build cgo

package instruments

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"go.opentelemetry.io/otel/sdk/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/gpumock"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/peer"
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
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		src.Sample(context.Background())
		if x := src.Snapshot().GPUs[1].XIDs; len(x) == 1 && x[0].Count == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("XID events not seen")
		}
	}
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
// nvidia_gpu_exporter carry the mock's readings (internal/gpumock: no GPU
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
	for deadline := time.Now().Add(5 * time.Second); len(src.Snapshot().GPUs[0].XIDs) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("XID event not seen")
		}
		src.Sample(context.Background())
	}
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

// TestGPUSeriesLimit: a host of GPUs each at the per-process limit (more
// processes than it, every field known, every name) has no instrument with
// more series than GPUSeriesLimit, and the largest has exactly that many.
func TestGPUSeriesLimit(t *testing.T) {
	const gpus = 2 // 1536 series: under the SDK's default limit of 2000 that scrapeWith uses
	snap := &nvml.Snapshot{Available: true, DriverVersion: "test"}
	for i := range gpus {
		g := nvml.GPU{Index: i, LastSample: time.Now(), LastXID: time.Now(), HasThrottle: true, Known: 1<<nvml.NumFields - 1,
			XIDs: []nvml.XIDCount{{XID: 79, Count: 1}}}
		for pid := range uint32(nvml.MaxProcesses) {
			g.Processes = append(g.Processes, nvml.Process{PID: pid, UsedMemoryBytes: 1})
			utilPID := pid + nvml.MaxProcesses // other processes than those holding memory: the most names
			g.ProcessUtilization = append(g.ProcessUtilization, nvml.ProcessUtilization{PID: utilPID, SMPercent: 1})
			g.ProcessNames = append(g.ProcessNames, nvml.ProcessName{PID: pid, Name: "a"}, nvml.ProcessName{PID: utilPID, Name: "b"})
		}
		snap.GPUs = append(snap.GPUs, g)
	}
	got := scrapeWith(t, func(mp *metric.MeterProvider) error {
		return RegisterGPU(mp.Meter("test"), fixedSnapshot{snap})
	})
	if strings.Contains(got, "otel_metric_overflow") {
		t.Fatal("series folded into an overflow series; the test host is too large for the default limit")
	}
	series := map[string]int{}
	for _, line := range strings.Split(got, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			series[line[:strings.IndexAny(line, "{ ")]]++
		}
	}
	limit, largest := GPUSeriesLimit(gpus), 0
	for name, n := range series {
		if n > limit {
			t.Errorf("%s has %d series, over GPUSeriesLimit(%d) = %d", name, n, gpus, limit)
		}
		largest = max(largest, n)
	}
	if largest != limit {
		t.Errorf("largest instrument has %d series, GPUSeriesLimit(%d) says %d", largest, gpus, limit)
	}
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
