package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// otlpExporter returns the OTLP exporter the OTEL_* environment asks for, or
// nil when no endpoint is set. Endpoint, headers, timeout, TLS and
// compression are read by the OTLP exporters themselves; the interval and
// export timeout by each periodic reader. Only the protocol choice (grpc by
// default) and OTEL_SDK_DISABLED are read here, as the Go SDK has no reader
// for them.
func otlpExporter(ctx context.Context, log *slog.Logger) (*loggingExporter, error) {
	if disabled, _ := strconv.ParseBool(os.Getenv("OTEL_SDK_DISABLED")); disabled {
		log.Info("OTLP push off: OTEL_SDK_DISABLED is true; /metrics still serves")
		return nil, nil
	}
	endpoint := firstEnv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
	if endpoint == "" {
		log.Info("OTLP push off: set OTEL_EXPORTER_OTLP_ENDPOINT to push metrics; /metrics serves them")
		return nil, nil
	}
	protocol := firstEnv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
	if protocol == "" {
		protocol = "grpc"
	}
	var (
		exp sdkmetric.Exporter
		err error
	)
	switch protocol {
	case "grpc":
		exp, err = otlpmetricgrpc.New(ctx)
	case "http/protobuf":
		exp, err = otlpmetrichttp.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: use grpc or http/protobuf", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	log.Info("OTLP push on", "endpoint", endpoint, "protocol", protocol)
	return &loggingExporter{Exporter: exp, log: log}, nil
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// loggingExporter logs an export outage once when it starts and once when it
// ends, instead of once per failed export. The periodic reader keeps trying
// every interval; cumulative temporality means nothing is lost but resolution.
// Several readers (one per pipeline) may share it, so their shutdowns leave
// it open; Shared.Close shuts it.
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

// Shutdown is left to Shared.Close: the readers sharing this exporter each
// call it when their pipeline stops.
func (e *loggingExporter) Shutdown(context.Context) error { return nil }
