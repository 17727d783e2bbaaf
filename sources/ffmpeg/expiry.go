package ffmpeg

import "time"

// ChangesIn is how long from now until the first active stream has been
// silent for Config.Silence: from then on Snapshot reports it inactive
// although nothing was ingested and the generation did not move, so a
// cached scrape must not outlive that moment. ok is false when no stream
// is active.
func (h *Hub) ChangesIn() (d time.Duration, ok bool) {
	now := h.now()
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, s := range h.streams {
		s.mu.Lock()
		if s.live() {
			if left := h.cfg.Silence - now.Sub(s.lastSeen); left > 0 && (!ok || left < d) {
				d, ok = left, true
			}
		}
		s.mu.Unlock()
	}
	return d, ok
}
