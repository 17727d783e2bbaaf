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
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

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

	shared *pipeline.Process
	pipes  []*pipeline.Pipeline
}

// WorkerName is the host name of the simulated worker with index i.
func WorkerName(i int) string { return fmt.Sprintf("fleet-worker-%05d", i) }

// StartWorker starts simulated worker i pushing to push.Endpoint every
// push.Interval; the first push is one interval from now. base is the
// process's own pipeline configuration (pipeline.ConfigFromEnv): its
// resource attributes and export timeout are every worker's too. log
// receives what the pipeline logs (export outages, once each). ctx bounds
// the start only: the worker runs until Close.
func StartWorker(ctx context.Context, i int, push Push, base pipeline.Config, log *slog.Logger) (*Worker, error) {
	w := &Worker{Name: WorkerName(i), Machine: &Machine{Index: i, Start: time.Now()}}
	cfg := base
	cfg.Endpoint, cfg.Protocol, cfg.Interval = push.Endpoint, "grpc", push.Interval
	// Its own host.name, last so that it wins, as a real worker's host gives it.
	cfg.Resource = append(slices.Clip(base.Resource), semconv.HostName(w.Name))
	err := func() (err error) {
		if w.shared, err = cfg.Process(context.WithoutCancel(ctx), ServiceName, w.Name, log); err != nil {
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
	}()
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
			if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
				continue // the simulator's own process and Go series: served, never pushed
			}
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
