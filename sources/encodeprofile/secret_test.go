package encodeprofile

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// Strings that must never leave the package: parts of URLs and paths,
// stream keys, tokens, credentials, metadata, headers and drawtext.
var secrets = []string{"SECRET", "hunter2", "sk_live", "127.0.0.1", "1935", "rtmp", "user:pass", "X-Key",
	"Mozilla", "session=", "passphrase", "customer", "drawtext", "title", ".ts", ".flv", "/live/"}

func assertNoSecret(t *testing.T, name string, p Profile) {
	t.Helper()
	if err := checkProfile(p); err != nil {
		t.Errorf("%s: %v", name, err)
	}
	dump := fmt.Sprintf("%#v %s", p, p.Sources())
	for _, s := range secrets {
		if strings.Contains(dump, s) {
			t.Errorf("%s: the profile carries %q: %s", name, s, dump)
		}
	}
}

// adversarialArgs is an encode whose every free-text place holds a secret,
// beside options that take no argument (a misread would shift the rest).
var adversarialArgs = []string{
	"/usr/bin/ffmpeg", "-nostdin", "-hide_banner", "-re", "-y",
	"-headers", "X-Key: SECRET\r\n", "-user_agent", "Mozilla/5.0 SECRET", "-cookies", "session=SECRET; path=/",
	"-i", "rtmp://user:pass@127.0.0.1:1935/live/sk_live_SECRET?token=hunter2",
	"-metadata", "title=SECRET", "-metadata:s:v:0", "handler_name=SECRET",
	"-vf", "drawtext=text='SECRET, hunter2':x=10:y=10,scale=1280:720",
	"-c:v", "libx264", "-preset", "veryfast", "-passphrase", "SECRET", "-encryption_key", "SECRET",
	"-f", "flv", "rtmp://127.0.0.1:1935/live/sk_live_SECRET?token=hunter2",
	"-c:v", "libx264", "-preset", "hunter2", "-s", "640x360", "/srv/customer-SECRET/libx265/1280x720@30.ts",
}

func TestCommandLineSecretsStayOut(t *testing.T) {
	p := FromArgs(adversarialArgs)
	// Still read right around the secrets.
	wantProfile{"libx264", Other, "1280x720@?,640x360@?", "none", 1280*720 + 640*360}.check(t, "adversarial", p)
	assertNoSecret(t, "adversarial", p)

	// Secrets where a value is read: each maps into its domain.
	for _, args := range []string{
		"ffmpeg -i in -c:v sk_live_SECRET -preset hunter2 out",
		"ffmpeg -hwaccel SECRET -i in -c:v libx264 out",
		"ffmpeg -i in -c:v libx265 libx264", // an output named like an encoder
		"ffmpeg -i in -filter_complex [0:v]drawtext=text=SECRET[SECRET] -map [SECRET] -c:v libx264 out",
		"ffmpeg -i in -map [hunter2] -c:v libx264 out",
		"ffmpeg -i in -c:v libx264 -s SECRETxhunter2 -r SECRET -b:v SECRET out",
	} {
		assertNoSecret(t, args, FromArgs(strings.Fields(args)))
	}
}

const adversarialStderr = `Input #0, flv, from 'rtmp://user:pass@127.0.0.1:1935/live/sk_live_SECRET?token=hunter2':
  Metadata:
    title           : SECRET
  Stream #0:0: Video: h264 (High), yuv420p(progressive), 1280x720, 30 fps, 30 tbr, 1k tbn
Stream mapping:
  Stream #0:0 -> #0:0 (h264 (native) -> h264 (libx264))
Output #0, flv, to '/srv/customer-SECRET/sk_live_SECRET.flv':
  Metadata:
    title           : SECRET
  Stream #0:1: Video: SECRET (hunter2), yuv420p, 640x360, 30 fps
  Stream #0:0: Video: h264 (libx264), yuv420p(progressive), 1280x720 [SAR 1:1 DAR 16:9], q=2-31, 30 fps, 1k tbn
    Metadata:
      handler_name    : SECRET
  Stream #0:0 -> #0:1 (SECRET (native) -> SECRET (hunter2))
[Parsed_drawtext_0 @ 0x1] SECRET hunter2 sk_live_SECRET
[error] rtmp://127.0.0.1:1935/live/sk_live_SECRET?token=hunter2: Broken pipe
`

func TestStderrSecretsStayOut(t *testing.T) {
	var s Stderr
	feed(&s, adversarialStderr)
	assertNoSecret(t, "stderr", s.Profile())
}

func TestQuerySecretsStayOut(t *testing.T) {
	q := url.Values{"stream": {"sk_live_SECRET"}, "token": {"hunter2"}, "encoder": {"libx264"}, "ladder": {"1280x720@30"}}
	p, err := FromQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecret(t, "query", p)
	for _, bad := range []url.Values{{"encoder": {"SECRET"}}, {"preset": {"hunter2"}}, {"ladder": {"sk_live_SECRET"}}} {
		_, err := FromQuery(bad)
		if err == nil || strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("FromQuery(%v) = %v", bad, err)
		}
	}
}
