package pipeline

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sync/singleflight"
)

// Versioned is what a cached /metrics watches: a source whose generation
// rises whenever what it serves may have changed (every sampling.Source).
type Versioned interface{ Generation() uint64 }

// Expiring is a Versioned source whose served values also change with the
// clock alone, without a generation bump: the ffmpeg hub reports a stream
// inactive once it has been silent for too long. ChangesIn is how long from
// now until the first such change; ok is false when none is coming.
type Expiring interface {
	Versioned
	ChangesIn() (d time.Duration, ok bool)
}

// Watch declares that what this pipeline's instruments read comes from
// src's snapshots, so that /metrics may keep a render for as long as the
// generations of every watched source stay put (and, for an Expiring
// source, until its next change by the clock). A pipeline that watches
// nothing renders every scrape afresh.
func (p *Pipeline) Watch(src Versioned) { p.metrics.watch(src) }

// metricsCache serves GET /metrics. The Prometheus bridge is the one source
// of truth; its rendered output is kept per negotiated variant (exposition
// format, gzip or not) and served as is until a watched generation moves.
// A scrape between changes writes cached bytes and computes nothing;
// scrapes arriving during a render share it instead of rendering again.
type metricsCache struct {
	gatherer prometheus.Gatherer
	runtime  prometheus.Gatherer // process_* and go_*: rendered fresh beside every cached body
	filtered http.Handler        // promhttp itself, for the rare scrape filtered by name[]: never cached
	log      *slog.Logger

	sources atomic.Pointer[[]Versioned] // copy on write; nil: nothing watched

	mu       sync.RWMutex
	pinned   map[variantKey]*variant // in scraperFormats: always kept
	variants map[variantKey]*variant // the others, maxVariants at most
	accepts  map[acceptKey]*variant  // negotiation results by request headers, bounded

	uncached        chan struct{} // a token per render no cache shares
	refusedUncached atomic.Int64

	gatherMu  sync.Mutex
	gathering *gatherCall // the gather in flight, shared by renders of the same generations
}

// gatherCall is one gather from the bridge, for the generations read
// before it began.
type gatherCall struct {
	gens  []uint64
	until time.Time
	done  chan struct{}
	mfs   []*dto.MetricFamily // shared by every render that joins: read only
	err   error
}

// Scrapers send the same few headers every time; a client sending others
// costs a negotiation and a render, not memory. At most maxVariants
// variants keep a body (Prometheus, someone with curl, one or two more
// scrapers), and the negotiation memo keeps at most maxAccepts distinct
// header pairs of at most maxAcceptBytes.
const (
	maxVariants    = 4
	maxAccepts     = 32
	maxAcceptBytes = 512
)

// Renders no cache shares run maxUncached at a time per port; a scrape
// waits uncachedWait at most for its turn.
const (
	maxUncached  = 2
	uncachedWait = 5 * time.Second
)

// scraperAccepts are the Accept headers of the scrapers a port is for:
// Prometheus 3 and 2 (text; protobuf when native histograms are on) and
// VictoriaMetrics' vmagent. The variants they negotiate are always kept,
// beside the maxVariants others, so that clients asking first for unusual
// formats cannot take their place.
var scraperAccepts = []string{
	"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
	"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,*/*;q=0.1",
	"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
	"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1",
	"text/plain;version=0.0.4;q=1,*/*;q=0.1",
}

// scraperFormats are the formats scraperAccepts negotiate.
var scraperFormats = func() map[expfmt.Format]bool {
	m := map[expfmt.Format]bool{}
	for _, a := range scraperAccepts {
		m[expfmt.Negotiate(http.Header{"Accept": {a}})] = true
	}
	return m
}()

type variantKey struct {
	format expfmt.Format
	gzip   bool
}

type acceptKey struct{ accept, encoding string }

func newMetricsCache(registry *prometheus.Registry, log *slog.Logger) *metricsCache {
	return &metricsCache{
		gatherer: registry,
		runtime:  runtimeGather(),
		filtered: promhttp.HandlerFor(prometheus.Gatherers{registry, runtimeRegistry()}, promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelError),
			ErrorHandling: promhttp.ContinueOnError,
		}),
		log:      log,
		pinned:   map[variantKey]*variant{},
		variants: map[variantKey]*variant{},
		accepts:  map[acceptKey]*variant{},
		uncached: make(chan struct{}, maxUncached),
	}
}

func (c *metricsCache) watch(src Versioned) {
	c.mu.Lock() // serialises writers of sources
	defer c.mu.Unlock()
	var srcs []Versioned
	if old := c.sources.Load(); old != nil {
		srcs = append(srcs, *old...)
	}
	srcs = append(srcs, src)
	c.sources.Store(&srcs)
}

