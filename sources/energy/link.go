package energy

import (
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/procfs"
)

// link tries to link every live stream that has no process: to the
// writers of its pipe (--stdin), or to the processes holding the other end
// of its connection (on loopback, or from a container's network namespace
// on this host), with their descendants. A ?pid=N is trusted
// only when that process holds the connection or is an ancestor of one that
// does (a wrapper such as sh -c): anyone on loopback can post a PID, and a
// stream must never take another encode's energy or read another
// process's name. The connections and pipes wanted are found in one pass
// over /proc.
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
		default: // loopback, or a container's network namespace on this host
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
					if c.Remote.Addr().Unmap().IsLoopback() {
						s.fail(e, NotFound, now)
					} else {
						s.fail(e, Remote, now) // no namespace here holds its other end: another host's
					}
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
			found := h.Found[t]
			// Once this connection was linked, the PID was checked: its
			// holders now (a child the named process left it to) are the
			// encode's.
			if pid := e.peer.PID; pid > 0 && !e.connLinked {
				named, err := s.cfg.Proc.Stat(pid)
				switch {
				case err != nil || named.Exited:
					s.fail(e, NoProcess, now)
					continue
				case s.holdsOrAncestor(pid, found):
					found = append([]procfs.Process{named.Process}, found...)
				case len(found) == 0 && h.Denied > 0:
					s.fail(e, Permission, now) // cannot be checked
					continue
				default:
					s.fail(e, PIDMismatch, now)
					continue
				}
			}
			switch {
			case s.linkTo(e, found, now):
			case h.Denied > 0:
				s.fail(e, Permission, now)
			default:
				s.fail(e, NotFound, now)
			}
		}
	}
	return errs
}

// holdsOrAncestor reports whether pid is one of holders or an ancestor of
// one (at most maxDepth generations up).
func (s *Source) holdsOrAncestor(pid int, holders []procfs.Process) bool {
	const maxDepth = 32
	for _, h := range holders {
		for cur, depth := h.PID, 0; cur > 1 && depth < maxDepth; depth++ {
			if cur == pid {
				return true
			}
			st, err := s.cfg.Proc.Stat(cur)
			if err != nil {
				break
			}
			cur = st.PPID
		}
	}
	return false
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
			base := treeCPU(st)
			if s.prev.ok {
				started := float64(st.Start) / procfs.UserHZ // seconds since boot
				began := s.prev.uptime - s.prev.at.Sub(e.started).Seconds()
				if started >= s.prev.uptime-s.cfg.Interval.Seconds() || !e.started.IsZero() && started >= began-startSlack.Seconds() {
					base = 0
				}
			}
			p = &proc{Process: st.Process, ppid: st.PPID, comm: st.Comm, base: base, prev: base}
			e.procs = append(e.procs, p)
		}
		p.cpu, p.comm, p.linked, p.linkedInWindow = max(p.cpu, treeCPU(st)-p.reaped), st.Comm, true, true
	}
	if !e.linked() {
		return false
	}
	e.connLinked, e.hasReason = true, false
	s.readCmdline(e)
	return true
}

// fail records why e could not be linked. A failure that cannot change for
// this connection is not retried; others are, after Retry.
func (s *Source) fail(e *encode, r Reason, now time.Time) {
	if e.connLinked && (r == NotFound || r == NoProcess || r == PIDMismatch) {
		r = Exited
	}
	if !e.hasReason || e.reason != r {
		s.failures[r]++
		s.cfg.Log.Debug("stream not linked to a process", "reason", Reasons[r], "peer", e.peer.Remote, "pid", e.peer.PID)
	}
	if r == Permission && !s.warned {
		s.warned = true
		s.cfg.Log.Warn("cannot read other users' /proc/PID/fd: streams whose encoder runs as another user are not linked; " +
			"grant CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE (or run as that user)")
	}
	e.reason, e.hasReason = r, true
	switch r {
	case Remote, BadPID, NoPeer, Exited, PIDMismatch:
		e.retryAt = never
	default:
		e.retryAt = now.Add(s.cfg.Retry)
	}
}

