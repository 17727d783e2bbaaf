// Package fakeengine is a Docker Engine API server for tests of what a real
// daemon (podman here) cannot show on demand: cgroup v1 and v2 payloads,
// slow and failing stats and inspect calls, huge bodies, events on demand
// (a flood of them too, whatever filters the client asked for), and a
// daemon that goes away and comes back. It serves on a unix socket, as
// dockerd does.
package fakeengine

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
)

// Container is one container the fake daemon knows.
type Container struct {
	ID, Name, Image, State string
	Labels                 map[string]string
	Created                int64 // Unix seconds
	RestartCount           int
	Health                 container.HealthStatus // empty: no healthcheck
	ExitCode               int
	StartedAt              time.Time
	InspectFail            bool // its inspect call answers 500
	Stats                  container.StatsResponse
	StatsDelay             time.Duration // how long its stats call takes
	StatsFail              bool          // its stats call answers 500
	StatsGone              bool          // listed, but removed before its stats call (404)
	StatsPadding           int64         // its stats body is padded to about this many bytes
	Pid                    int           // its init process, as inspect tells it
	NetworkMode            string        // as inspect tells it ("host": the host's network)
}

// Engine is the fake daemon.
type Engine struct {
	sock   string
	events chan events.Message

	mu            sync.Mutex
	containers    []*Container
	listPad       int64
	srv           *http.Server
	lists         int // container lists answered
	statsInFlight int // stats calls being answered
}

// Start serves until the test ends.
func Start(t testing.TB) *Engine {
	t.Helper()
	dir, err := os.MkdirTemp("", "fakeengine")
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{sock: filepath.Join(dir, "docker.sock"), events: make(chan events.Message, 1024)}
	e.Up(t)
	t.Cleanup(func() { e.Down(); os.RemoveAll(dir) })
	return e
}

// DockerHost is the DOCKER_HOST that reaches the fake daemon.
func (e *Engine) DockerHost() string { return "unix://" + e.sock }

// Up (re)starts the daemon on its socket.
func (e *Engine) Up(t testing.TB) {
	t.Helper()
	os.Remove(e.sock)
	ln, err := net.Listen("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(e.serve)}
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
	go srv.Serve(ln)
}

// Down stops the daemon, dropping every connection.
func (e *Engine) Down() {
	e.mu.Lock()
	srv := e.srv
	e.srv = nil
	e.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Set replaces the containers the daemon knows.
func (e *Engine) Set(cs ...*Container) {
	e.mu.Lock()
	e.containers = cs
	e.mu.Unlock()
}

// Update changes a container under the daemon's lock.
func (e *Engine) Update(f func()) {
	e.mu.Lock()
	f()
	e.mu.Unlock()
}

// PadList pads the container list's body to about n bytes (0: no padding).
func (e *Engine) PadList(n int64) {
	e.mu.Lock()
	e.listPad = n
	e.mu.Unlock()
}

// OOM emits an OOM event for container id on the event stream.
func (e *Engine) OOM(id string) { e.Emit(events.ActionOOM, id) }

// Emit sends a container event on the event stream (to the one client
// reading it; it waits while the stream's buffer is full).
func (e *Engine) Emit(action events.Action, id string) {
	e.events <- events.Message{Type: events.ContainerEventType, Action: action, Actor: events.Actor{ID: id}, Time: time.Now().Unix()}
}

// Lists is how many container lists the daemon has answered.
func (e *Engine) Lists() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lists
}

// StatsInFlight is how many stats calls the daemon is answering now.
func (e *Engine) StatsInFlight() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.statsInFlight
}

var versioned = regexp.MustCompile(`^/v[0-9.]+`)

