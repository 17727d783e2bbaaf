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
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// ShutdownTimeout bounds the graceful stop: draining HTTP and the last OTLP export.
const ShutdownTimeout = 5 * time.Second

const scope = "github.com/ffmpeg-rtmp/worker-exporters"

// Pipeline is one exporter process's way out.
type Pipeline struct {
	Meter metric.Meter

	log      *slog.Logger
	name     string
	provider *sdkmetric.MeterProvider
	registry *prometheus.Registry
	mux      *http.ServeMux
	pushing  bool

	mu        sync.Mutex
	checks    []check
	endpoints []endpoint
}

type check struct {
	name   string
	health func() error
}

type endpoint struct{ Pattern, About string }

// New builds the pipeline for the binary o.Name, listening on addr (used for
// the default service.instance.id).
func New(ctx context.Context, o *Options, addr string, log *slog.Logger) (*Pipeline, error) {
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		// Export failures are logged, once per outage, by loggingExporter.
		log.Debug("opentelemetry", "err", err)
	}))

	res, err := newResource(ctx, o.Name, addr)
	if err != nil {
		return nil, err
	}

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
	opts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(bridge)}

	push, err := otlpReader(ctx, log)
	if err != nil {
		return nil, err
	}
	if push != nil {
		opts = append(opts, sdkmetric.WithReader(push))
	}

	provider := sdkmetric.NewMeterProvider(opts...)
	p := &Pipeline{
		Meter:    provider.Meter(scope),
		log:      log,
		name:     o.Name,
		provider: provider,
		registry: registry,
		mux:      http.NewServeMux(),
		pushing:  push != nil,
	}
	p.mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	p.mux.HandleFunc("GET /health", p.serveHealth)
	p.mux.HandleFunc("GET /{$}", p.serveLanding)
	return p, nil
}

// newResource names this process for the OTLP path: service.name (the
// binary's unless OTEL_SERVICE_NAME says otherwise), host.name and a
// service.instance.id that stays the same across restarts (host:port), so
// series from many workers stay apart and do not churn.
func newResource(ctx context.Context, name, addr string) (*resource.Resource, error) {
	host, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(addr)
	res, err := resource.New(ctx,
		resource.WithAttributes(
			semconv.ServiceName(name),
			semconv.ServiceInstanceID(net.JoinHostPort(host, port)),
		),
		resource.WithHost(),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // last, so OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("resource: %w", err)
	}
	return res, nil
}

// Handle adds an endpoint, listed on the landing page with about.
func (p *Pipeline) Handle(pattern, about string, h http.Handler) {
	p.mux.Handle(pattern, h)
	p.mu.Lock()
	p.endpoints = append(p.endpoints, endpoint{pattern, about})
	p.mu.Unlock()
}

// AddHealth makes /health report source name through health (nil: healthy).
func (p *Pipeline) AddHealth(name string, health func() error) {
	p.mu.Lock()
	p.checks = append(p.checks, check{name, health})
	p.mu.Unlock()
}

// Handler is the HTTP handler serving /metrics, /health, / and what Handle added.
func (p *Pipeline) Handler() http.Handler { return p.mux }

// Serve serves on ln until ctx ends, then stops gracefully: it drains HTTP
// and flushes a last OTLP export, all within ShutdownTimeout.
func (p *Pipeline) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           p.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	p.log.Info("serving", "exporter", p.name, "address", ln.Addr().String(), "otlp_push", p.pushing)

	var err error
	select {
	case err = <-served:
	case <-ctx.Done():
		p.log.Info("shutting down")
	}
	stop, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if e := srv.Shutdown(stop); e != nil {
		p.log.Warn("http shutdown", "err", e)
	}
	if e := p.provider.Shutdown(stop); e != nil {
		p.log.Warn("last OTLP export did not complete", "err", e)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close releases the pipeline without serving (for early exits and tests).
func (p *Pipeline) Close(ctx context.Context) error { return p.provider.Shutdown(ctx) }
