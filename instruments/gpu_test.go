//go:build cgo

package instruments

import (
	"context"
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
	}
	return &snap
}

// TestGPUGolden: the whole /metrics text for two mock GPUs (no GPU here:
// go-nvml's mock stands in), the second a consumer-like card without
// encoder stats or an energy counter, that has seen XID 79 twice.
func TestGPUGolden(t *testing.T) {
	m := gpumock.New(2)
	d := m.Devices[1].(*server.Device)
	d.GetEncoderStatsFunc = func() (int, uint32, uint32, gonvml.Return) { return 0, 0, 0, gonvml.ERROR_NOT_SUPPORTED }
	d.GetTotalEnergyConsumptionFunc = func() (uint64, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
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
