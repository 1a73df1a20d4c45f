package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary signature headers (outside input for every
// receiver) to Verify: it must never panic, and must only accept a header
// carrying the true MAC of this body for its timestamp.
func FuzzVerify(f *testing.F) {
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"a":1}`)
	f.Add(Sign("k", now, body), body)
	f.Add("t=1,v1=00", []byte("{}"))
	f.Add("t=,v1=", []byte(""))
	f.Add("v1=zz,t=99999999999999999999", []byte("x"))
	f.Fuzz(func(t *testing.T, header string, b []byte) {
		if Verify("k", header, b, now, 0) != nil {
			return
		}
		ts, sigs, err := parseSignatureHeader(header)
		if err != nil {
			t.Fatalf("accepted an unparsable header %q", header)
		}
		want := hex.EncodeToString(appendMAC(nil, hmac.New(sha256.New, []byte("k")), ts, b))
		for _, s := range sigs {
			if strings.EqualFold(s, want) {
				return
			}
		}
		t.Fatalf("accepted header %q without the right MAC", header)
	})
}

// FuzzParseRetryAfter: whatever a server sends, the hint stays in [0, limit].
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "0", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", "99999999999999999999", " 5 ", "soon"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		got := ParseRetryAfter(v, now, time.Hour)
		if got < 0 || got > time.Hour {
			t.Fatalf("ParseRetryAfter(%q) = %s, outside [0, 1h]", v, got)
		}
	})
}
