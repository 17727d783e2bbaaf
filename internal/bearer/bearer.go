// Package bearer checks the token of a streaming endpoint (ffmpeg ingest),
// the one check both the ingest handler and the pipeline's guard make.
package bearer

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// Matches reports whether r carries token as "Authorization: Bearer TOKEN"
// or, since ffmpeg's -progress cannot send headers, as ?token=TOKEN. The
// comparison takes the same time wherever the tokens differ.
func Matches(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		got = r.URL.Query().Get("token")
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}
