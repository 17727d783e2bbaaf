package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// otlpExporter returns the OTLP exporter c asks for, or nil when c has no
// endpoint.
func otlpExporter(ctx context.Context, c Config, log *slog.Logger) (*loggingExporter, error) {
	if c.Endpoint == "" {
		log.Info("OTLP push off: " + c.Off + "; /metrics still serves")
		return nil, nil
	}
	var (
		exp sdkmetric.Exporter
		err error
	)
	switch c.Protocol {
	case "grpc":
		exp, err = otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpointURL(c.Endpoint))
	case "http/protobuf":
		exp, err = otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL(c.Endpoint))
	default:
		return nil, fmt.Errorf("OTLP protocol %q: use grpc or http/protobuf", c.Protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	log.Info("OTLP push on", "endpoint", c.Endpoint, "protocol", c.Protocol)
	return &loggingExporter{Exporter: exp, log: log}, nil
}

// loggingExporter logs an export outage once when it starts and once when it
// ends, instead of once per failed export. The periodic reader keeps trying
// every interval; cumulative temporality means nothing is lost but resolution.
// Several readers (one per pipeline) may share it, so their shutdowns leave
// it open; Process.Close shuts it.
type loggingExporter struct {
	sdkmetric.Exporter
	log *slog.Logger

	mu     sync.Mutex
	failed int // consecutive failed exports
}

func (e *loggingExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	err := e.Exporter.Export(ctx, rm)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case err != nil && e.failed == 0:
		e.log.Warn("OTLP export failing; retrying every interval, scrapes unaffected", "err", err)
		e.failed++
	case err != nil:
		e.failed++
	case e.failed > 0:
		e.log.Info("OTLP export recovered", "failed_exports", e.failed)
		e.failed = 0
	}
	return err
}

// Shutdown is left to Process.Close: the readers sharing this exporter each
// call it when their pipeline stops.
func (e *loggingExporter) Shutdown(context.Context) error { return nil }
