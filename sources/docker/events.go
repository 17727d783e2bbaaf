package docker

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
)

// eventState is what the event stream tells the collections: the
// containers it named since the last one, bounded by maxPending (past it,
// the next collection lists and inspects them all instead), and whether it
// can be trusted to tell every change (it is connected, and a full list
// has been taken since it connected).
type eventState struct {
	mu        sync.Mutex
	connected bool
	relist    bool              // a full list is due: the stream (re)connected or overflowed
	inspect   bool              // and every container is to be inspected: events were dropped
	dirty     map[string]string // container ID → its latest action
}

// watched are the actions that change what is served; others are ignored.
// The daemon is asked for container events only, not for these by name:
// podman 4 keeps one of several values of a filter key, and so would send
// one action alone.
var watched = []events.Action{
	events.ActionCreate, events.ActionStart, events.ActionDie, events.ActionDestroy, events.ActionRename,
	events.ActionHealthStatus, events.ActionPause, events.ActionUnPause, events.ActionOOM,
	events.ActionUpdate, // a new memory limit or CPU quota
	actionRemove,
}

// actionRemove is podman's name for destroy.
const actionRemove events.Action = "remove"

// action is the watched action an event's action is ("health_status:
// healthy" is health_status); ok is false for the others.
func action(a events.Action) (events.Action, bool) {
	base, _, _ := strings.Cut(string(a), ":")
	for _, w := range watched {
		if events.Action(base) == w {
			return w, true
		}
	}
	return "", false
}

// trusted reports whether the events since the last collection tell
// every change; if not, the collection lists and inspects every container.
// It clears a relist due, as that collection takes it.
func (ev *eventState) trusted() bool {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	trusted := ev.connected && !ev.relist
	ev.relist = false
	return trusted
}

// relistLater makes the next collection list and inspect everything.
func (ev *eventState) relistLater() {
	ev.mu.Lock()
	ev.relist = true
	ev.mu.Unlock()
}

func (ev *eventState) setConnected(up bool) {
	ev.mu.Lock()
	ev.connected = up
	ev.relist = true // what happened while it was down is known from a list only
	ev.mu.Unlock()
}

// note records that an event named container id.
func (ev *eventState) note(id string, a events.Action) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.inspect {
		return // everything is inspected at the next collection anyway
	}
	if _, ok := ev.dirty[id]; !ok && len(ev.dirty) >= maxPending {
		ev.dirty = map[string]string{} // a new map: the full one's memory goes
		ev.relist, ev.inspect = true, true
		return
	}
	ev.dirty[id] = string(a)
}

// take returns the containers named since the last take, and whether every
// container is to be inspected instead.
func (ev *eventState) take() (map[string]string, bool) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	dirty, all := ev.dirty, ev.inspect
	ev.dirty, ev.inspect = map[string]string{}, false
	return dirty, all
}

// applyEvents marks the containers the events named since the last
// collection: destroyed ones go, the others are inspected (ones not known
// yet too: inspect says what they are).
func (s *Source) applyEvents() {
	dirty, all := s.events.take()
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if all {
		for _, e := range s.known {
			e.inspect = true
		}
		return
	}
	for id, a := range dirty {
		e := s.known[id]
		switch {
		case a == string(events.ActionDestroy) || a == string(actionRemove):
			delete(s.known, id)
		case e != nil:
			e.inspect = true
		case a != string(events.ActionOOM): // an OOM kill changes nothing inspect tells
			s.known[id] = &entry{c: Container{ID: id}, inspect: true}
		}
	}
}

// watch follows the daemon's container events, reconnecting after the
// daemon goes away.
func (s *Source) watch(ctx context.Context) {
	args := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)))
	for ctx.Err() == nil {
		streamCtx, cancel := context.WithCancel(ctx)
		msgs, errs := s.cfg.Client.Events(streamCtx, events.ListOptions{Filters: args})
		s.events.setConnected(true)
	read:
		for {
			select {
			case m := <-msgs:
				s.event(m)
			case err := <-errs:
				s.cfg.Log.Debug("docker event stream ended; reconnecting", "err", err)
				break read
			case <-ctx.Done():
				break read
			}
		}
		cancel()
		s.events.setConnected(false)
		select {
		case <-ctx.Done():
		case <-time.After(s.cfg.Interval):
		}
	}
}

// event takes one event: a daemon may send what it was not asked for, and
// that is ignored.
func (s *Source) event(m events.Message) {
	a, ok := action(m.Action)
	if m.Type != events.ContainerEventType || !ok || m.Actor.ID == "" || len(m.Actor.ID) > 128 {
		return
	}
	if a == events.ActionOOM {
		s.oomKill(m.Actor.ID)
	}
	s.events.note(m.Actor.ID, a)
}

// oomKill counts an OOM kill. Counts of containers not served yet are
// bounded by maxPending; past it, kills of containers never seen are not
// counted (the debug log says so).
func (s *Source) oomKill(id string) {
	s.oomMu.Lock()
	defer s.oomMu.Unlock()
	c := s.oom[id]
	if c == nil {
		if len(s.oom) >= maxPending {
			s.cfg.Log.Debug("OOM kill of a container not seen yet, over the count kept for such", "id", id, "kept", maxPending)
			return
		}
		c = &oomCount{}
		s.oom[id] = c
	}
	c.kills++
}
