package pipeline

import (
	"encoding/json"
	"html/template"
	"maps"
	"net/http"
)

// Health is the body of GET /health.
type Health struct {
	Status  string                  `json:"status"` // "ok", or "error" when a source fails
	Sources map[string]SourceHealth `json:"sources"`
}

// SourceHealth is one source's part of Health.
type SourceHealth struct {
	Status string   `json:"status"`
	Error  string   `json:"error,omitempty"`
	Notes  []string `json:"notes,omitempty"` // what it does not cover, healthy or not (AddHealthNotes)
}

// serveHealth answers 200 {"status":"ok",...} when every source is healthy and
// 503 naming each failing source and why otherwise.
func (p *Pipeline) serveHealth(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	checks := append([]check(nil), p.checks...)
	notes := maps.Clone(p.notes)
	p.mu.Unlock()

	h := Health{Status: "ok", Sources: make(map[string]SourceHealth, len(checks))}
	for _, c := range checks {
		sh := SourceHealth{Status: "ok"}
		if err := c.health(); err != nil {
			h.Status = "error"
			sh = SourceHealth{Status: "error", Error: err.Error()}
		}
		if n := notes[c.name]; n != nil {
			sh.Notes = n()
		}
		h.Sources[c.name] = sh
	}
	w.Header().Set("Content-Type", "application/json")
	if h.Status != "ok" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(h)
}

var landing = template.Must(template.New("landing").Parse(`<!doctype html>
<html><head><title>{{.Name}}</title></head>
<body>
<h1>{{.Name}}</h1>
<ul>
<li><a href="metrics">/metrics</a>: metrics in the Prometheus text format</li>
<li><a href="health">/health</a>: JSON health of each source</li>
{{range .Endpoints}}<li><code>{{.Pattern}}</code>: {{.About}}</li>
{{end}}</ul>
</body></html>
`))

func (p *Pipeline) serveLanding(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	data := struct {
		Name      string
		Endpoints []endpoint
	}{p.name, append([]endpoint(nil), p.endpoints...)}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = landing.Execute(w, data)
}
