package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/bearer"
	"github.com/prometheus/common/config"
	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"
)

// guard is what every request passes first: the web configuration's
// headers, rate limit and basic auth (on a streaming endpoint with a token,
// the token instead), then deadlines, outside the streaming endpoints, for
// the body to come in and the answer to go out. What it turns away is
// answered at once and its connection closed. It does what
// exporter-toolkit's web.Serve does for a request, less two things that
// made a worker unusable or fragile: basic auth on every path (ffmpeg
// -progress cannot send it) and one cache for good and bad passwords (a
// flood of wrong ones pushed good scrapes back to bcrypt).
type guard struct {
	next         http.Handler
	route        func(*http.Request) (h http.Handler, stream bool, token string)
	config       *configFile   // nil: no web configuration
	limiter      *rate.Limiter // the configuration's rate_limit; nil: none
	passwords    *passwords
	conns        *conns
	bodyTimeout  time.Duration
	writeTimeout time.Duration
	log          *slog.Logger
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer g.conns.answered(r, w)
	h, stream, token := g.route(r)
	if g.config != nil {
		c, err := g.config.load()
		if err != nil {
			g.log.Error("web configuration does not load", "err", err)
			refuse(w, http.StatusInternalServerError, http.StatusText(http.StatusInternalServerError))
			return
		}
		if g.limiter != nil && !g.limiter.Allow() {
			refuse(w, http.StatusTooManyRequests, http.StatusText(http.StatusTooManyRequests))
			return
		}
		for k, v := range c.HTTPConfig.Header {
			w.Header().Set(k, v)
		}
		if len(c.Users) > 0 && !g.authorized(w, r, c.Users, stream, token) {
			return
		}
	}
	rc := http.NewResponseController(w)
	if stream {
		done, ok := g.conns.stream(r)
		if !ok {
			if sr, ok := h.(StreamRefuser); ok {
				sr.RefuseStream(w, r)
			} else {
				refuse(w, http.StatusServiceUnavailable, "no room for another live stream; retry later")
			}
			return
		}
		defer done()
		_ = rc.SetWriteDeadline(time.Time{}) // one an earlier request on the connection left
	} else {
		// A client that does not take its answer, or trickles in a body
		// nothing here reads, would otherwise hold the connection forever.
		_ = rc.SetWriteDeadline(time.Now().Add(g.writeTimeout))
		if r.ContentLength != 0 {
			_ = rc.SetReadDeadline(time.Now().Add(g.bodyTimeout))
		}
	}
	g.next.ServeHTTP(w, r)
}

// StreamRefuser is a streaming endpoint's handler (see HandleStream) that
// answers, and counts, a stream refused because the process's descriptors
// are spoken for: RefuseStream answers at once and closes the connection.
type StreamRefuser interface {
	RefuseStream(w http.ResponseWriter, r *http.Request)
}

// authorized lets r in with basic auth or, on a streaming endpoint that has
// one, its token; otherwise it refuses r and says so.
func (g *guard) authorized(w http.ResponseWriter, r *http.Request, users map[string]config.Secret, stream bool, token string) bool {
	if stream && token != "" {
		if bearer.Matches(r, token) {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="ingest"`)
		refuse(w, http.StatusUnauthorized, "missing or wrong token (Authorization: Bearer TOKEN or ?token=TOKEN)")
		return false
	}
	if user, pass, ok := r.BasicAuth(); ok {
		switch g.passwords.check(r.Context(), users, user, pass) {
		case passRight:
			return true
		case passBusy:
			w.Header().Set("Retry-After", "1")
			refuse(w, http.StatusTooManyRequests, "too many password checks at once; retry")
			return false
		}
	}
	w.Header().Set("WWW-Authenticate", "Basic")
	refuse(w, http.StatusUnauthorized, http.StatusText(http.StatusUnauthorized))
	return false
}

// refuse answers at once and closes the connection: a client still
// sending a body (a chunked POST) would otherwise hold it unanswered while
// the server drained the body. The drain ends within refuseDrain: long
// enough for a client on a loaded machine to read its answer before the
// close, whose reset (its unread body was still coming) could discard it.
func refuse(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Connection", "close")
	http.Error(w, msg, code)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	_ = rc.SetReadDeadline(time.Now().Add(refuseDrain))
}

const refuseDrain = 2 * time.Second

// passwords checks basic auth credentials against the configuration's
// bcrypt hashes. bcrypt is slow on purpose, so a flood of wrong passwords
// takes CPU and, in exporter-toolkit, queued good scrapes behind it once it
// had pushed them out of the shared cache. Here credentials bcrypt accepted
// are remembered apart, so a client let in once never waits for bcrypt
// again; and checks run one at a time, the gate staying shut after a failed
// one for failureCooldown times as long as it took, so wrong passwords
// take at most a tenth of one core.
type passwords struct {
	gate chan struct{} // holds one token while a check runs or cools down

	mu    sync.Mutex
	right map[[sha256.Size]byte]struct{}
}

const (
	gateWait        = time.Second // a check not started by then gets 429
	failureCooldown = 9
	maxRemembered   = 64 // credentials in use are few: one or two per scraper
)

// unknownUserHash is checked for a user that does not exist, so that the
// time taken does not tell which users do (exporter-toolkit's; "fakepassword").
const unknownUserHash = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"

type verdict int

const (
	passWrong verdict = iota
	passRight
	passBusy // no check: too many waiting
)

func newPasswords() *passwords {
	return &passwords{gate: make(chan struct{}, 1), right: make(map[[sha256.Size]byte]struct{})}
}

func (p *passwords) check(ctx context.Context, users map[string]config.Secret, user, pass string) verdict {
	hash, known := users[user]
	if !known {
		hash = unknownUserHash
	}
	key := credentialKey(user, string(hash), pass) // the hash in it forgets a changed password
	p.mu.Lock()
	_, right := p.right[key]
	p.mu.Unlock()
	if right {
		return passRight
	}

	wait := time.NewTimer(gateWait)
	defer wait.Stop()
	select {
	case p.gate <- struct{}{}:
	case <-wait.C:
		return passBusy
	case <-ctx.Done():
		return passBusy
	}
	start := time.Now()
	err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pass))
	if err != nil || !known {
		time.AfterFunc(failureCooldown*time.Since(start), func() { <-p.gate })
		return passWrong
	}
	<-p.gate
	p.mu.Lock()
	if len(p.right) >= maxRemembered {
		clear(p.right)
	}
	p.right[key] = struct{}{}
	p.mu.Unlock()
	return passRight
}

// credentialKey stands for (user, hash, password) without keeping the
// password in memory.
func credentialKey(fields ...string) [sha256.Size]byte {
	h := sha256.New()
	for _, f := range fields {
		_ = binary.Write(h, binary.BigEndian, uint64(len(f)))
		h.Write([]byte(f))
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// newRateLimiter is the configuration's rate_limit, as exporter-toolkit
// builds it: once, at start.
func newRateLimiter(c *web.Config) *rate.Limiter {
	if c == nil || c.RateLimiterConfig.Interval == 0 {
		return nil
	}
	return rate.NewLimiter(rate.Every(c.RateLimiterConfig.Interval), c.RateLimiterConfig.Burst)
}
