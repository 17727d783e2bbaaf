package instruments

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/otlptranslator"
)

var update = flag.Bool("update", false, "rewrite docs/metrics.md's tables and the golden files from the code")

var validName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// TestCatalogueNames: every name is a well-formed Prometheus name that the
// OTLP→Prometheus translation (the bridge here, VictoriaMetrics'
// -opentelemetry.usePrometheusNaming there) leaves as it is, so scraped and
// pushed series share their names.
func TestCatalogueNames(t *testing.T) {
	namer := otlptranslator.NewMetricNamer("", otlptranslator.UnderscoreEscapingWithSuffixes)
	seen := map[string]bool{}
	for _, g := range Catalogue() {
		for _, m := range g.Metrics {
			if seen[m.Name] {
				t.Errorf("%s listed twice", m.Name)
			}
			seen[m.Name] = true
			if !validName.MatchString(m.Name) {
				t.Errorf("%s: not a well-formed name", m.Name)
			}
			if strings.TrimSpace(m.Help) == "" {
				t.Errorf("%s: no help text", m.Name)
			}
			if (m.Kind == Counter) != strings.HasSuffix(m.Name, "_total") {
				t.Errorf("%s: _total belongs on counters and only on counters", m.Name)
			}
			var typ otlptranslator.MetricType = otlptranslator.MetricTypeGauge
			if m.Kind == Counter {
				typ = otlptranslator.MetricTypeMonotonicCounter
			}
			got, err := namer.Build(otlptranslator.Metric{Name: m.Name, Unit: m.Unit, Type: typ})
			if err != nil || got != m.Name {
				t.Errorf("%s (unit %q) translates to %q %v", m.Name, m.Unit, got, err)
			}
		}
	}
}

// TestMetricTables: the metric tables of docs/metrics.md are the
// catalogue's. Run `go test ./instruments -update` to rewrite them after
// changing the catalogue.
func TestMetricTables(t *testing.T) {
	const path = "../docs/metrics.md"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for _, g := range Catalogue() {
		begin := "<!-- metrics:" + g.title() + " -->\n"
		end := "<!-- /metrics:" + g.title() + " -->"
		i := strings.Index(doc, begin)
		j := strings.Index(doc, end)
		if i < 0 || j < i {
			t.Errorf("%s lacks the markers %q ... %q", path, begin, end)
			continue
		}
		table := doc[i+len(begin) : j]
		if table == g.Markdown() {
			continue
		}
		if *update {
			doc = doc[:i+len(begin)] + g.Markdown() + doc[j:]
			continue
		}
		t.Errorf("%s: the table for %s differs from the catalogue; run go test ./instruments -update", path, g.title())
	}
	if *update {
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
