package instruments

import (
	"context"
	"fmt"
	"testing"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
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
				CPUSeconds: 120.5, Energy: [energy.NumDevices]float64{3012.5, 0}, Dynamic: [energy.NumDevices]float64{2410, 0}, HasEnergy: [energy.NumDevices]bool{true, false},
				JoulesPerFrame: 1.205, HasJoulesPerFrame: true,
			},
			{
				Name:       "job42",
				Processes:  []energy.Process{{Process: procfs.Process{PID: 4242, Start: 1000}, Command: "ffmpeg"}},
				CPUSeconds: 12.25, Energy: [energy.NumDevices]float64{300.5, 150.25}, Dynamic: [energy.NumDevices]float64{240.5, 120.25}, HasEnergy: [energy.NumDevices]bool{true, true},
				JoulesPerFrame: 0.5, HasJoulesPerFrame: true,
				GPU: true, GPUSeconds: [energy.NumEngines]float64{1.5, 9, 0.25}, EncoderSessions: 2,
				Labels: [4]string{"h264_nvenc", "p4", "1920x1080@30,1280x720@30", "url+stderr"}, Pixels: 3.1104e9, HasPixels: true,
			},
		},
		Unlinked: []energy.Unlinked{{Name: "job43", Reason: energy.Permission}, {Name: "job44", Reason: energy.Remote}},
		Failures: failures, Available: [energy.NumDevices]bool{true, true},
		Idle: []energy.IdlePower{
			{Device: energy.CPU, Watts: 40.5, Method: energy.IdleEstimated, Windows: 600, StdErr: 1.25},
			{Device: energy.GPU, GPU: "0", Watts: 62, Method: energy.IdleConfigured},
		},
		Configurations: []energy.Configuration{
			{Encoder: "h264_nvenc", Preset: "p4", Ladder: "1920x1080@30,1280x720@30", Energy: [energy.NumDevices][energy.NumModes]float64{{240.5, 60}, {120.25, 30}},
				HasEnergy: [energy.NumDevices]bool{true, true}, Pixels: 3.1104e9, Frames: 1000, Seconds: 33.5},
			{Encoder: "libx264", Preset: "medium", Ladder: "unknown", Energy: [energy.NumDevices][energy.NumModes]float64{{2410, 602.5}},
				HasEnergy: [energy.NumDevices]bool{true, false}, Frames: 2500, Seconds: 100},
		},
		Counted:      [energy.NumDevices]float64{9000, 400},
		Unattributed: [energy.NumDevices][energy.NumModes]float64{{4000, 1687}, {200, 49.75}},
	}
}

// TestEnergyGolden: the whole /metrics text for a known state.
func TestEnergyGolden(t *testing.T) {
	got := scrapeWith(t, func(mp *metric.MeterProvider) error { return RegisterEnergy(mp.Meter("test"), knownEnergy{}) })
	golden(t, "testdata/energy.golden", got)
	peer.CheckMetrics(t, got)
	checkReordered(t, energyTable, knownEnergy{}.Snapshot, func(t *testing.T, got string) { golden(t, "testdata/energy.golden", got) })
}

// manyEnergy is n linked streams, each with every series it can have:
// MaxProcesses processes, every engine and device.
type manyEnergy int

func (n manyEnergy) Snapshot() *energy.Snapshot {
	snap := &energy.Snapshot{}
	for i := range int(n) {
		st := energy.Stream{Name: fmt.Sprintf("s%d", i), HasEnergy: [energy.NumDevices]bool{true, true}, GPU: true, HasJoulesPerFrame: true}
		for p := range energy.MaxProcesses {
			st.Processes = append(st.Processes, energy.Process{Process: procfs.Process{PID: 1000*i + p}, Command: "ffmpeg"})
		}
		snap.Streams = append(snap.Streams, st)
		snap.Unlinked = append(snap.Unlinked, energy.Unlinked{Name: st.Name, Reason: energy.NotFound})
	}
	return snap
}

// TestEnergySeriesLimit: under the limit for n streams every series of n
// streams is served, with no overflow series; one stream more overflows.
func TestEnergySeriesLimit(t *testing.T) {
	// Enough streams that the per-stream series, not the leaderboard's
	// configurations, set the limit.
	streams := manyEnergy(energy.MaxConfigurations * int(energy.NumDevices) * int(energy.NumModes) / energy.MaxProcesses)
	overflow := func(n manyEnergy) (processes int, over []string) {
		t.Helper()
		reader := metric.NewManualReader()
		provider := metric.NewMeterProvider(metric.WithReader(reader), metric.WithCardinalityLimit(EnergySeriesLimit(int(streams))))
		defer provider.Shutdown(context.Background())
		if err := RegisterEnergy(provider.Meter("test"), n); err != nil {
			t.Fatal(err)
		}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				var points []metricdata.DataPoint[float64]
				switch d := m.Data.(type) {
				case metricdata.Gauge[float64]:
					points = d.DataPoints
				case metricdata.Sum[float64]:
					points = d.DataPoints
				}
				if m.Name == StreamProcess.Name {
					processes = len(points)
				}
				for _, p := range points {
					if p.Attributes.HasValue("otel.metric.overflow") {
						over = append(over, m.Name)
					}
				}
			}
		}
		return processes, over
	}
	if n, over := overflow(streams); len(over) > 0 || n != int(streams)*energy.MaxProcesses {
		t.Errorf("%d streams: %d process series, overflow in %v; want %d and none", streams, n, over, int(streams)*energy.MaxProcesses)
	}
	if _, over := overflow(streams + 1); len(over) == 0 {
		t.Errorf("%d streams under the limit for %d: no overflow series, so this test could not see one", streams+1, streams)
	}
}