func (c *metricsCache) watched() []Versioned {
	if s := c.sources.Load(); s != nil {
		return *s
	}
	return nil
}

func (c *metricsCache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" && r.URL.Query().Has("name[]") {
		if c.uncachedSlot(w, r) {
			defer func() { <-c.uncached }()
			c.filtered.ServeHTTP(w, r)
		}
		return
	}
	v, kept := c.variantFor(r.Header)
	if !kept {
		if !c.uncachedSlot(w, r) {
			return
		}
		defer func() { <-c.uncached }()
	}
	v.get(c).write(w, v, c.renderRuntime(v))
}

// uncachedSlot waits for one of the maxUncached renders that no cache
// shares (a scrape filtered by name[], a format no kept variant has), so
// that many such scrapes at once cost the memory and CPU of a few; it
// refuses the scrape with 503 when none frees up within uncachedWait or
// the client goes away first.
func (c *metricsCache) uncachedSlot(w http.ResponseWriter, r *http.Request) bool {
	wait := time.NewTimer(uncachedWait)
	defer wait.Stop()
	select {
	case c.uncached <- struct{}{}:
		return true
	case <-wait.C:
	case <-r.Context().Done():
	}
	c.refusedUncached.Add(1)
	w.Header().Set("Retry-After", "1")
	http.Error(w, "too many uncached /metrics requests at once (name[] or an unusual format); retry", http.StatusServiceUnavailable)
	return false
}

// runtimeRegistry holds client_golang's process and Go collectors, which
// every Prometheus exporter serves: the process's CPU, memory, descriptors
// and Go runtime. One per process, as what they read is.
var runtimeRegistry = sync.OnceValue(func() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return r
})

// runtimeGather gathers runtimeRegistry for renderRuntime, one gather at a
// time per process: a scrape that arrives while one is under way takes its
// result, read from /proc/self and the runtime under a millisecond before.
// Each gather makes about 145 KB of garbage (the process collector reads
// /proc/self/stat, status, limits, fd and net/netstat), so concurrent
// scrapers would otherwise hold that much each at once, and a heap sized
// for a 20 MiB budget cannot spare it. The families are shared: read only.
var runtimeGather = sync.OnceValue(func() prometheus.Gatherer {
	var group singleflight.Group
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err, _ := group.Do("", func() (any, error) { return runtimeRegistry().Gather() })
		return mfs.([]*dto.MetricFamily), err
	})
})

// renderRuntime encodes the process and Go series in v's format, afresh:
// they change with the clock, so no generation could tell when a kept
// render of them went stale. They come after the cached body, as a gzip
// member of their own when v is gzipped (RFC 1952 allows several).
func (c *metricsCache) renderRuntime(v *variant) *bytes.Buffer {
	mfs, err := c.runtime.Gather()
	if err != nil {
		c.log.Error("error gathering process and Go metrics", "err", err)
	}
	buf := runtimeBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	out := writerTo(buf, v.key.gzip)
	enc := expfmt.NewEncoder(out, v.key.format.WithEscapingScheme(model.NoEscaping))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			c.log.Error("error encoding metric family", "family", mf.GetName(), "err", err)
		}
	}
	if closer, ok := enc.(expfmt.Closer); ok { // OpenMetrics' "# EOF": after everything
		_ = closer.Close()
	}
	_ = out.Close()
	return buf
}

var runtimeBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// variantFor negotiates as promhttp does: expfmt.Negotiate on Accept, and
// gzip when Accept-Encoding takes it. kept is false for a variant rendered
// for this scrape alone: every place to keep one is taken.
func (c *metricsCache) variantFor(h http.Header) (v *variant, kept bool) {
	k := acceptKey{h.Get("Accept"), strings.Join(h.Values("Accept-Encoding"), ",")}
	c.mu.RLock()
	v, ok := c.accepts[k]
	c.mu.RUnlock()
	if ok {
		return v, true
	}
	vk := variantKey{expfmt.Negotiate(h), acceptsGzip(k.encoding)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v = c.pinned[vk]; v == nil {
		if v = c.variants[vk]; v == nil {
			v = newVariant(vk)
			switch {
			case scraperFormats[vk.format]:
				c.pinned[vk] = v
			case len(c.variants) < maxVariants:
				c.variants[vk] = v
			default:
				return v, false
			}
		}
	}
	if len(c.accepts) < maxAccepts && len(k.accept)+len(k.encoding) <= maxAcceptBytes {
		c.accepts[acceptKey{strings.Clone(k.accept), strings.Clone(k.encoding)}] = v
	}
	return v, true
}

// acceptsGzip reads an Accept-Encoding value (RFC 9110): gzip when the
// client takes it (gzip, x-gzip or *, weighted above 0) at least as gladly
// as an uncompressed body it names (identity or *).
func acceptsGzip(header string) bool {
	qGzip, qIdentity, qAny := -1.0, -1.0, -1.0
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			var err error
			if q, err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil || q < 0 || q > 1 {
				continue // a malformed weight: the entry means nothing
			}
		}
		switch coding = strings.TrimSpace(coding); {
		case strings.EqualFold(coding, "gzip"), strings.EqualFold(coding, "x-gzip"):
			qGzip = max(qGzip, q)
		case strings.EqualFold(coding, "identity"):
			qIdentity = max(qIdentity, q)
		case coding == "*":
			qAny = max(qAny, q)
		}
	}
	if qGzip < 0 {
		qGzip = qAny
	}
	if qIdentity < 0 {
		qIdentity = qAny
	}
	return qGzip > 0 && qGzip >= qIdentity
}

