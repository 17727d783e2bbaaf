package pipeline

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
)

// The logging flags are promslog's, under the names and values these
// binaries have always taken: "text" still works, and promslog's own
// "logfmt" is the same format.
func TestLogFlagsArePromslog(t *testing.T) {
	for _, tc := range []struct {
		args []string
		json bool
	}{
		{nil, false},
		{[]string{"--log.format", "text"}, false},
		{[]string{"--log.format", "logfmt"}, false},
		{[]string{"--log.format", "json", "--log.level", "debug"}, true},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		var level, format string
		RegisterLogFlags(fs, &level, &format)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		log, err := NewLogger(&out, level, format)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		log.Info("hello", "k", "v")
		line := out.String()
		if tc.json {
			var rec map[string]any
			if err := json.Unmarshal(out.Bytes(), &rec); err != nil || rec["msg"] != "hello" || rec["source"] == nil {
				t.Errorf("%v: %q is not promslog's JSON (msg and source)", tc.args, line)
			}
			continue
		}
		// promslog's mark: the caller as file:line, no package path.
		if !strings.Contains(line, "level=INFO") || !strings.Contains(line, "source=libraries_test.go:") || !strings.Contains(line, "k=v") {
			t.Errorf("%v: %q is not promslog's logfmt", tc.args, line)
		}
	}
}

// The web configuration is decoded with exporter-toolkit's YAML library
// alone: no second one is linked into the binaries.
func TestOneYAMLLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/ffmpeg-rtmp/worker-exporters/cmd/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var yamls []string
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "yaml") && !strings.Contains(pkg, "/internal/") {
			yamls = append(yamls, pkg)
		}
	}
	if len(yamls) != 1 || yamls[0] != "go.yaml.in/yaml/v2" {
		t.Errorf("YAML libraries linked: %v, want exporter-toolkit's alone (go.yaml.in/yaml/v2)", yamls)
	}
}

// TestSignalReloadsWebConfig: SIGHUP re-reads each port's web
// configuration and says whether it loads; SIGUSR1 is logged and ignored.
func TestSignalReloadsWebConfig(t *testing.T) {
	clearOTELEnv(t)
	var logs exportertest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	SetErrorLog(log)
	t.Cleanup(func() { processLog.Store(nil) })
	p := newTestPipeline(t, io.Discard)
	config, _ := basicAuthConfig(t, bcrypt.MinCost)
	serveWeb(t, p, Web{ConfigFile: config, MaxConnections: 8, IdleTimeout: time.Minute, ReadHeaderTimeout: 10 * time.Second})
	exportertest.WaitFor(t, 10*time.Second, func() bool {
		configsMu.Lock()
		defer configsMu.Unlock()
		return len(configs) > 0
	})
	Signal(syscall.SIGHUP)
	if !strings.Contains(logs.String(), "web configuration reloaded") || !strings.Contains(logs.String(), "signal=SIGHUP") {
		t.Errorf("SIGHUP with a good web configuration:\n%s", logs.String())
	}
	if err := os.WriteFile(config, []byte("basic_auth_users: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	Signal(syscall.SIGHUP)
	if !strings.Contains(logs.String(), "does not load") {
		t.Errorf("SIGHUP with a broken web configuration:\n%s", logs.String())
	}
	Signal(syscall.SIGUSR1)
	if !strings.Contains(logs.String(), `msg="signal ignored" signal=SIGUSR1`) {
		t.Errorf("SIGUSR1:\n%s", logs.String())
	}
}
