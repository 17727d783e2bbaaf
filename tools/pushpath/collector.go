package pushpath

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// Collector is an OpenTelemetry Collector started here with one of the
// configs in otel-collector/, every address on a free loopback port.
type Collector struct {
	*Process
	GRPC      string // HOST:PORT of its OTLP gRPC receiver
	health    string // URL of its health check
	telemetry string // URL of its own metrics
}

// StartCollector starts bin with config. env sets what the config reads
// besides its addresses, e.g. VICTORIAMETRICS_URL=... or GATEWAYS=[...].
func StartCollector(bin, config string, env ...string) (*Collector, error) {
	var addrs [4]string
	for i := range addrs {
		var err error
		if addrs[i], err = freeAddr(); err != nil {
			return nil, err
		}
	}
	telemetryHost, telemetryPort, _ := strings.Cut(addrs[3], ":")
	// Each collector its own disk queue: two would fight over one's lock,
	// and one run's backlog would reach the next run's store.
	queueDir, err := os.MkdirTemp("", "otelcol-queue-")
	if err != nil {
		return nil, err
	}
	c := &Collector{
		GRPC:      addrs[0],
		health:    "http://" + addrs[2] + "/",
		telemetry: "http://" + addrs[3] + "/metrics",
	}
	c.Process = newProcess(bin, append([]string{
		"OTLP_GRPC_ENDPOINT=" + addrs[0], "OTLP_HTTP_ENDPOINT=" + addrs[1], "HEALTH_CHECK_ENDPOINT=" + addrs[2],
		"COLLECTOR_TELEMETRY_HOST=" + telemetryHost, "COLLECTOR_TELEMETRY_PORT=" + telemetryPort,
		"COLLECTOR_QUEUE_DIR=" + queueDir,
	}, env...), "--config", config)
	if err := c.start(c.health); err != nil {
		return nil, err
	}
	return c, nil
}

// Endpoint is the OTLP gRPC endpoint workers push to.
func (c *Collector) Endpoint() string { return "http://" + c.GRPC }

// Restart starts the collector again, on the same addresses, after Stop.
func (c *Collector) Restart() error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.start(c.health)
}

// Telemetry is the collector's internal telemetry, summed by name over
// every label (receiver, exporter, transport), each name without the
// _total a counter may carry. A counter still at zero may be absent.
func (c *Collector) Telemetry(ctx context.Context) (map[string]float64, error) {
	t, err := scrape(ctx, c.telemetry)
	if err != nil {
		return nil, fmt.Errorf("collector telemetry: %w", err)
	}
	out := make(map[string]float64, len(t))
	for name, v := range t {
		out[strings.TrimSuffix(name, "_total")] += v
	}
	return out, nil
}

// The collector's counters of data points it could not pass on: refused
// by its receiver (memory_limiter), failed to send or to queue by its
// exporters. All zero: nothing was dropped.
var Dropped = []string{
	"otelcol_receiver_refused_metric_points",
	"otelcol_receiver_failed_metric_points",
	"otelcol_exporter_send_failed_metric_points",
	"otelcol_exporter_enqueue_failed_metric_points",
}
