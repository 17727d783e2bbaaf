package energy

import (
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
)

// link tries to link every live stream that has no process: by ?pid=, by
// the writers of its pipe (--stdin), or by the process holding the other
// end of its loopback connection. The connections and pipes wanted are
// found in one pass over /proc.
func (s *Source) link(now time.Time) []error {
	var (
		errs    []error
		tcp     []procfs.TCPConn
		byConn  = map[procfs.TCPConn][]*encode{}
		targets = map[procfs.Target][]*encode{}
	)
	for _, e := range s.encodes {
		if e.closed || !e.active || e.linked() || now.Before(e.retryAt) {
			continue
		}
		p := e.peer
		switch {
		case p.PID < 0:
			s.fail(e, BadPID, now)
		case p.Pipe != 0:
			targets[procfs.Pipe(p.Pipe)] = append(targets[procfs.Pipe(p.Pipe)], e)
		case !p.Remote.IsValid():
			s.fail(e, NoPeer, now)
		case !p.Remote.Addr().Unmap().IsLoopback():
			s.fail(e, Remote, now)
		case p.PID > 0:
			s.linkPID(e, p.PID, now)
		default:
			c := procfs.TCPConn{Local: p.Local, Remote: p.Remote}
			if byConn[c] == nil {
				tcp = append(tcp, c)
			}
			byConn[c] = append(byConn[c], e)
		}
	}
	if len(tcp) > 0 {
		inodes, err := s.cfg.Proc.ClientInodes(tcp)
		errs = append(errs, err)
		for _, c := range tcp {
			if ino, ok := inodes[c]; ok {
				targets[procfs.Socket(ino)] = append(targets[procfs.Socket(ino)], byConn[c]...)
			} else {
				for _, e := range byConn[c] {
					s.fail(e, NotFound, now)
				}
			}
		}
	}
	if len(targets) == 0 {
		return errs
	}
	want := make(map[procfs.Target]bool, len(targets))
	for t := range targets {
		want[t] = true
	}
	h, err := s.cfg.Proc.FindHolders(want)
	errs = append(errs, err)
	for t, es := range targets {
		for _, e := range es {
			switch {
			case s.linkTo(e, h.Found[t], now):
			case h.Denied > 0:
				s.fail(e, Permission, now)
			default:
				s.fail(e, NotFound, now)
			}
		}
	}
	return errs
}

// linkPID links e to the process ?pid= names. Once linked, the stream
// keeps to that process: a later process under the same PID is another
// program and never inherits it.
func (s *Source) linkPID(e *encode, pid int, now time.Time) {
	st, err := s.cfg.Proc.Stat(pid)
	if err != nil || st.Exited {
		s.fail(e, NoProcess, now)
		return
	}
	for _, p := range e.procs {
		if p.PID == pid && p.Start != st.Start {
			s.fail(e, Exited, now) // the PID was reused
			return
		}
	}
	if !s.linkTo(e, []procfs.Process{st.Process}, now) {
		s.fail(e, NoProcess, now)
	}
}

// startSlack is how long before its encode began a process may have
// started and still be the encode's own: ffmpeg opens its input and its
// encoders before it connects to report progress.
const startSlack = 3 * time.Second

// linkTo links e to the processes that are still the ones found, and
// reports whether any was.
func (s *Source) linkTo(e *encode, found []procfs.Process, now time.Time) bool {
	e.leftOut = 0
	for _, want := range found {
		st, err := s.cfg.Proc.Stat(want.PID)
		if err != nil || st.Process != want || st.Exited {
			continue // gone, or its PID already reused
		}
		var p *proc
		for _, q := range e.procs {
			if q.Process == st.Process {
				p = q
			}
		}
		if p == nil {
			if len(e.procs) >= MaxProcesses {
				e.leftOut++
				continue
			}
			// A process that started at most startSlack before its encode
			// began, or a window before the previous window (ffmpeg starts
			// up before it connects, slower on a busy machine, and the link
			// waits for a window) is charged from its start: its CPU time so
			// far is shared out in this window, at this window's rate. An
			// older one is charged from now, its CPU time and energy alike.
			base := st.CPUSeconds
			if s.prev.ok {
				started := float64(st.Start) / procfs.UserHZ // seconds since boot
				began := s.prev.uptime - s.prev.at.Sub(e.started).Seconds()
				if started >= s.prev.uptime-s.cfg.Interval.Seconds() || !e.started.IsZero() && started >= began-startSlack.Seconds() {
					base = 0
				}
			}
			p = &proc{Process: st.Process, comm: st.Comm, base: base, prev: base}
			e.procs = append(e.procs, p)
		}
		p.cpu, p.comm, p.linked, p.window = max(p.cpu, st.CPUSeconds), st.Comm, true, true
	}
	if !e.linked() {
		return false
	}
	e.connLinked, e.hasReason = true, false
	return true
}

// fail records why e could not be linked. A failure that cannot change for
// this connection is not retried; others are, after Retry.
func (s *Source) fail(e *encode, r Reason, now time.Time) {
	if e.connLinked && (r == NotFound || r == NoProcess) {
		r = Exited
	}
	if !e.hasReason || e.reason != r {
		s.failures[r]++
		s.cfg.Log.Debug("stream not linked to a process", "reason", Reasons[r], "peer", e.peer.Remote, "pid", e.peer.PID)
	}
	if r == Permission && !s.warned {
		s.warned = true
		s.cfg.Log.Warn("cannot read other users' /proc/PID/fd: streams whose encoder runs as another user are not linked; " +
			"grant CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE (or run as that user), or name the process with ?pid=N on the ingest URL")
	}
	e.reason, e.hasReason = r, true
	switch r {
	case Remote, BadPID, NoPeer, Exited:
		e.retryAt = never
	default:
		e.retryAt = now.Add(s.cfg.Retry)
	}
}

// readProcesses takes a reading of each process linked to e. A process
// that has exited, or whose PID now belongs to another, is unlinked; its
// last reading stands (a zombie's is final). When the last one goes while
// the connection is open, the link is checked again at the next window.
func (s *Source) readProcesses(e *encode) {
	had := e.linked()
	for _, p := range e.procs {
		if p.linked {
			s.read(p)
		}
	}
	if had && !e.linked() {
		e.retryAt = time.Time{}
	}
}

func (s *Source) read(p *proc) {
	st, err := s.cfg.Proc.Stat(p.PID)
	if err != nil || st.Start != p.Start {
		p.linked = false
		return
	}
	p.cpu, p.window = max(p.cpu, st.CPUSeconds), true
	if st.Exited {
		p.linked = false
	}
}

// Closed takes the final reading of the processes of stream's connection
// conn as it closes: the encode is over, and what its processes do after
// (tearing down, exiting) is not the encode's.
func (s *Source) Closed(stream string, conn uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.encodes[stream]
	if e == nil || e.peer.Conn != conn {
		return
	}
	e.closed = true
	for _, p := range e.procs {
		if p.linked {
			s.read(p)
			p.linked = false
		}
	}
}
