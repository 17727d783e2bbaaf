package ffmpeg

import (
	"net/http"
	"testing"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/encodeprofile"
)

// TestIngestDeclaredProfile: the encoder, preset and ladder the ingest URL
// declares are the stream's profile, told by the url; a value outside its
// bounded domain is refused with 400 and counted, and opens no stream.
func TestIngestDeclaredProfile(t *testing.T) {
	hub, srv := newIngestServer(t, DefaultConfig, "")
	if code := post(t, srv.URL+"/ingest/job?encoder=libx264&preset=medium&ladder=1280x720@30,640x360@30", "frame=1\nprogress=continue\n"); code != http.StatusNoContent {
		t.Fatalf("declared profile: %d", code)
	}
	snap := hub.Snapshot()
	if len(snap.Streams) != 1 {
		t.Fatalf("streams %+v", snap.Streams)
	}
	p := snap.Streams[0].Profile
	if p.Encoder.Label != "libx264" || p.Preset.Label != "medium" || p.Ladder.Label != "1280x720@30,640x360@30" || p.Encoder.From != encodeprofile.FromURL {
		t.Errorf("profile %+v, want libx264 medium 1280x720@30,640x360@30 from the url", p)
	}
	for _, bad := range []string{"?encoder=evil%3Cscript%3E", "?preset=../../etc", "?ladder=99999x1@1", "?ladder=1x1@1,2x2@1,3x3@1,4x4@1,5x5@1,6x6@1,7x7@1"} {
		if code := post(t, srv.URL+"/ingest/bad"+bad, "frame=1\n"); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	snap = hub.Snapshot()
	if snap.Rejected[RejectProfile] != 4 || len(snap.Streams) != 1 {
		t.Errorf("%d refused for their profile, %d streams; want 4 and the one", snap.Rejected[RejectProfile], len(snap.Streams))
	}
}
