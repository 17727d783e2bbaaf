// Package instruments is the metric catalogue — every metric's name, unit,
// help text and attribute keys — and the OpenTelemetry asynchronous
// instruments whose callbacks read a source's latest snapshot.
//
// Names are the exposition names a scrape shows. Units are chosen so that the
// Prometheus translation (which appends unit and _total suffixes that are not
// already there) leaves every name as it is, on the scrape and on the OTLP
// path into VictoriaMetrics alike; catalogue_test.go holds that to account.
package instruments

import "slices"

// Kind is the instrument a metric is recorded with.
type Kind uint8

const (
	Gauge   Kind = iota // a value that goes up and down
	Counter             // a cumulative total that only rises
)

func (k Kind) String() string {
	if k == Counter {
		return "counter"
	}
	return "gauge"
}

// Metric describes one metric family.
type Metric struct {
	Name       string
	Unit       string // UCUM, as OpenTelemetry wants it; empty for plain numbers
	Kind       Kind
	Help       string
	Attributes []string
}

// Group is the catalogue of one exporter.
type Group struct {
	Name    string // what it reads: its flags, /health key, self-metric source label and logs say this
	Binary  string // the exporter's name when it runs alone
	Metrics []Metric
}

// The exporters. Their names live here only, beside their catalogues.
var (
	CPUExporter    = Group{Name: "cpu", Binary: "cpu-exporter", Metrics: RAPL}
	GPUExporter    = Group{Name: "gpu", Binary: "gpu-exporter", Metrics: GPU}
	FFmpegExporter = Group{Name: "ffmpeg", Binary: "ffmpeg-exporter", Metrics: slices.Concat(FFmpeg, Energy)}
	DockerExporter = Group{Name: "docker", Binary: "docker-stats-exporter", Metrics: Docker}
)

// Catalogue lists every metric of every exporter, and the self-metrics
// (a group with no source or binary); the tables of docs/metrics.md are rendered from
// it.
func Catalogue() []Group {
	return []Group{FFmpegExporter, CPUExporter, GPUExporter, DockerExporter, {Metrics: Self}}
}

// title names g in the table markers of docs/metrics.md.
func (g Group) title() string {
	if g.Binary == "" {
		return "every exporter (self-metrics)"
	}
	return g.Binary
}
