// Package pipeline carries readings out of the process: one MeterProvider
// with two readers — the Prometheus bridge behind GET /metrics and, when an
// OTLP endpoint is configured, a periodic OTLP push — plus the HTTP server
// (/metrics, /health, /) and the lifecycle around them.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

const scope = "github.com/ffmpeg-rtmp/worker-exporters"

// Process is what the pipelines of one process share: the resource that
// names the process, the OTLP exporter (one connection), the password
// gate (one per process, so that wrong passwords cost the same however
// many ports they are sent to) and the descriptor budget.
type Process struct {
	cfg       Config
	res       *resource.Resource
	push      *loggingExporter // nil: no push
	passwords *passwords
	fds       *descriptors
	log       *slog.Logger
}

// NewProcess builds what a process's pipelines share, pushing as the OTEL_*
// environment says. serviceName is the default service.name; instanceID
// the service.instance.id, stable across restarts so series do not churn.
func NewProcess(ctx context.Context, serviceName, instanceID string, log *slog.Logger) (*Process, error) {
	cfg, err := ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	return cfg.Process(ctx, serviceName, instanceID, log)
}

// Process builds what a process's pipelines share, pushing as c says.
func (c Config) Process(ctx context.Context, serviceName, instanceID string, log *slog.Logger) (*Process, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(serviceName), semconv.ServiceInstanceID(instanceID)),
		resource.WithHost(),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(c.Resource...), // last, so OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("resource: %w", err)
	}
	push, err := otlpExporter(ctx, c, log)
	if err != nil {
		return nil, err
	}
	return &Process{cfg: c, res: res, push: push, passwords: newPasswords(), fds: newDescriptors(), log: log}, nil
}

// SetErrorLog sends OpenTelemetry's own errors, process-wide, to log at
// debug level, and makes log the one Signal writes to; the process's
// runner calls it once. (Export failures are logged, once per outage, by
// loggingExporter.)
func SetErrorLog(log *slog.Logger) {
	processLog.Store(log)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Debug("opentelemetry", "err", err)
	}))
}

// Close shuts the OTLP exporter down; call it after every pipeline has
// stopped. Their last exports are done by then, so it waits closeTimeout
// at most, whatever ctx allows: a collector that never answers cannot hold
// the process.
func (s *Process) Close(ctx context.Context) error {
	if s.push == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, closeTimeout)
	defer cancel()
	return s.push.Exporter.Shutdown(ctx)
}

const closeTimeout = 500 * time.Millisecond

// InstanceID is HOST:PORT of addr on this host: a service.instance.id that
// stays the same across restarts.
func InstanceID(addr string) string {
	host, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(host, port)
}

// Pipeline is one port's way out: a MeterProvider whose readers are the
// Prometheus bridge behind its /metrics and, when pushing, a periodic OTLP
// reader over the shared exporter.
type Pipeline struct {
	Meter metric.Meter

	log      *slog.Logger
	name     string
	provider *sdkmetric.MeterProvider
	mux      *http.ServeMux
	metrics  *metricsCache // GET /metrics; see Watch
	pushing  bool
	shared   *Process
	owned    bool // the pipeline closes shared: New made it

	mu        sync.Mutex
	checks    []check
	notes     map[string]func() []string // by source name; see AddHealthNotes
	endpoints []endpoint
	streams   map[string]string // pattern → token; see HandleStream
}

type check struct {
	name   string
	health func() error
}

type endpoint struct{ Pattern, About string }

// New builds the pipeline of a single exporter o.Name listening on addr,
// pushing as the OTEL_* environment says.
func New(ctx context.Context, o *Options, addr string, log *slog.Logger) (*Pipeline, error) {
	shared, err := NewProcess(ctx, o.Name, InstanceID(addr), log)
	if err != nil {
		return nil, err
	}
	p, err := shared.Pipeline(o.Name, 0)
	if err != nil {
		return nil, err
	}
	p.owned = true
	return p, nil
}

