package pipeline

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// Exporter is what a binary's main describes: its name, port contract, own
// flags, and how to attach its sources to the pipeline.
type Exporter struct {
	Name        string
	DefaultPort int
	PortEnv     string // the deployment guide's port variable
	// Flags registers the exporter's own flags.
	Flags func(fs *flag.FlagSet)
	// Wire attaches sources to p after the flags are parsed. Background work
	// must end with ctx; stop ends serving early (as --stdin does at EOF).
	Wire func(ctx context.Context, p *Pipeline, log *slog.Logger, stop func()) error
}

// Main runs the exporter with os.Args until SIGINT or SIGTERM, and exits 1
// with the error if it fails.
func (e Exporter) Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := e.Run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", e.Name, err)
		os.Exit(1)
	}
}

// Run parses args, builds the pipeline, wires the sources and serves until
// ctx ends.
func (e Exporter) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(e.Name, flag.ContinueOnError)
	opts := NewOptions(fs, e.Name, e.DefaultPort, e.PortEnv)
	if e.Flags != nil {
		e.Flags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log, err := opts.Logger(os.Stderr)
	if err != nil {
		return err
	}
	addr, err := opts.Address()
	if err != nil {
		return err
	}
	p, err := New(ctx, opts, addr, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := e.Wire(ctx, p, log, cancel); err != nil {
		p.Close(context.Background())
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.Close(context.Background())
		return err
	}
	return p.Serve(ctx, ln, opts.WebConfig())
}
