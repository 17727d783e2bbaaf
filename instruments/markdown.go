package instruments

import (
	"fmt"
	"strings"
)

// Markdown renders a group's metric table as it stands in docs/metrics.md.
func (g Group) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| metric | type | unit | labels | help |\n|---|---|---|---|---|\n")
	for _, m := range g.Metrics {
		labels := "—"
		if len(m.Attributes) > 0 {
			labels = "`" + strings.Join(m.Attributes, "`, `") + "`"
		}
		unit := "—"
		if m.Unit != "" {
			unit = "`" + m.Unit + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", m.Name, m.Kind, unit, labels, m.Help)
	}
	return b.String()
}
