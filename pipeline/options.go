package pipeline

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/common/promslog"
)

// Options are the flags every binary shares.
type Options struct {
	Name          string // the binary's name: the default service.name
	port          int
	listenAddress string
	logLevel      string
	logFormat     string
	web           *Web
	envErr        error
}

// NewOptions registers the common flags on fs. The port comes from
// --web.listen-address, else --port, else the environment variable portEnv
// (the deployment guide's, e.g. FFMPEG_EXPORTER_PORT), else defaultPort.
func NewOptions(fs *flag.FlagSet, name string, defaultPort int, portEnv string) *Options {
	o := &Options{Name: name}
	if v := os.Getenv(portEnv); v != "" {
		p, err := parsePort(v)
		if err != nil {
			o.envErr = fmt.Errorf("%s=%q: %w", portEnv, v, err)
		} else {
			defaultPort = p
		}
	}
	fs.IntVar(&o.port, "port", defaultPort, "port to listen on (env "+portEnv+")")
	fs.StringVar(&o.listenAddress, "web.listen-address", "", "address to listen on, HOST:PORT; wins over --port")
	o.web = RegisterWeb(fs)
	RegisterLogFlags(fs, &o.logLevel, &o.logFormat)
	return o
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || p < 0 || p > 65535 {
		return 0, errors.New("not a port number (0-65535)")
	}
	return p, nil
}

// Web is how the port serves HTTP, as the --web.* flags say.
func (o *Options) Web() Web { return *o.web }

// Address is where the HTTP server listens.
func (o *Options) Address() (string, error) {
	if o.listenAddress != "" {
		if _, _, err := net.SplitHostPort(o.listenAddress); err != nil {
			return "", fmt.Errorf("--web.listen-address: %w", err)
		}
		return o.listenAddress, nil
	}
	if o.envErr != nil {
		return "", o.envErr
	}
	if o.port < 0 || o.port > 65535 {
		return "", fmt.Errorf("--port %d: not a port number (0-65535)", o.port)
	}
	return ":" + strconv.Itoa(o.port), nil
}

// Logger builds the slog logger the flags ask for, writing to w.
func (o *Options) Logger(w io.Writer) (*slog.Logger, error) {
	return NewLogger(w, o.logLevel, o.logFormat)
}

// RegisterLogFlags registers --log.level and --log.format on fs.
func RegisterLogFlags(fs *flag.FlagSet, level, format *string) {
	fs.StringVar(level, "log.level", "info", "log level: "+strings.Join(promslog.LevelFlagOptions, ", "))
	fs.StringVar(format, "log.format", "text", "log format: text (logfmt) or json")
}

// NewLogger builds prometheus/common's logger (promslog), as the
// Prometheus exporters log, of the given level and format, writing to w.
// The format "text", which these binaries have always taken, is
// promslog's logfmt.
func NewLogger(w io.Writer, levelName, format string) (*slog.Logger, error) {
	level := promslog.NewLevel()
	if err := level.Set(levelName); err != nil {
		return nil, fmt.Errorf("--log.level %q: use %s", levelName, strings.Join(promslog.LevelFlagOptions, ", "))
	}
	if format == "text" {
		format = "logfmt"
	}
	f := promslog.NewFormat()
	if err := f.Set(format); err != nil {
		return nil, fmt.Errorf("--log.format %q: use text (or logfmt) or json", format)
	}
	return promslog.New(&promslog.Config{Level: level, Format: f, Writer: w}), nil
}
