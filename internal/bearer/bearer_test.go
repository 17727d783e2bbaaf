package bearer

import (
	"net/http/httptest"
	"testing"
)

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		target, header string
		want           bool
	}{
		{"/ingest", "Bearer s3cret", true},
		{"/ingest", "bearer s3cret", true}, // RFC 7235: the scheme is case-insensitive
		{"/ingest", "BEARER s3cret", true},
		{"/ingest", "Bearer  s3cret", true},
		{"/ingest", "Bearers3cret", false},
		{"/ingest", "Basic s3cret", false},
		{"/ingest?token=s3cret", "", true},
		{"/ingest", "", false},
		{"/ingest", "Bearer wrong", false},
		{"/ingest", "s3cret", false},                    // not a bearer header; no ?token= either
		{"/ingest?token=s3cret", "Bearer wrong", false}, // the header, when given, is the credential
		{"/ingest?token=s3cre", "", false},
	} {
		r := httptest.NewRequest("POST", tc.target, nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		if got := Matches(r, "s3cret"); got != tc.want {
			t.Errorf("%s with %q: %v, want %v", tc.target, tc.header, got, tc.want)
		}
	}
}
