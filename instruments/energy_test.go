package instruments

import (
	"testing"

	"go.opentelemetry.io/otel/sdk/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/energy"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
)

// knownEnergy is energy per encode in a known state: a linked encode on
// CPU and GPU, a finished one that ran on the CPU only (its processes gone,
// its totals kept), a never-linked stream (left out of the per-stream
// series) and two live streams that could not be linked.
type knownEnergy struct{}

func (knownEnergy) Snapshot() *energy.Snapshot {
	var failures [energy.NumReasons]uint64
	failures[energy.Permission], failures[energy.Remote] = 1, 2
	return &energy.Snapshot{
		Streams: []energy.Stream{
			{
				Name:       "job41",
				CPUSeconds: 120.5, Energy: [energy.NumDevices]float64{3012.5, 0}, HasEnergy: [energy.NumDevices]bool{true, false},
				JoulesPerFrame: 1.205, HasJoulesPerFrame: true,
			},
			{
				Name:       "job42",
				Processes:  []energy.Process{{Process: procfs.Process{PID: 4242, Start: 1000}, Command: "ffmpeg"}},
				CPUSeconds: 12.25, Energy: [energy.NumDevices]float64{300.5, 150.25}, HasEnergy: [energy.NumDevices]bool{true, true},
				JoulesPerFrame: 0.5, HasJoulesPerFrame: true,
				GPU: true, GPUSeconds: [energy.NumEngines]float64{1.5, 9, 0.25}, EncoderSessions: 2,
			},
		},
		Unlinked: []energy.Unlinked{{Name: "job43", Reason: energy.Permission}, {Name: "job44", Reason: energy.Remote}},
		Failures: failures, Available: [energy.NumDevices]bool{true, true},
	}
}

// TestEnergyGolden: the whole /metrics text for a known state.
func TestEnergyGolden(t *testing.T) {
	got := scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterEnergy(mp.Meter("test"), knownEnergy{}) })
	golden(t, "testdata/energy.golden", got)
	peer.CheckMetrics(t, got)
	checkReordered(t, energyTable, knownEnergy{}.Snapshot, func(t *testing.T, got string) { golden(t, "testdata/energy.golden", got) })
}
