//go:build linux && cgo

package exporters

// One reading of each thing per process: worker-exporter with every port
// and energy per encode on reads NVML and RAPL as often as gpu-exporter
// and cpu-exporter alone do. NVML is go-nvml's mock (no GPU here), its
// device calls counted in the mock; RAPL is a sysfs fixture tree (no RAPL
// here), its energy_uj opens counted by the kernel (inotify), whatever
// the reader opens them with.

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/gpumock"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/raplfixture"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
)

// reads is what one process read of the machine in a window.
type reads struct {
	nvmlCalls, energyOpens, eventSets int64
	seconds                           float64
}

func (r reads) String() string {
	return fmt.Sprintf("%.1f NVML device calls/s, %.1f energy_uj opens/s, %d XID event sets",
		float64(r.nvmlCalls)/r.seconds, float64(r.energyOpens)/r.seconds, r.eventSets)
}

// serveAndCount serves sources on loopback ports, with every interval at
// 100 ms, and counts what the process reads over window once every
// source has its first sample.
func serveAndCount(t *testing.T, window time.Duration, sources ...Source) reads {
	t.Helper()
	root := raplfixture.Build(t, t.TempDir(), raplfixture.TwoSockets)
	machine := gpumock.New(2)
	calls, sets := gpumock.CountCalls(machine)
	opens := watchOpens(t, root, raplfixture.TwoSockets)

	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	readers := NewReaders()
	readers.NVML = machine
	Register(fs, readers, sources...)
	web := pipeline.RegisterWeb(fs)
	var args []string
	for name, value := range map[string]string{"path.sysfs": root, "rapl.interval": "100ms", "nvml.interval": "100ms", "energy.interval": "100ms"} {
		if fs.Lookup(name) != nil {
			args = append(args, "--"+name+"="+value)
		}
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	var ports []Port
	for _, s := range sources {
		ports = append(ports, Port{Source: s, Addr: "127.0.0.1:0"})
	}
	t.Setenv("OTEL_SDK_DISABLED", "true")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- ProcessConfig{Service: "test", InstanceID: "test", Web: *web, Readers: readers, Log: slog.New(slog.DiscardHandler)}.Serve(ctx, ports)
	}()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	exportertest.WaitFor(t, 20*time.Second, func() bool {
		readers.mu.Lock()
		gpus, rapl := readers.gpus, readers.rapl
		readers.mu.Unlock()
		return (gpus == nil || gpus.Snapshot().Available) && (rapl == nil || rapl.Snapshot().Available)
	})

	from := time.Now()
	c0, o0 := calls.Load(), opens()
	time.Sleep(window) // a window to count over, not a condition to wait for
	return reads{
		nvmlCalls:   calls.Load() - c0,
		energyOpens: opens() - o0,
		eventSets:   sets.Load(),
		seconds:     time.Since(from).Seconds(),
	}
}

// watchOpens counts the opens of every zone's energy_uj from now on.
func watchOpens(t *testing.T, root string, zones []raplfixture.Zone) func() int64 {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	for _, z := range zones {
		if _, err := syscall.InotifyAddWatch(fd, filepath.Join(raplfixture.Dir(root, z.ID), "energy_uj"), syscall.IN_OPEN); err != nil {
			t.Fatal(err)
		}
	}
	var n atomic.Int64
	buf := make([]byte, 64<<10)
	return func() int64 {
		for {
			k, err := syscall.Read(fd, buf)
			if err != nil || k <= 0 {
				return n.Load() // EAGAIN: every event so far is counted
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= k; {
				ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
				if ev.Mask&syscall.IN_OPEN != 0 {
					n.Add(1)
				}
				off += syscall.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}
}

// TestOneReadingPerProcess: NVML device calls per second in
// worker-exporter's ports (cpu, gpu, ffmpeg with energy per encode) equal
// gpu-exporter's alone, energy_uj opens per second equal cpu-exporter's
// alone, and there is one XID event set. Two readers each (as before the
// readers were shared) would double both rates; the bounds leave room for
// a loaded machine's timers, not for a second reader.
func TestOneReadingPerProcess(t *testing.T) {
	const window = 2 * time.Second
	gpuAlone := serveAndCount(t, window, GPU())
	cpuAlone := serveAndCount(t, window, CPU())
	worker := serveAndCount(t, window, CPU(), GPU(), FFmpeg())
	t.Logf("gpu-exporter alone: %v", gpuAlone)
	t.Logf("cpu-exporter alone: %v", cpuAlone)
	t.Logf("worker-exporter (cpu, gpu, ffmpeg with energy per encode): %v", worker)

	rate := func(n int64, r reads) float64 { return float64(n) / r.seconds }
	if alone, both := rate(gpuAlone.nvmlCalls, gpuAlone), rate(worker.nvmlCalls, worker); alone == 0 || both > 1.4*alone || both < 0.5*alone {
		t.Errorf("NVML device calls: %.1f/s with every port against %.1f/s for the gpu port alone; want the same", both, alone)
	}
	if alone, both := rate(cpuAlone.energyOpens, cpuAlone), rate(worker.energyOpens, worker); alone == 0 || both > 1.4*alone || both < 0.5*alone {
		t.Errorf("energy_uj opens: %.1f/s with every port against %.1f/s for the cpu port alone; want the same", both, alone)
	}
	if worker.eventSets != 1 {
		t.Errorf("%d XID event sets created with every port, want 1", worker.eventSets)
	}
}
