// Package fakeengine is a Docker Engine API server for tests of what a real
// daemon (podman here) cannot show on demand: cgroup v1 and v2 payloads,
// slow and failing stats calls, OOM events, and a daemon that goes away and
// comes back. It serves on a unix socket, as dockerd does.
package fakeengine

import (
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
	RestartCount           int
	Stats                  container.StatsResponse
	StatsDelay             time.Duration // how long its stats call takes
	StatsFail              bool          // its stats call answers 500
	StatsGone              bool          // listed, but removed before its stats call (404)
}

// Engine is the fake daemon.
type Engine struct {
	sock string
	oom  chan string

	mu         sync.Mutex
	containers []*Container
	srv        *http.Server
}

// Start serves until the test ends.
func Start(t testing.TB) *Engine {
	t.Helper()
	dir, err := os.MkdirTemp("", "fakeengine")
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{sock: filepath.Join(dir, "docker.sock"), oom: make(chan string, 16)}
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

// OOM emits an OOM event for container id on the event stream.
func (e *Engine) OOM(id string) { e.oom <- id }

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
		var list []container.Summary
		for _, c := range e.containers {
			list = append(list, container.Summary{ID: c.ID, Names: []string{"/" + c.Name}, Image: c.Image, State: c.State, Labels: c.Labels})
		}
		e.mu.Unlock()
		writeJSON(w, list)
	case len(parts) == 3 && parts[0] == "containers" && parts[2] == "json":
		c := e.find(parts[1])
		if c == nil {
			http.Error(w, `{"message":"no such container"}`, http.StatusNotFound)
			return
		}
		e.mu.Lock()
		info := container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{ID: c.ID, Name: "/" + c.Name, RestartCount: c.RestartCount}}
		e.mu.Unlock()
		writeJSON(w, info)
	case len(parts) == 3 && parts[0] == "containers" && parts[2] == "stats":
		c := e.find(parts[1])
		if c == nil {
			http.Error(w, `{"message":"no such container"}`, http.StatusNotFound)
			return
		}
		e.mu.Lock()
		delay, fail, gone, stats := c.StatsDelay, c.StatsFail, c.StatsGone, c.Stats
		e.mu.Unlock()
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
		writeJSON(w, stats)
	case path == "/events":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		enc := json.NewEncoder(w)
		for {
			select {
			case id := <-e.oom:
				enc.Encode(events.Message{Type: events.ContainerEventType, Action: events.ActionOOM, Actor: events.Actor{ID: id}})
				w.(http.Flusher).Flush()
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