// variant is one negotiated form of /metrics: its latest render and the
// render in flight.
type variant struct {
	key         variantKey
	contentType []string // header values, shared by every response: never appended to in place (len == cap)

	latest atomic.Pointer[render] // the newest finished render without error

	mu       sync.Mutex
	started  uint64  // renders started so far; a render's id is its number
	inflight *render // at most one at a time
}

func newVariant(k variantKey) *variant {
	return &variant{key: k, contentType: []string{string(k.format)}}
}

var (
	varyValues = []string{"Accept", "Accept-Encoding"}
	gzipValues = []string{"gzip"}
)

// render is one rendering of a variant: the body for the generations read
// before gathering.
type render struct {
	id    uint64
	gens  []uint64  // the watched generations, read before gathering
	until time.Time // zero: good until a generation moves; else no longer than this either
	done  chan struct{}
	body  []byte
	err   error // nothing could be gathered: answered 500, never kept
}

// fresh reports whether r still shows what a render now would.
func (r *render) fresh(srcs []Versioned) bool {
	if len(srcs) == 0 || len(r.gens) != len(srcs) {
		return false
	}
	for i, s := range srcs {
		if s.Generation() != r.gens[i] {
			return false
		}
	}
	return r.until.IsZero() || time.Now().Before(r.until)
}

// get returns a render at least as new as this call: the latest one when
// nothing has changed since it was made, else one that started after this
// call arrived (its own, or one it joins), so every scrape that follows a
// publish shows it, and concurrent scrapes render once. (Such a render's
// gather may have begun earlier, for the same generations: see gather.)
func (v *variant) get(c *metricsCache) *render {
	srcs := c.watched()
	if r := v.latest.Load(); r != nil && r.fresh(srcs) {
		return r
	}
	v.mu.Lock()
	arrival := v.started // renders with a higher id began after this call did
	for {
		if r := v.latest.Load(); r != nil && (r.id > arrival || r.fresh(srcs)) {
			v.mu.Unlock()
			return r
		}
		if r := v.inflight; r != nil {
			v.mu.Unlock()
			if testWaiting != nil {
				testWaiting()
			}
			<-r.done
			if r.id > arrival {
				return r
			}
			v.mu.Lock()
			continue
		}
		v.started++
		r := &render{id: v.started, done: make(chan struct{})}
		v.inflight = r
		v.mu.Unlock()
		c.render(v, r, srcs)
		return r
	}
}

// testWaiting, when set by a test, is called as a scrape waits for a
// render or a gather in flight.
var testWaiting func()

var errRenderFailed = errors.New("rendering /metrics failed")

// render gathers from the bridge and encodes the variant, then publishes
// the result to the variant and to the scrapes waiting on it.
func (c *metricsCache) render(v *variant, r *render, srcs []Versioned) {
	finished := false
	defer func() {
		if !finished {
			r.err = errRenderFailed // a panic below; net/http recovers it for this scrape
		}
		v.mu.Lock()
		v.inflight = nil
		if r.err == nil {
			v.latest.Store(r)
		}
		v.mu.Unlock()
		close(r.done)
	}()

	// Generations and the next change by the clock are read before
	// gathering: a change during the render then moves a generation past
	// r.gens (or comes after r.until), and the next scrape renders again.
	r.gens = make([]uint64, len(srcs))
	start := time.Now()
	for i, s := range srcs {
		r.gens[i] = s.Generation()
		if e, ok := s.(Expiring); ok {
			if d, ok := e.ChangesIn(); ok && (r.until.IsZero() || start.Add(d).Before(r.until)) {
				r.until = start.Add(d)
			}
		}
	}
	mfs, err := c.gather(r.gens, r.until)
	if err != nil {
		c.log.Error("error gathering metrics", "err", err)
		if len(mfs) == 0 {
			r.err, finished = err, true
			return
		}
	}

	var buf bytes.Buffer
	if prev := v.latest.Load(); prev != nil {
		buf.Grow(len(prev.body) + len(prev.body)/8) // series come and go: a little headroom saves a copy
	}
	out := writerTo(&buf, v.key.gzip)
	// The bridge's translation strategy has escaped every name already
	// (see Process.Pipeline), so the encoder's own escaping pass, which
	// copies every family to find nothing to escape, is skipped.
	// (An OpenMetrics "# EOF" is left to renderRuntime, whose series follow.)
	enc := expfmt.NewEncoder(out, v.key.format.WithEscapingScheme(model.NoEscaping))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			c.log.Error("error encoding metric family", "family", mf.GetName(), "err", err)
		}
	}
	r.err = out.Close()
	r.body = buf.Bytes()
	finished = true
}

