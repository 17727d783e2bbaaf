package pipeline

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
)

// shutdownTimeout bounds the graceful stop: draining HTTP and the last OTLP
// export. The README promises the process is gone within 5 s of SIGTERM;
// the rest is for closing the OTLP connection (Process.Close, within
// closeTimeout) and exiting, on a loaded machine too.
const shutdownTimeout = 3 * time.Second

// shutdownGrace is what requests in flight get to finish at shutdown (a
// scrape takes milliseconds); the rest of shutdownTimeout is the last
// export's. Streaming requests get none: they never finish by themselves.
const shutdownGrace = time.Second

// Serve serves on ln as w says until ctx ends, then stops gracefully: it
// closes the streaming requests (ingest), lets the others finish, and
// flushes a last OTLP export, all within shutdownTimeout. It closes ln and
// p on every return, so that an error leaves no OTLP reader behind.
func (p *Pipeline) Serve(ctx context.Context, ln net.Listener, w Web) error {
	log := p.log.With("exporter", p.name)
	fail := func(err error) error {
		ln.Close()
		p.closeBy(time.Now().Add(shutdownTimeout), log)
		return err
	}
	if err := w.Validate(); err != nil {
		return fail(err)
	}
	fds := p.shared.fds
	defer fds.reserve(w.MaxConnections + 1)() // its connections, and its listener
	conns := newConns(ln, w.MaxConnections, fds, log)
	g := &guard{next: p.mux, route: p.route, passwords: p.shared.passwords, conns: conns, bodyTimeout: w.ReadHeaderTimeout, writeTimeout: w.IdleTimeout, log: log}
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: w.ReadHeaderTimeout,
		IdleTimeout:       w.IdleTimeout,
		ConnContext:       conns.withConn,
		ConnState:         conns.connState,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	srv.RegisterOnShutdown(conns.closeStreams)

	var useTLS bool
	if w.ConfigFile != "" {
		g.config = &configFile{path: w.ConfigFile}
		c, err := g.config.load()
		if err != nil {
			return fail(err)
		}
		defer watchConfig(g.config)()
		g.limiter = newRateLimiter(c)
		if useTLS = c.TLSConfig.IsEnabled(); useTLS {
			conns.tls = true
			srv.TLSConfig = serverTLS(g.config, c.HTTPConfig.HTTP2)
			if !c.HTTPConfig.HTTP2 {
				srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
			}
		}
		if len(c.Users) > 0 {
			p.warnOpenStreams(log)
		}
	}
	served := make(chan error, 1)
	go func() {
		if useTLS {
			served <- srv.ServeTLS(conns, "", "")
		} else {
			served <- srv.Serve(conns)
		}
	}()
	limit, maxStreams := fds.budget()
	log.Info("serving", "address", ln.Addr().String(), "tls", useTLS, "otlp_push", p.pushing, "web_config", w.ConfigFile,
		"max_connections", w.MaxConnections, "idle_timeout", w.IdleTimeout, "descriptor_limit", limit, "max_live_streams", maxStreams)

	var err error
	select {
	case err = <-served:
	case <-ctx.Done():
		log.Info("shutting down")
	}
	deadline := time.Now().Add(shutdownTimeout)
	grace, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if srv.Shutdown(grace) != nil {
		srv.Close() // what has not finished within the grace
	}
	p.closeBy(deadline, log)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// closeBy closes p, its last OTLP export bounded by deadline.
func (p *Pipeline) closeBy(deadline time.Time, log *slog.Logger) {
	stop, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := p.Close(stop); err != nil {
		log.Warn("last OTLP export did not complete", "err", err)
	}
}

// route finds r's handler and tells whether it is a streaming endpoint,
// and its token.
func (p *Pipeline) route(r *http.Request) (h http.Handler, stream bool, token string) {
	h, pattern := p.mux.Handler(r)
	p.mu.Lock()
	defer p.mu.Unlock()
	token, stream = p.streams[pattern]
	return h, stream, token
}

// warnOpenStreams says, under basic auth, which streaming endpoints have
// no token: they stay behind basic auth, which ffmpeg -progress cannot send.
func (p *Pipeline) warnOpenStreams(log *slog.Logger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pattern, token := range p.streams {
		if token == "" {
			log.Warn("basic auth is on and this endpoint has no token: it stays behind basic auth, which ffmpeg -progress cannot send, so ffmpeg cannot post to it; set --ingest.token and add ?token= to the -progress URL", "endpoint", pattern)
		}
	}
}

// serverTLS reads the TLS settings again for every connection, as
// exporter-toolkit does, so a renewed certificate needs no restart.
func serverTLS(config *configFile, http2 bool) *tls.Config {
	protos := []string{"http/1.1"}
	if http2 {
		protos = []string{"h2", "http/1.1"}
	}
	return &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := config.load()
		if err != nil {
			return nil, err
		}
		tc, err := web.ConfigToTLSConfig(&c.TLSConfig)
		if err != nil {
			return nil, err
		}
		tc.NextProtos = protos
		return tc, nil
	}}
}
