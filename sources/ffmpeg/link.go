package ffmpeg

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/encodeprofile"
)

// Peer is who feeds a connection: what links its stream to the process
// that encodes it (sources/energy does the linking).
type Peer struct {
	Local, Remote netip.AddrPort // the TCP connection as the server sees it; zero for a pipe
	Pipe          uint64         // inode of the pipe it is read from (--stdin); 0 otherwise
	PID           int            // ?pid=N; 0 when not given, -1 when not a positive integer
	Conn          uint64         // the connection's serial, set by the hub: a new one is a new link
	// Declared is the encode profile the ingest URL declares
	// (?encoder=&preset=&ladder=, validated: encodeprofile.FromQuery).
	Declared encodeprofile.Profile
}

// peerOf is who sent r: the connection's two addresses, the process
// named by ?pid=, and the encode profile the URL declares; an error names
// a profile parameter outside its bounded domain.
func peerOf(r *http.Request) (Peer, error) {
	var p Peer
	var err error
	if p.Declared, err = encodeprofile.FromQuery(r.URL.Query()); err != nil {
		return p, err
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr); ok {
		p.Local = a.AddrPort()
	}
	p.Remote, _ = netip.ParseAddrPort(r.RemoteAddr)
	if q := r.URL.Query(); q.Has("pid") {
		if pid, err := strconv.Atoi(q.Get("pid")); err == nil && pid > 0 {
			p.PID = pid
		} else {
			p.PID = -1
		}
	}
	return p, nil
}