func (e *Engine) serve(w http.ResponseWriter, r *http.Request) {
	path := versioned.ReplaceAllString(r.URL.Path, "")
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case path == "/_ping":
		w.Header().Set("Api-Version", "1.47")
		w.Write([]byte("OK"))
	case path == "/containers/json":
		e.mu.Lock()
		list := []container.Summary{}
		for _, c := range e.containers {
			list = append(list, container.Summary{ID: c.ID, Names: []string{"/" + c.Name}, Image: c.Image, State: c.State, Labels: c.Labels, Created: c.Created})
		}
		pad := e.listPad
		e.lists++
		e.mu.Unlock()
		if pad > 0 { // one more container, whose command is the padding
			list = append(list, container.Summary{ID: "padding", Names: []string{"/padding"}, State: "exited", Command: padMark})
		}
		writePadded(w, list, pad)
	case len(parts) == 3 && parts[0] == "containers" && parts[2] == "json":
		c := e.find(parts[1])
		if c == nil {
			http.Error(w, `{"message":"no such container"}`, http.StatusNotFound)
			return
		}
		e.mu.Lock()
		state := &container.State{Status: container.ContainerState(c.State), Running: c.State == "running", ExitCode: c.ExitCode,
			StartedAt: c.StartedAt.Format(time.RFC3339Nano), FinishedAt: time.Time{}.Format(time.RFC3339Nano)}
		if c.Health != "" {
			state.Health = &container.Health{Status: c.Health}
		}
		state.Pid = c.Pid
		info := container.InspectResponse{
			ContainerJSONBase: &container.ContainerJSONBase{ID: c.ID, Name: "/" + c.Name, RestartCount: c.RestartCount, State: state,
				Created: time.Unix(c.Created, 0).UTC().Format(time.RFC3339Nano), HostConfig: &container.HostConfig{NetworkMode: container.NetworkMode(c.NetworkMode)}},
			Config: &container.Config{Image: c.Image, Labels: c.Labels},
		}
		fail := c.InspectFail
		e.mu.Unlock()
		if fail {
			http.Error(w, `{"message":"inspect failed"}`, http.StatusInternalServerError)
			return
		}
		writeJSON(w, info)
	case len(parts) == 3 && parts[0] == "containers" && parts[2] == "stats":
		c := e.find(parts[1])
		if c == nil {
			http.Error(w, `{"message":"no such container"}`, http.StatusNotFound)
			return
		}
		e.mu.Lock()
		delay, fail, gone, stats, pad := c.StatsDelay, c.StatsFail, c.StatsGone, c.Stats, c.StatsPadding
		e.statsInFlight++
		e.mu.Unlock()
		defer func() {
			e.mu.Lock()
			e.statsInFlight--
			e.mu.Unlock()
		}()
		if gone {
			http.Error(w, `{"message":"No such container: `+c.ID+`"}`, http.StatusNotFound)
			return
		}
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		if fail {
			http.Error(w, `{"message":"stats failed"}`, http.StatusInternalServerError)
			return
		}
		if pad > 0 {
			stats.Name = padMark
		}
		writePadded(w, stats, pad)
	case path == "/events":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		enc := json.NewEncoder(w)
		for {
			select {
			case m := <-e.events:
				if enc.Encode(m) != nil {
					return
				}
				if len(e.events) == 0 { // a burst goes out in as few writes as the buffer allows
					w.(http.Flusher).Flush()
				}
			case <-r.Context().Done():
				return
			}
		}
	default:
		http.Error(w, `{"message":"not in the fake"}`, http.StatusNotFound)
	}
}

func (e *Engine) find(idOrName string) *Container {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.containers {
		if c.ID == idOrName || c.Name == idOrName {
			return c
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// padMark is the string value that writePadded replaces with padding.
const padMark = "\x00pad\x00"

// writePadded writes v as JSON with the string padMark in it stretched to
// about pad bytes of spaces: still valid JSON, streamed in chunks and never
// held whole, so a huge body costs the server no memory.
func writePadded(w http.ResponseWriter, v any, pad int64) {
	if pad <= 0 {
		writeJSON(w, v)
		return
	}
	raw, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	mark, _ := json.Marshal(padMark)
	head, tail, _ := bytes.Cut(raw, mark[1:len(mark)-1])
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(head); err != nil {
		return
	}
	chunk := bytes.Repeat([]byte(" "), 64<<10)
	for left := pad; left > 0; left -= int64(len(chunk)) {
		if _, err := w.Write(chunk[:min(left, int64(len(chunk)))]); err != nil {
			return // the client stopped reading
		}
	}
	w.Write(tail)
}
