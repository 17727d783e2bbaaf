package procfs

import "sync"

// holderScans lets callers of FindHolders that ask at the same moment share
// one scan of every process's descriptors: a call made while a scan runs
// waits for it to end, then joins the next scan with every other call that
// waited, which looks for all their targets at once. No answer comes from
// a scan that began before its call, so none misses a process that was
// holding its target when it asked.
type holderScans struct {
	mu      sync.Mutex
	running *holderScan // nil: none
	next    *holderScan // the calls waiting for the next scan; nil: none
	started func()      // for tests: called as each scan starts
}

type holderScan struct {
	targets map[Target]bool // every joined call's
	done    chan struct{}   // closed when found and err are set
	ended   bool            // under holderScans.mu: done is closed
	found   Holders
	err     error
}

// find answers a call for targets from a scan by scan that began after it.
func (s *holderScans) find(targets map[Target]bool, scan func(map[Target]bool) (Holders, error)) (Holders, error) {
	s.mu.Lock()
	if s.next == nil {
		s.next = &holderScan{targets: map[Target]bool{}, done: make(chan struct{})}
	}
	mine := s.next
	for t := range targets {
		mine.targets[t] = true
	}
	for !mine.ended {
		if s.running == nil { // mine is next and nothing runs: run it
			s.running, s.next = mine, nil
			s.mu.Unlock()
			if s.started != nil {
				s.started()
			}
			found, err := scan(mine.targets)
			s.mu.Lock()
			mine.found, mine.err, mine.ended, s.running = found, err, true, nil
			close(mine.done)
			break
		}
		running := s.running
		s.mu.Unlock()
		<-running.done
		s.mu.Lock()
	}
	s.mu.Unlock()
	h := Holders{Found: make(map[Target][]Process, len(targets)), Denied: mine.found.Denied}
	for t := range targets {
		if ps, ok := mine.found.Found[t]; ok {
			h.Found[t] = ps
		}
	}
	return h, mine.err
}
