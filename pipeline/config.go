package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
)

// Config is how a process's pipelines push: the OTEL_* environment, read
// once (ConfigFromEnv) and passed down, so that a program running many
// pipelines (the fleet simulator) gives each its own without touching the
// environment. What it does not carry — the OTLP connection's headers,
// TLS files, compression and per-request timeout — the OTLP exporter reads
// from the environment itself, once, when it is built.
type Config struct {
	// Endpoint is the URL to push to, as the OTLP exporter of Protocol
	// takes it (over HTTP, with its /v1/metrics path); empty: no push.
	Endpoint string
	Protocol string        // "grpc" or "http/protobuf"
	Interval time.Duration // between pushes; 0: the SDK's default (60 s)
	Timeout  time.Duration // of one push; 0: the SDK's default (30 s)
	// Resource is what OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
	// say; it wins over the pipeline's own service.name and host.
	Resource []attribute.KeyValue
	// Off says why there is no push, for the log, when Endpoint is empty.
	Off string
}

// ConfigFromEnv reads Config from the OTEL_* environment: the variables of
// the OpenTelemetry specification the deployment guide lists.
func ConfigFromEnv() (Config, error) {
	var c Config
	res, err := resource.New(context.Background(), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return c, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	c.Resource = res.Attributes()
	if disabled, _ := strconv.ParseBool(os.Getenv("OTEL_SDK_DISABLED")); disabled {
		c.Off = "OTEL_SDK_DISABLED is true"
		return c, nil
	}
	c.Protocol = firstEnv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
	if c.Protocol == "" {
		c.Protocol = "grpc"
	}
	if c.Protocol != "grpc" && c.Protocol != "http/protobuf" {
		return c, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: use grpc or http/protobuf", c.Protocol)
	}
	c.Endpoint = os.Getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") // as is
	if generic := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); c.Endpoint == "" && generic != "" {
		c.Endpoint = generic
		if u, err := url.Parse(generic); err == nil && c.Protocol == "http/protobuf" {
			u.Path = path.Join(u.Path, "/v1/metrics") // a base URL, per the specification
			c.Endpoint = u.String()
		}
	}
	if c.Endpoint == "" {
		c.Off = "set OTEL_EXPORTER_OTLP_ENDPOINT to push metrics"
	}
	for _, ms := range []struct {
		name string
		d    *time.Duration
	}{{"OTEL_METRIC_EXPORT_INTERVAL", &c.Interval}, {"OTEL_METRIC_EXPORT_TIMEOUT", &c.Timeout}} {
		if v := os.Getenv(ms.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return c, fmt.Errorf("%s=%q: want milliseconds, a positive integer", ms.name, v)
			}
			*ms.d = time.Duration(n) * time.Millisecond
		}
	}
	return c, nil
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}
