package pipeline

import (
	"log/slog"
	"sync"
	"syscall"
	"time"
)

// descriptors is a process's file-descriptor budget, shared by its ports:
// every accepted connection and live stream counts against it, and what
// it keeps back (sourceHeadroom, and each port's --web.max-connections)
// stays free for the sources (sysfs, /proc, the Docker socket), the OTLP
// connection and the scrapes. A stream past its share is refused at once
// and a connection past the whole is closed, so the process never meets
// "too many open files".
type descriptors struct {
	limit int  // the soft RLIMIT_NOFILE, raised to the hard one at start
	fixed bool // limit is not read again (tests)

	mu       sync.Mutex
	open     int // connections, streams among them
	streams  int
	reserved int // the ports' connection limits, and their listeners
	refused  int // streams refused since the last warning
	warnedAt time.Time
}

// sourceHeadroom is what connections never take: the sources' files, the
// OTLP connection, listeners, the runtime's own.
const sourceHeadroom = 64

// newDescriptors raises the soft descriptor limit to the hard one, as
// servers commonly do (Go does it too at start, since 1.19), and reads it.
func newDescriptors() *descriptors {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return &descriptors{limit: 1024, fixed: true}
	}
	if lim.Cur < lim.Max {
		raised := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	return &descriptors{limit: int(min(lim.Cur, 1<<30))}
}

// reserve keeps n descriptors for a port's connections until the
// returned func is called.
func (d *descriptors) reserve(n int) (release func()) {
	d.mu.Lock()
	d.reserved += n
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		d.reserved -= n
		d.mu.Unlock()
	}
}

// maxOpen is the most connections the process keeps open.
func (d *descriptors) maxOpen() int { return d.current() - sourceHeadroom }

// maxStreams is the most live streams: what the ports' connections leave.
func (d *descriptors) maxStreams() int { return d.current() - sourceHeadroom - d.reserved }

// current is the descriptor limit now: an operator may lower it on a
// running process (prlimit), and the budget follows.
func (d *descriptors) current() int {
	if d.fixed {
		return d.limit
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		d.limit = int(min(lim.Cur, 1<<30))
	}
	return d.limit
}

// budget is the descriptor limit and the live streams it allows now.
func (d *descriptors) budget() (limit, streams int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	streams = d.maxStreams()
	return d.limit, streams
}

// admitStream counts a new live stream, or says there is no room for it
// (and warns, at most once a minute).
func (d *descriptors) admitStream(log *slog.Logger) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.streams < d.maxStreams() {
		d.streams++
		return true
	}
	d.refused++
	if time.Since(d.warnedAt) >= time.Minute {
		log.Warn("live stream refused: the process's descriptors are spoken for (raise LimitNOFILE, or lower --web.max-connections)",
			"descriptor_limit", d.limit, "live_streams", d.streams, "refused", d.refused)
		d.warnedAt, d.refused = time.Now(), 0
	}
	return false
}

func (d *descriptors) endStream() {
	d.mu.Lock()
	d.streams--
	d.mu.Unlock()
}
