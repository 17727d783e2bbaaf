package encodeprofile

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestFromQuery(t *testing.T) {
	for _, c := range []struct {
		query string
		want  wantProfile
	}{
		{"encoder=libx264&preset=medium&ladder=1280x720@30,640x360@30",
			wantProfile{"libx264", "medium", "1280x720@30,640x360@30", Unknown, 1280*720 + 640*360}},
		// Rungs in output order; the label sorts them, pixels scale by the
		// first rung's rate.
		{"ladder=640x360@15,1920x1080@30&encoder=h264_nvenc&preset=p4",
			wantProfile{"h264_nvenc", "p4", "1920x1080@30,640x360@15", Unknown, 640*360 + 2*1920*1080}},
		{"ladder=1920x1080@29.97", wantProfile{Unknown, Unknown, "1920x1080@29.97", Unknown, 1920 * 1080}},
		{"ladder=1280x720@?,?x360@30", wantProfile{Unknown, Unknown, "1280x720@?,?x360@30", Unknown, 0}},
		{"preset=veryslow", wantProfile{Unknown, "veryslow", Unknown, Unknown, 0}},
		{"encoder=libsvtav1&preset=8", wantProfile{"libsvtav1", "8", Unknown, Unknown, 0}},
		{"encoder=h264_vaapi&preset=default", wantProfile{"h264_vaapi", Default, Unknown, Unknown, 0}},
		{"encoder=mixed", wantProfile{Mixed, Unknown, Unknown, Unknown, 0}},
		{"stream=cam1&token=hunter2", wantProfile{Unknown, Unknown, Unknown, Unknown, 0}},
		{"", wantProfile{Unknown, Unknown, Unknown, Unknown, 0}},
	} {
		q, err := url.ParseQuery(c.query)
		if err != nil {
			t.Fatal(err)
		}
		p, err := FromQuery(q)
		if err != nil {
			t.Errorf("%q: %v", c.query, err)
			continue
		}
		c.want.check(t, c.query, p)
		for _, v := range []Value{p.Encoder, p.Preset, p.Ladder} {
			if v.known() && v.From != FromURL {
				t.Errorf("%q: %+v not from the URL", c.query, v)
			}
		}
	}
}

func TestFromQueryRefusesWhatDoesNotFit(t *testing.T) {
	for _, c := range []struct{ query, param string }{
		{"encoder=x264", ParamEncoder},
		{"encoder=LIBX264", ParamEncoder},
		{"encoder=unknown", ParamEncoder},
		{"encoder=", ParamEncoder},
		{"encoder=libx264&encoder=libx265", ParamEncoder},
		{"encoder=libx264&preset=p4", ParamPreset},
		{"encoder=h264_vaapi&preset=fast", ParamPreset},
		{"preset=warp9", ParamPreset},
		{"encoder=libsvtav1&preset=14", ParamPreset},
		{"ladder=1280x720", ParamLadder},
		{"ladder=1280x720@30,", ParamLadder},
		{"ladder=8193x720@30", ParamLadder},
		{"ladder=0x720@30", ParamLadder},
		{"ladder=1280x720@241", ParamLadder},
		{"ladder=1280x720@0", ParamLadder},
		{"ladder=1280x720@NaN", ParamLadder},
		{"ladder=1280x720@1e2", ParamLadder},
		{"ladder=-1280x720@30", ParamLadder},
		{"ladder=1280.5x720@30", ParamLadder},
		{"ladder=0x500x720@30", ParamLadder},
		{"ladder=1x1@1,1x1@1,1x1@1,1x1@1,1x1@1,1x1@1,1x1@1", ParamLadder},
		{"ladder=rtmp://evil/sk_live_SECRET@30", ParamLadder},
	} {
		q, err := url.ParseQuery(c.query)
		if err != nil {
			t.Fatal(err)
		}
		_, err = FromQuery(q)
		var pe *ParamError
		if !errors.As(err, &pe) || !errors.Is(err, ErrInvalid) || pe.Param != c.param {
			t.Errorf("%q: %v, want a ParamError for %q", c.query, err, c.param)
			continue
		}
		if !strings.Contains(err.Error(), `"`+c.param+`"`) {
			t.Errorf("%q: %q does not name the parameter", c.query, err)
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "warp9") {
			t.Errorf("%q: the error repeats the value: %q", c.query, err)
		}
	}
}
