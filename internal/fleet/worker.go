// Package fleet runs simulated worker-exporters in one process: each is
// the real instruments and the real pipeline (its own resource, its own
// OTLP connection, the worker-exporter's four pipelines) over a Machine's
// made-up snapshots, pushing on the OTLP interval as a real worker does.
// A few hundred or thousand of them load a gateway collector the way a
// fleet does, without the fleet.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/metric"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/docker"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/nvml"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/rapl"
)

// ServiceName is every simulated worker's service.name, as worker-exporter's.
const ServiceName = "worker-exporter"

// Push is where and how often simulated workers push.
type Push struct {
	Endpoint string        // OTLP gRPC endpoint, e.g. http://127.0.0.1:4317
	Interval time.Duration // OTEL_METRIC_EXPORT_INTERVAL
}

// Worker is one simulated worker-exporter.
type Worker struct {
	Name    string // its host.name and service.instance.id
	Machine *Machine

	shared *pipeline.Shared
	pipes  []*pipeline.Pipeline
}

// WorkerName is the host name of the simulated worker with index i.
func WorkerName(i int) string { return fmt.Sprintf("fleet-worker-%05d", i) }

// StartWorker starts simulated worker i pushing to push.Endpoint every
// push.Interval; the first push is one interval from now. log receives
// what the pipeline logs (export outages, once each). ctx bounds the
// start only: the worker runs until Close.
func StartWorker(ctx context.Context, i int, push Push, log *slog.Logger) (*Worker, error) {
	w := &Worker{Name: WorkerName(i), Machine: &Machine{Index: i, Start: time.Now()}}
	// The pipeline reads the push settings and the resource from the
	// OTEL_* environment once, when it is built: give each worker its own
	// host.name the way a real worker gets one, through OTEL_RESOURCE_ATTRIBUTES.
	err := withEnv(func() map[string]string {
		return map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": push.Endpoint,
			"OTEL_METRIC_EXPORT_INTERVAL": fmt.Sprint(push.Interval.Milliseconds()),
			"OTEL_RESOURCE_ATTRIBUTES":    resourceAttributes(w.Name),
		}
	}, func() (err error) {
		if w.shared, err = pipeline.NewShared(context.WithoutCancel(ctx), ServiceName, w.Name, log); err != nil {
			return err
		}
		// worker-exporter's four ports, each a pipeline of its own.
		for _, port := range []struct {
			name, source string
			seriesLimit  int // as worker-exporter sets it; 0: the SDK's default
			register     func(metric.Meter) error
		}{
			{"cpu-exporter", "cpu", 0, func(m metric.Meter) error {
				return instruments.RegisterRAPL(m, snapshots[*rapl.Snapshot](w.Machine.RAPL))
			}},
			{"gpu-exporter", "gpu", instruments.GPUSeriesLimit(GPUs), func(m metric.Meter) error {
				return instruments.RegisterGPU(m, snapshots[*nvml.Snapshot](w.Machine.GPU))
			}},
			{"ffmpeg-exporter", "ffmpeg", 0, func(m metric.Meter) error {
				return instruments.RegisterFFmpeg(m, snapshots[ffmpeg.Snapshot](w.Machine.FFmpeg))
			}},
			{"docker-stats-exporter", "docker", instruments.DockerSeriesLimit(Containers), func(m metric.Meter) error {
				return instruments.RegisterDocker(m, snapshots[*docker.Snapshot](w.Machine.Docker))
			}},
		} {
			p, err := w.shared.Pipeline(port.name, port.seriesLimit)
			if err != nil {
				return err
			}
			w.pipes = append(w.pipes, p)
			if err := port.register(p.Meter); err != nil {
				return err
			}
			if err := instruments.RegisterSelf(p.Meter, port.source, w.Machine.Stats); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		w.Close(context.Background())
		return nil, fmt.Errorf("worker %s: %w", w.Name, err)
	}
	return w, nil
}

// snapshots gives a Machine's method the Snapshot method instruments read.
type snapshots[S any] func() S

func (f snapshots[S]) Snapshot() S { return f() }

// Series is how many distinct series the worker pushes, counted on its
// own /metrics (the Prometheus bridge over the same instruments). A series
// every port serves alike (worker_exporter_build_info) is one series of
// the worker's resource.
func (w *Worker) Series() (int, error) {
	seen := map[string]bool{}
	for _, p := range w.pipes {
		rec := httptest.NewRecorder()
		p.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(rec.Body)
		if err != nil {
			return 0, fmt.Errorf("%s /metrics: %w", w.Name, err)
		}
		for name, f := range families {
			for _, m := range f.GetMetric() {
				key := name
				for _, l := range m.GetLabel() {
					key += "," + l.GetName() + "=" + l.GetValue()
				}
				seen[key] = true
			}
		}
	}
	return len(seen), nil
}

// Close stops the worker's pipelines, each flushing a last push, and its
// OTLP connection.
func (w *Worker) Close(ctx context.Context) error {
	var errs []error
	for _, p := range w.pipes {
		errs = append(errs, p.Close(ctx))
	}
	if w.shared != nil {
		errs = append(errs, w.shared.Close(ctx))
	}
	return errors.Join(errs...)
}

// envMu serialises withEnv: the environment is the process's.
var envMu sync.Mutex

// withEnv runs f with the variables vars returns set, then puts back what
// was there.
func withEnv(vars func() map[string]string, f func() error) error {
	envMu.Lock()
	defer envMu.Unlock()
	for k, v := range vars() {
		old, had := os.LookupEnv(k)
		if err := os.Setenv(k, v); err != nil {
			return err
		}
		defer func() {
			if had {
				os.Setenv(k, old)
			} else {
				os.Unsetenv(k)
			}
		}()
	}
	return f()
}

// resourceAttributes is OTEL_RESOURCE_ATTRIBUTES for worker name: the
// process's own, with name's host.name last, so that it wins.
func resourceAttributes(name string) string {
	attrs := []string{"host.name=" + name}
	if own := os.Getenv("OTEL_RESOURCE_ATTRIBUTES"); own != "" {
		attrs = append([]string{own}, attrs...)
	}
	return strings.Join(attrs, ",")
}
