package exporters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"sync"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/ffmpeg-rtmp/worker-exporters/instruments"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
)

// Port is a source served on an address.
type Port struct {
	Source Source
	Addr   string // HOST:PORT
}

// ProcessConfig is what every port of one process shares.
type ProcessConfig struct {
	Service    string       // the default service.name: the binary
	InstanceID string       // service.instance.id, stable across restarts
	Web        pipeline.Web // --web.config.file and the connection bounds
	Readers    *Readers     // the machine's readers, built once for every port
	Log        *slog.Logger
}

// StartTableWait bounds how long the start table waits for the sources'
// first samples.
var StartTableWait = 10 * time.Second

// listenRetry is the first and the longest wait between tries to listen on
// a port that is taken.
var listenRetry = [2]time.Duration{time.Second, 30 * time.Second}

// Serve runs ports until ctx ends, or until every port has ended (a source
// that finishes by itself, as --stdin does, ends its port). It returns an
// error, for a non-zero exit, when the web config or a source's flags
// cannot work or when no port can listen. A port that cannot listen while
// others can is retried with backoff: it builds no pipeline and samples
// nothing until it listens.
func (s ProcessConfig) Serve(ctx context.Context, ports []Port) error {
	if len(ports) == 0 {
		return errors.New("no source to serve")
	}
	if err := s.Web.Validate(); err != nil {
		return err
	}
	pipeline.SetErrorLog(s.Log)
	setMemoryLimit(s.Log)
	if s.Readers == nil {
		s.Readers = NewReaders()
	}
	if err := s.Readers.serving(s.Log, ports); err != nil {
		return err
	}
	built := make([]OpenedSource, len(ports))
	for i, p := range ports {
		var err error
		if built[i], err = p.Source.Open(s.Readers, s.Log.With("source", p.Source.Name)); err != nil {
			return fmt.Errorf("%s: %w", p.Source.Name, err)
		}
	}
	lns := make([]net.Listener, len(ports))
	listenErrs := make([]error, len(ports))
	var failed []error
	for i, p := range ports {
		if lns[i], listenErrs[i] = net.Listen("tcp", p.Addr); listenErrs[i] != nil {
			failed = append(failed, fmt.Errorf("%s port: %w", p.Source.Name, listenErrs[i]))
		}
	}
	if len(failed) == len(ports) {
		return errors.Join(failed...)
	}
	shared, err := pipeline.NewProcess(ctx, s.Service, s.InstanceID, s.Log)
	if err != nil {
		for _, ln := range lns {
			if ln != nil {
				ln.Close()
			}
		}
		return err
	}
	defer shared.Close(context.Background())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(ports))
	var wg sync.WaitGroup
	for i := range ports {
		wg.Go(func() {
			if errs[i] = s.servePort(ctx, shared, ports[i], built[i], lns[i]); errs[i] != nil {
				cancel() // a port that cannot be built is a bug: stop, and say why
			}
		})
	}
	go s.startTable(ctx, ports, built, listenErrs)
	wg.Wait()
	return errors.Join(errs...)
}

// servePort listens (retrying while the port is taken), then builds the
// port's pipeline, attaches the source and serves until ctx ends or the
// source ends.
func (s ProcessConfig) servePort(ctx context.Context, shared *pipeline.Process, port Port, b OpenedSource, ln net.Listener) error {
	name := port.Source.Name
	log := s.Log.With("source", name)
	for wait := listenRetry[0]; ln == nil; wait = min(2*wait, listenRetry[1]) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		var err error
		if ln, err = net.Listen("tcp", port.Addr); err != nil {
			log.Warn("port still cannot listen; retrying", "address", port.Addr, "err", err, "next_try_in", min(2*wait, listenRetry[1]))
		}
	}
	p, err := shared.Pipeline(port.Source.Binary, b.SeriesLimit)
	if err == nil {
		err = attach(p, name, b)
	}
	if err != nil {
		ln.Close()
		if p != nil {
			p.Close(context.Background())
		}
		return fmt.Errorf("%s: %w", name, err)
	}

	// The source runs as long as its port; a source that ends by itself
	// (--stdin at end of input) ends the port.
	portCtx, endPort := context.WithCancel(ctx)
	defer endPort()
	ran := make(chan struct{})
	go func() { b.Run(portCtx); close(ran); endPort() }()
	err = p.Serve(portCtx, ln, s.Web)
	endPort()
	<-ran
	return err
}

// attach registers a built source on p: its instruments and endpoints, its
// self-metrics and its health, all under its one name. Everything /metrics
// shows then comes from the source's snapshots, so p may keep its render
// while the source's generation stays put.
func attach(p *pipeline.Pipeline, name string, b OpenedSource) error {
	if err := b.Register(p); err != nil {
		return err
	}
	if err := instruments.RegisterSelf(p.Meter, name, b.Stats); err != nil {
		return err
	}
	p.AddHealth(name, b.Health)
	p.Watch(b.Source)
	return nil
}

// startTable logs, once, what each source found at start: once every
// source has its first sample (or StartTableWait is over), its port and
// health, or why its port cannot listen yet.
func (s ProcessConfig) startTable(ctx context.Context, ports []Port, built []OpenedSource, listenErrs []error) {
	deadline := time.After(StartTableWait)
	for _, b := range built {
		select {
		case <-b.Ready():
		case <-deadline:
		case <-ctx.Done():
			return
		}
	}
	for i, p := range ports {
		err := built[i].Health()
		if listenErrs[i] != nil {
			err = fmt.Errorf("cannot listen (%w); retrying with backoff", listenErrs[i])
		}
		if err != nil {
			s.Log.Warn("source", "name", p.Source.Name, "port", portOf(p.Addr), "status", "error", "err", err)
		} else {
			s.Log.Info("source", "name", p.Source.Name, "port", portOf(p.Addr), "status", "ok")
		}
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// setMemoryLimit tells the Go runtime the memory limit of the process's
// cgroup (a unit's MemoryMax, a container's --memory), less a tenth for
// what is not Go's (the binary's pages), so that near it the collector
// works harder rather than the kernel killing the process: a burst of
// renders for 1,000 streams peaked past 128M unguided. GOMEMLIMIT, when
// set, wins; AUTOMEMLIMIT sets another ratio, or off. Prometheus does the
// same.
func setMemoryLimit(log *slog.Logger) {
	limit, err := memlimit.Set(memlimit.WithProvider(memlimit.FromCgroup), memlimit.WithRatio(0.9))
	env := []any{"GOMEMLIMIT", os.Getenv("GOMEMLIMIT"), "AUTOMEMLIMIT", os.Getenv("AUTOMEMLIMIT")}
	switch {
	case err != nil && os.Getenv("AUTOMEMLIMIT") != "":
		log.Warn("Go memory limit not set from the cgroup", append(env, "err", err)...)
	case err != nil:
		log.Debug("no memory limit read from a cgroup", "err", err)
	case limit < math.MaxInt64:
		log.Info("Go memory limit", append([]any{"bytes", limit}, env...)...)
	}
}
