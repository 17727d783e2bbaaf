package energy

import (
	"strings"
	"testing"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/peer"
	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/podmantest"
)

// TestBridgeContainer: an encoder in a podman container on a bridge
// network connects from its own network namespace, so the exporter sees a
// non-loopback peer; with the host's PIDs visible, the exporter finds the
// socket's other end in the container's namespace and links the stream to
// the process there (busybox nc stands in for ffmpeg: what is linked is
// whoever holds the connection). A peer that is no namespace's here stays
// remote.
func TestBridgeContainer(t *testing.T) {
	peer.RequireRoot(t, "podman runs containers, and the exporter reads their processes' descriptors")
	pm := podmantest.Start(t)
	pm.Run(t, "probe", "sleep 300")
	gw := pm.Gateway(t, "probe")

	e := startExporter(t, nil, nil, "--web.listen-host", gw)
	port := e.addr[strings.LastIndexByte(e.addr, ':')+1:]
	// One chunk of progress (26 bytes: 0x1a), then the connection stays open.
	post := `printf 'POST /ingest/bridged HTTP/1.1\r\nHost: exporter\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nframe=1\nprogress=continue\n\r\n'`
	pm.Run(t, "encoder", "("+post+"; sleep 300) | nc "+gw+" "+port)

	var s map[string]float64
	exportertest.WaitFor(t, 30*time.Second, func() bool {
		s = e.scrape()
		for k := range s {
			if strings.HasPrefix(k, "ffmpeg_stream_process_info{") && strings.Contains(k, `stream="bridged"`) && strings.Contains(k, `command="nc"`) {
				return true
			}
		}
		_, remote := s[key("ffmpeg_stream_unlinked", "reason", "remote", "stream", "bridged")]
		if remote {
			t.Fatalf("the container's stream is taken for another host's: %v", s)
		}
		return false
	})
	if _, ok := s[key("ffmpeg_total_frames", "stream", "bridged")]; !ok {
		t.Errorf("the bridged stream's progress is not served: %v", s)
	}
}
