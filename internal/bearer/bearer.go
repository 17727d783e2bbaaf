// Package bearer checks the token of a streaming endpoint (ffmpeg ingest),
// the one check both the ingest handler and the pipeline's guard make.
package bearer

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// Matches reports whether r carries token as "Authorization: Bearer TOKEN"
// (the scheme in any case, as RFC 7235 has it) or, since ffmpeg's
// -progress cannot send headers, as ?token=TOKEN. The comparison takes the
// same time wherever the tokens differ.
func Matches(r *http.Request, token string) bool {
	got, ok := credentials(r.Header.Get("Authorization"))
	if !ok {
		got = r.URL.Query().Get("token")
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// credentials is the token of an "Authorization: Bearer TOKEN" value.
func credentials(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimLeft(token, " "), true
}