// readProcesses takes a reading of each process linked to e, and links
// the descendants they started since. A process that has exited, or whose
// PID now belongs to another, is unlinked; its last reading stands (a
// zombie's is final). When the last one goes while the connection is open,
// the link is checked again at the next window.
func (s *Source) readProcesses(e *encode, now time.Time) {
	had := e.linked()
	for _, p := range e.procs {
		if p.linked {
			s.read(e, p)
		}
	}
	if kids := s.descendants(e); len(kids) > 0 {
		s.linkTo(e, kids, now)
	}
	if had && !e.linked() {
		e.retryAt = time.Time{}
	}
}

// treeCPU is a process's CPU time with that of its children it has waited
// for: work handed to a child that is gone is still the encode's.
func treeCPU(st procfs.Stat) float64 { return st.CPUSeconds + st.ChildrenCPUSeconds }

// read takes a reading of p. A linked child that is gone was charged on
// its own: its time, on its way into its parent's children's time, is
// taken off the parent's.
func (s *Source) read(e *encode, p *proc) {
	st, err := s.cfg.Proc.Stat(p.PID)
	if err == nil && st.Start == p.Start {
		p.cpu, p.linkedInWindow = max(p.cpu, treeCPU(st)-p.reaped), true
		if s.perSocket() {
			s.readThreads(p)
		}
		if !st.Exited {
			return
		}
	}
	p.linked = false
	for _, q := range e.procs {
		if q.PID == p.ppid && q.linked {
			q.reaped += p.cpu + p.reaped
		}
	}
}

// descendants are the live descendants of e's linked processes that are
// not linked yet, as far as MaxProcesses allows.
func (s *Source) descendants(e *encode) []procfs.Process {
	known := map[int]bool{}
	var queue []int
	for _, p := range e.procs {
		if p.linked {
			known[p.PID] = true
			queue = append(queue, p.PID)
		}
	}
	var found []procfs.Process
	for len(queue) > 0 && len(known) < 4*MaxProcesses {
		pid := queue[0]
		queue = queue[1:]
		kids, _ := s.cfg.Proc.Children(pid) // gone meanwhile: nothing to add
		for _, k := range kids {
			if known[k] {
				continue
			}
			known[k] = true
			queue = append(queue, k)
			if st, err := s.cfg.Proc.Stat(k); err == nil && !st.Exited {
				found = append(found, st.Process)
			}
		}
	}
	return found
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
			s.read(e, p)
			p.linked = false
		}
	}
}

// readThreads takes a reading of p's threads: what each used since the
// previous reading is charged to the socket of the CPU it last ran on.
// A thread moved between sockets in the window counts where it ended: the
// finer the windows, the closer the split.
func (s *Source) readThreads(p *proc) {
	threads, err := s.cfg.Proc.Threads(p.PID)
	if err != nil {
		return // gone: its last reading stands
	}
	seen := make(map[int]float64, len(threads))
	for _, t := range threads {
		seen[t.TID] = t.CPUSeconds
		before, known := p.threads[t.TID]
		if p.threads == nil || t.CPUSeconds <= before {
			continue // the first reading is a baseline
		}
		if !known {
			before = 0 // started since: all its time is new
		}
		if p.onPackage == nil {
			p.onPackage = map[string]float64{}
		}
		p.onPackage[s.cfg.Packages[t.CPU]] += t.CPUSeconds - before
	}
	p.threads = seen
}

// perSocket says whether sockets are charged apart: RAPL names more than
// one package and the topology is known.
func (s *Source) perSocket() bool {
	if len(s.cfg.Packages) == 0 {
		return false
	}
	first, ok := "", false
	for _, pkg := range s.cfg.Packages {
		if ok && pkg != first {
			return true
		}
		first, ok = pkg, true
	}
	return false
}
