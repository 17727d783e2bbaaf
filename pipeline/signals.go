package pipeline

import (
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// The process's logger (SetErrorLog sets it) and web configurations
// (Serve adds them), for Signal.
var (
	processLog atomic.Pointer[slog.Logger]

	configsMu sync.Mutex
	configs   = map[*configFile]struct{}{}
)

// Signal handles a signal a daemon is sent to reload (SIGHUP) or for its
// own use (SIGUSR1, and any other): Go's default for them is to die at
// once, with no last export. SIGHUP re-reads the web configuration of each
// port now and says whether it loads (every request re-reads it anyway,
// so a good file is in use from the next request); the others are logged
// and ignored. The process's runner calls it for each such signal.
func Signal(sig os.Signal) {
	log := processLog.Load()
	if log == nil { // not serving yet: nothing to reload
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	name := sig.String()
	if s, ok := sig.(syscall.Signal); ok {
		name = unix.SignalName(s) // SIGHUP, as operators write it
	}
	if sig != syscall.SIGHUP {
		log.Info("signal ignored", "signal", name)
		return
	}
	configsMu.Lock()
	files := make([]*configFile, 0, len(configs))
	for f := range configs {
		files = append(files, f)
	}
	configsMu.Unlock()
	if len(files) == 0 {
		log.Info("signal: nothing to reload (no --web.config.file)", "signal", name)
		return
	}
	seen := map[string]bool{}
	for _, f := range files {
		if seen[f.path] {
			continue
		}
		seen[f.path] = true
		if _, err := f.load(); err != nil {
			log.Error("signal: the web configuration does not load; requests get 500 until it does", "signal", name, "web_config", f.path, "err", err)
		} else {
			log.Info("signal: web configuration reloaded", "signal", name, "web_config", f.path)
		}
	}
}

// watchConfig lets Signal reload f until the returned func is called.
func watchConfig(f *configFile) (forget func()) {
	configsMu.Lock()
	configs[f] = struct{}{}
	configsMu.Unlock()
	return func() {
		configsMu.Lock()
		delete(configs, f)
		configsMu.Unlock()
	}
}
