package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/docker/docker/client"
)

// DefaultMaxResponseBytes bounds each Engine API response: a list of
// several thousand containers, or one stats or inspect body, is far less.
const DefaultMaxResponseBytes = 16 << 20

// Client is a Docker Engine API client whose responses are read at most
// maxBody bytes each, so a huge or endless body from a broken or hostile
// daemon fails with a clear error instead of taking the exporter's memory.
// The event stream is bounded per event rather than in total. Bodies are
// read concurrently up to smallBody bytes each; past that, one at a time,
// so that the bytes in flight stay near one maxBody however many calls
// are out (a stats body is a few KiB; only a broken or hostile daemon
// sends large ones).
type Client struct {
	*client.Client
	transport *http.Transport // the client's own, whose idle connections Close closes
}

// NewClient builds a client from opts (client.FromEnv and the rest) with
// every response body bounded to maxBody bytes.
func NewClient(maxBody int64, opts ...client.Opt) (*Client, error) {
	c := &Client{}
	limit := func(cli *client.Client) error {
		hc := cli.HTTPClient()
		if tr, ok := hc.Transport.(*http.Transport); ok {
			c.transport = tr
			// The client picks https from its transport's TLS config, which
			// it can no longer see once the transport is wrapped.
			if tr.TLSClientConfig != nil {
				if err := client.WithScheme("https")(cli); err != nil {
					return err
				}
			}
		}
		hc.Transport = bodyLimit{next: hc.Transport, max: maxBody, large: make(chan struct{}, 1)}
		return client.WithHTTPClient(hc)(cli)
	}
	cli, err := client.NewClientWithOpts(append(opts, limit)...)
	if err != nil {
		return nil, err
	}
	c.Client = cli
	return c, nil
}

// Close closes the client's idle connections.
func (c *Client) Close() error {
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
	return c.Client.Close()
}

// smallBody is what a body may read before it needs the large-body token.
const smallBody = 64 << 10

// bodyLimit bounds the bodies of the responses it passes on.
type bodyLimit struct {
	next  http.RoundTripper
	max   int64
	large chan struct{} // held by the one body reading past smallBody
}

func (b bodyLimit) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.next.RoundTrip(req)
	if err != nil || resp.Body == nil || resp.Body == http.NoBody {
		return resp, err
	}
	resp.Body = &limitedBody{
		rc: resp.Body, left: b.max, max: b.max, what: req.Method + " " + req.URL.Path,
		perLine: strings.HasSuffix(req.URL.Path, "/events"), // a stream of JSON lines that never ends
		large:   b.large, ctx: req.Context(),
	}
	return resp, nil
}

// limitedBody fails once more than max bytes are read (perLine: in one line).
type limitedBody struct {
	rc      io.ReadCloser
	left    int64
	max     int64
	what    string
	perLine bool

	large   chan struct{} // nil: no bound on the bytes in flight
	ctx     context.Context
	holding bool // the large-body token
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, l.err()
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1] // one byte more than allowed tells "at the limit" from "over it"
	}
	if l.large != nil && !l.perLine && !l.holding {
		if read := l.max - l.left; read+int64(len(p)) > smallBody {
			select {
			case l.large <- struct{}{}:
				l.holding = true
			case <-l.ctx.Done():
				return 0, context.Cause(l.ctx)
			}
		}
	}
	n, err := l.rc.Read(p)
	if i := bytes.LastIndexByte(p[:n], '\n'); l.perLine && i >= 0 {
		l.left = l.max - int64(n-1-i)
	} else {
		l.left -= int64(n)
	}
	if l.left < 0 {
		return n + int(l.left), l.err()
	}
	return n, err
}

func (l *limitedBody) err() error { return &tooLarge{what: l.what, max: l.max, event: l.perLine} }

// tooLarge is a response cut off at the bound.
type tooLarge struct {
	what  string
	max   int64
	event bool
}

func (e *tooLarge) Error() string {
	unit := "response"
	if e.event {
		unit = "event"
	}
	return fmt.Sprintf("Engine API %s to %s is over %d bytes: not read further (--docker.max-response-bytes)", unit, e.what, e.max)
}

func (l *limitedBody) Close() error {
	if l.holding {
		l.holding = false
		<-l.large
	}
	return l.rc.Close()
}