// gather gathers from the bridge for a render that read gens (and until)
// before it: a gather in flight for the same generations, whose next
// change by the clock has not come, is joined rather than started again
// (nothing it shows has changed since). After a publish every kept
// variant renders at once (each scraper's format, gzipped or not), and a
// gather of 1,000 streams makes tens of MB: joined, they cost one gather
// and their encodings (a flood of such renders beside 1,000 streams went
// past 128M without). Nothing is kept past the gather, and with nothing
// watched (every scrape renders afresh) nothing is shared.
func (c *metricsCache) gather(gens []uint64, until time.Time) ([]*dto.MetricFamily, error) {
	if len(gens) == 0 {
		return c.gatherer.Gather()
	}
	c.gatherMu.Lock()
	if g := c.gathering; g != nil && slices.Equal(g.gens, gens) && g.goodUntil(until) {
		c.gatherMu.Unlock()
		if testWaiting != nil {
			testWaiting()
		}
		<-g.done
		return g.mfs, g.err
	}
	g := &gatherCall{gens: gens, until: until, done: make(chan struct{}), err: errRenderFailed}
	c.gathering = g
	c.gatherMu.Unlock()
	defer func() { // also on a panic: those who joined are answered 500
		c.gatherMu.Lock()
		if c.gathering == g {
			c.gathering = nil
		}
		c.gatherMu.Unlock()
		close(g.done)
	}()
	g.mfs, g.err = c.gatherer.Gather()
	return g.mfs, g.err
}

// goodUntil: what g gathers is still what a gather now would, for a render
// whose next change by the clock is until (zero: none).
func (g *gatherCall) goodUntil(until time.Time) bool {
	if g.until.IsZero() {
		return until.IsZero()
	}
	return time.Now().Before(g.until)
}

// write answers with r's body followed by runtime's (renderRuntime).
func (r *render) write(w http.ResponseWriter, v *variant, runtime *bytes.Buffer) {
	defer runtimeBuffers.Put(runtime)
	if r.err != nil {
		http.Error(w, "An error has occurred while serving metrics:\n\n"+r.err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h["Content-Type"] = v.contentType
	h["Vary"] = varyValues
	if v.key.gzip {
		h["Content-Encoding"] = gzipValues
	}
	h["Content-Length"] = []string{strconv.Itoa(len(r.body) + runtime.Len())}
	// A scraper that went away is not an error of ours.
	if _, err := w.Write(r.body); err == nil {
		_, _ = w.Write(runtime.Bytes())
	}
}

// gzipWriters holds the process's gzip writers: at most maxGzipWriters,
// kept for its life. Each holds about 1.2 MiB of compressor tables (heap
// profile), so a pool that grew with concurrent scrapes (and that each GC
// emptied, to be made again) cost megabytes of a 20 MiB budget; a
// compression waits for a free writer instead (a scrape's process and Go
// section takes well under a millisecond, a render of a large body a few).
// BestSpeed, because a scrape body is small and rendered again at every change.
var gzipWriters = func() chan *gzip.Writer {
	c := make(chan *gzip.Writer, maxGzipWriters)
	for range maxGzipWriters {
		c <- nil // made on first use
	}
	return c
}()

const maxGzipWriters = 1

// writerTo writes to buf, compressed when gz; Close finishes the stream
// (and gives the gzip writer back: every writerTo must be closed).
func writerTo(buf *bytes.Buffer, gz bool) io.WriteCloser {
	if !gz {
		return nopCloser{buf}
	}
	w := <-gzipWriters
	if w == nil {
		w, _ = gzip.NewWriterLevel(buf, gzip.BestSpeed)
	} else {
		w.Reset(buf)
	}
	return &pooledGzip{w}
}

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }

type pooledGzip struct{ *gzip.Writer }

func (p *pooledGzip) Close() error {
	if p.Writer == nil { // closed already: the writer is back
		return nil
	}
	err := p.Writer.Close()
	gzipWriters <- p.Writer
	p.Writer = nil
	return err
}