// Pipeline builds a pipeline named name (for the log and landing page).
// seriesLimit is the most series one instrument may have before the SDK
// folds the rest into one otel_metric_overflow="true" series; 0 keeps the
// SDK's default (2,000).
func (s *Process) Pipeline(name string, seriesLimit int) (*Pipeline, error) {
	registry := prometheus.NewRegistry()
	bridge, err := otelprom.New(
		otelprom.WithRegisterer(registry),
		otelprom.WithoutScopeInfo(),
		otelprom.WithoutTargetInfo(),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		return nil, fmt.Errorf("prometheus bridge: %w", err)
	}
	opts := []sdkmetric.Option{sdkmetric.WithResource(s.res), sdkmetric.WithReader(bridge)}
	if s.push != nil {
		var ropts []sdkmetric.PeriodicReaderOption
		if s.cfg.Interval > 0 {
			ropts = append(ropts, sdkmetric.WithInterval(s.cfg.Interval))
		}
		if s.cfg.Timeout > 0 {
			ropts = append(ropts, sdkmetric.WithTimeout(s.cfg.Timeout))
		}
		opts = append(opts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(s.push, ropts...)))
	}
	if seriesLimit > 0 {
		opts = append(opts, sdkmetric.WithCardinalityLimit(seriesLimit))
	}
	provider := sdkmetric.NewMeterProvider(opts...)
	p := &Pipeline{
		Meter:    provider.Meter(scope),
		log:      s.log,
		name:     name,
		provider: provider,
		mux:      http.NewServeMux(),
		pushing:  s.push != nil,
		shared:   s,
	}
	p.metrics = newMetricsCache(registry, s.log)
	p.mux.Handle("GET /metrics", p.metrics)
	p.mux.HandleFunc("GET /health", p.serveHealth)
	p.mux.HandleFunc("GET /{$}", p.serveLanding)
	return p, nil
}

// Handle adds an endpoint, listed on the landing page with about.
func (p *Pipeline) Handle(pattern, about string, h http.Handler) {
	p.mux.Handle(pattern, h)
	p.mu.Lock()
	p.endpoints = append(p.endpoints, endpoint{pattern, about})
	p.mu.Unlock()
}

// HandleStream adds an endpoint that clients stream a long body to, as
// ffmpeg -progress does with one POST for a whole encode. Its body has no
// deadline (h sets its own), and at shutdown its connections are closed
// first. Live streams count against the process's descriptor budget, not
// the port's --web.max-connections; one past the budget is refused at
// once, by h when it is a StreamRefuser (which counts it), else with 503. Since such a client cannot send basic auth, when the web
// configuration has users the token ("Authorization: Bearer TOKEN" or
// ?token=TOKEN) is its credential instead; without a token it stays behind
// basic auth.
func (p *Pipeline) HandleStream(pattern, about string, h http.Handler, token string) {
	p.Handle(pattern, about, h)
	p.mu.Lock()
	if p.streams == nil {
		p.streams = map[string]string{}
	}
	p.streams[pattern] = token
	p.mu.Unlock()
}

// AddHealth makes /health report source name through health (nil: healthy).
func (p *Pipeline) AddHealth(name string, health func() error) {
	p.mu.Lock()
	p.checks = append(p.checks, check{name, health})
	p.mu.Unlock()
}

// AddHealthNotes makes /health list, under source name, what the source
// does not cover although nothing failed (a GPU in MIG mode); notes never
// change its status.
func (p *Pipeline) AddHealthNotes(name string, notes func() []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.notes == nil {
		p.notes = map[string]func() []string{}
	}
	p.notes[name] = notes
}

// Handler is the HTTP handler serving /metrics, /health, / and what Handle added.
func (p *Pipeline) Handler() http.Handler { return p.mux }

// Close stops the pipeline, flushing its last OTLP export, and the shared
// exporter too when New made it.
func (p *Pipeline) Close(ctx context.Context) error {
	err := p.provider.Shutdown(ctx)
	if p.owned {
		err = errors.Join(err, p.shared.Close(ctx))
	}
	return err
}
