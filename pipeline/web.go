package pipeline

import (
	"bytes"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
)

// Web is how every port of a process serves HTTP: the Prometheus web
// configuration (TLS, basic auth) and the bounds that keep a hostile client
// from holding file descriptors and memory.
type Web struct {
	ConfigFile        string        // --web.config.file; empty: plain HTTP, no auth
	MaxConnections    int           // per port, besides streams; at the limit the oldest idle connection is closed; 0: no limit
	IdleTimeout       time.Duration // a keep-alive connection idle this long is closed; an answer not read within it, dropped
	ReadHeaderTimeout time.Duration // for a TLS handshake and a request's headers; and for its body, except on streaming endpoints
}

// defaultWeb keeps four ports (worker-exporter) within half of a 1,024
// file-descriptor limit, and their idle connections within a few MB.
var defaultWeb = Web{MaxConnections: 128, IdleTimeout: 2 * time.Minute, ReadHeaderTimeout: 10 * time.Second}

// RegisterWeb registers --web.config.file and the connection bounds on fs.
func RegisterWeb(fs *flag.FlagSet) *Web {
	w := defaultWeb
	fs.StringVar(&w.ConfigFile, "web.config.file", "", "Prometheus web configuration file enabling TLS and basic auth (https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md)")
	fs.IntVar(&w.MaxConnections, "web.max-connections", w.MaxConnections, "connections per port besides live ingest streams; at the limit the oldest idle one is closed to make room (0: no limit)")
	fs.DurationVar(&w.IdleTimeout, "web.idle-timeout", w.IdleTimeout, "close a keep-alive connection idle this long, and drop an answer its client does not read within it")
	fs.DurationVar(&w.ReadHeaderTimeout, "web.read-header-timeout", w.ReadHeaderTimeout, "time a client has for the TLS handshake and a request's headers (and its body, except on /ingest)")
	return &w
}

// Validate says what in w cannot work: a web configuration that does not
// load, or a bound that is not positive.
func (w Web) Validate() error {
	if err := web.Validate(w.ConfigFile); err != nil {
		return fmt.Errorf("--web.config.file %s: %w", w.ConfigFile, err)
	}
	switch {
	case w.MaxConnections < 0:
		return fmt.Errorf("--web.max-connections %d: use 0 (no limit) or more", w.MaxConnections)
	case w.IdleTimeout <= 0:
		return fmt.Errorf("--web.idle-timeout %s: must be positive", w.IdleTimeout)
	case w.ReadHeaderTimeout <= 0:
		return fmt.Errorf("--web.read-header-timeout %s: must be positive", w.ReadHeaderTimeout)
	}
	return nil
}

// configFile is the web configuration, read again when the file changes:
// as with exporter-toolkit, users, headers and TLS settings change without
// a restart. (Reading a small file per request is cheap; parsing and
// validating it again is done only when its bytes change.)
type configFile struct {
	path string

	mu   sync.Mutex
	data []byte
	cfg  *web.Config
}

// load returns the configuration as the file now says, or the error that
// keeps it from loading.
func (f *configFile) load() (*web.Config, error) {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cfg != nil && bytes.Equal(data, f.data) {
		return f.cfg, nil
	}
	if err := web.Validate(f.path); err != nil {
		return nil, err
	}
	// exporter-toolkit validates but does not hand out what it parsed; this
	// decodes it as its own (unexported) reader does: its defaults, and its
	// YAML library in strict mode, so no second YAML library is linked.
	c := &web.Config{
		TLSConfig:  web.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, PreferServerCipherSuites: true},
		HTTPConfig: web.HTTPConfig{HTTP2: true},
	}
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return nil, err
	}
	c.TLSConfig.SetDirectory(filepath.Dir(f.path))
	f.cfg, f.data = c, data
	return c, nil
}
