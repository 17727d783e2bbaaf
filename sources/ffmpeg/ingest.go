package ffmpeg

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/bearer"
)

// Reject is why an ingest request was refused.
type Reject uint8

const (
	RejectMethod       Reject = iota // not a POST
	RejectUnauthorized               // missing or wrong bearer token
	RejectStreamName                 // invalid stream name
	RejectTooMany                    // stream limit reached
	RejectBusy                       // another connection feeds the stream
	RejectProfile                    // ?encoder=, ?preset= or ?ladder= outside its bounded domain
	numRejects
)

// Rejects names each Reject, in order, for the metric attribute.
var Rejects = [numRejects]string{"method", "unauthorized", "stream_name", "too_many_streams", "stream_busy", "profile"}

// Ingest is the HTTP handler for POST /ingest, /ingest/{stream} and
// /ingest?stream=NAME. It reads the body line by line as it arrives, so the
// one long chunked POST of `ffmpeg -progress URL` moves the metrics while the
// encode runs.
type Ingest struct {
	Hub   *Hub
	Token string // when set, required as "Authorization: Bearer TOKEN" or ?token=TOKEN
	Log   *slog.Logger

	open func(name string, peer Peer) (*Conn, error) // nil: Hub.OpenFrom; tests inject errors
}

func (in *Ingest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		in.reject(w, RejectMethod, http.StatusMethodNotAllowed, "ingest takes POST")
		return
	}
	if in.Token != "" && !bearer.Matches(r, in.Token) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ingest"`)
		in.reject(w, RejectUnauthorized, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	open := in.Hub.OpenFrom
	if in.open != nil {
		open = in.open
	}
	peer, err := peerOf(r)
	if err != nil {
		in.reject(w, RejectProfile, http.StatusBadRequest, err.Error())
		return
	}
	conn, err := open(streamName(r), peer)
	switch {
	case errors.Is(err, ErrStreamName):
		in.reject(w, RejectStreamName, http.StatusBadRequest, err.Error())
		return
	case errors.Is(err, ErrTooManyStreams):
		in.reject(w, RejectTooMany, http.StatusTooManyRequests, err.Error())
		return
	case errors.Is(err, ErrStreamBusy):
		in.reject(w, RejectBusy, http.StatusConflict, err.Error())
		return
	case err != nil: // none today; a new one must not reach conn.Close on nil
		in.Log.Error("ingest refused", "stream", streamName(r), "err", err)
		refuse(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer conn.Close()

	body := io.Reader(r.Body)
	if idle := in.Hub.cfg.IdleTimeout; idle > 0 {
		body = &idleReader{r: r.Body, rc: http.NewResponseController(w), idle: idle}
	}
	if err := conn.Consume(body); err != nil {
		in.Log.Debug("ingest connection ended early", "stream", streamName(r), "err", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// RefuseStream refuses a stream the process has no descriptors left for
// (the pipeline's guard calls it, before ServeHTTP): counted and answered
// as any other stream past the limit, at once, with 429.
func (in *Ingest) RefuseStream(w http.ResponseWriter, _ *http.Request) {
	in.reject(w, RejectTooMany, http.StatusTooManyRequests, "no room for another live stream: the process's file descriptors are spoken for")
}

// streamName takes the name from the path, then ?stream=, else "default".
func streamName(r *http.Request) string {
	if name := r.PathValue("stream"); name != "" {
		return name
	}
	if q := r.URL.Query(); q.Has("stream") {
		return q.Get("stream")
	}
	return "default"
}

// reject counts why and refuses.
func (in *Ingest) reject(w http.ResponseWriter, why Reject, code int, msg string) {
	in.Hub.rejected[why].Add(1)
	in.Hub.Changed() // the refusal counters are served too
	refuse(w, code, msg)
}

// refuse answers at once and closes the connection. A client may keep
// sending the body (ffmpeg's one long chunked POST); the server would wait
// to drain it before answering, or after, holding a connection and a
// goroutine. So the answer is flushed first, then a read deadline ends the
// drain and the connection with it within refuseDrain: long enough for a
// client on a loaded machine to read its answer before the close, whose
// reset (the client's unread body was still coming) could discard it.
func refuse(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Connection", "close")
	http.Error(w, msg, code)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	_ = rc.SetReadDeadline(time.Now().Add(refuseDrain)) // unsupported only by non-net.Conn writers (tests)
}

const refuseDrain = 2 * time.Second

// idleReader closes a connection that sends nothing for idle, so a stuck
// client cannot hold a stream slot forever.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	_ = ir.rc.SetReadDeadline(time.Now().Add(ir.idle)) // unsupported only on non-net.Conn writers (tests); then there is no deadline
	return ir.r.Read(p)
}
