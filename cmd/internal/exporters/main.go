package exporters

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/buildinfo"
	"github.com/ffmpeg-rtmp/worker-exporters/pipeline"
)

// RunFunc runs a binary with its arguments until ctx ends.
type RunFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// Main runs a binary until SIGINT or SIGTERM (SIGHUP and SIGUSR1 do not
// stop it: see pipeline.Signal) and exits as the Prometheus exporters do:
// 0 after --help, --version or a clean stop; 2 for a flag that does not
// parse; 1 for anything else, with the cause on stderr.
func Main(name string, run RunFunc) {
	// SIGHUP and SIGUSR1 would kill the process (Go's default): a daemon
	// reloads what it can on them, or logs and ignores them.
	others := make(chan os.Signal, 1)
	signal.Notify(others, syscall.SIGHUP, syscall.SIGUSR1)
	go func() {
		for sig := range others {
			pipeline.Signal(sig)
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(ExitCode(name, err, os.Stderr))
}

// ExitCode is the exit status for run's error, printing the error first
// where it has not been printed yet.
func ExitCode(name string, err error, stderr io.Writer) int {
	var usage usageError
	switch {
	case err == nil, errors.Is(err, errNothingToRun):
		return 0
	case errors.As(err, &usage):
		return 2
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	return 1
}

// errNothingToRun ends a run that had nothing more to do (--help, --version).
var errNothingToRun = errors.New("nothing to run after --help or --version")

// usageError is a flag that does not parse; the message is already printed.
type usageError struct{ error }

// Parse parses args into fs, with --version added. --help prints the
// usage to stdout and --version the version; both then end the run (errNothingToRun).
func Parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	version := fs.Bool("version", false, "print the version and exit")
	fs.SetOutput(io.Discard) // the flag package's own messages go where we say below
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fmt.Fprintf(stdout, "Usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		return errNothingToRun
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v (see %s --help)\n", fs.Name(), err, fs.Name())
		return usageError{err}
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected arguments %q (see %s --help)\n", fs.Name(), fs.Args(), fs.Name())
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	case *version:
		fmt.Fprintln(stdout, buildinfo.String(fs.Name()))
		return errNothingToRun
	}
	return nil
}

// Main runs the single exporter of s.
func (s Source) Main() { Main(s.Binary, s.Run) }

// Run is the single exporter of s: its source on one port.
func (s Source) Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(s.Binary, flag.ContinueOnError)
	opts := pipeline.NewOptions(fs, s.Binary, s.DefaultPort, s.PortEnv)
	readers := NewReaders()
	Register(fs, readers, s)
	if err := Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	log, err := opts.Logger(stderr)
	if err != nil {
		return err
	}
	addr, err := opts.Address()
	if err != nil {
		return err
	}
	return ProcessConfig{Service: s.Binary, InstanceID: pipeline.InstanceID(addr), Web: opts.Web(), Readers: readers, Log: log}.
		Serve(ctx, []Port{{s, addr}})
}
