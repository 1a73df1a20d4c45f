package webhook

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	const secret = "whsec-test-secret"
	at := time.Unix(1_700_000_000, 0)
	body := []byte(`{"user":"u1","event":"welcome"}`)
	good := Sign(secret, at, body)
	other := Sign("another-secret", at, body)

	tests := []struct {
		name      string
		header    string
		body      []byte
		secret    string
		now       time.Time
		tolerance time.Duration
		wantErr   error
	}{
		{name: "valid", header: good, body: body, secret: secret, now: at.Add(time.Minute), tolerance: 5 * time.Minute},
		{name: "valid with zero tolerance long after", header: good, body: body, secret: secret, now: at.Add(1000 * time.Hour)},
		{name: "tampered body", header: good, body: []byte(`{"user":"u2","event":"welcome"}`), secret: secret, now: at, tolerance: time.Minute, wantErr: ErrSignatureMismatch},
		{name: "wrong secret", header: good, body: body, secret: "not-the-secret", now: at, tolerance: time.Minute, wantErr: ErrSignatureMismatch},
		{name: "replay outside tolerance", header: good, body: body, secret: secret, now: at.Add(6 * time.Minute), tolerance: 5 * time.Minute, wantErr: ErrSignatureExpired},
		{name: "timestamp from the future", header: good, body: body, secret: secret, now: at.Add(-6 * time.Minute), tolerance: 5 * time.Minute, wantErr: ErrSignatureExpired},
		{name: "tampered timestamp", header: strings.Replace(good, "t=1700000000", "t=1700000100", 1), body: body, secret: secret, now: at, tolerance: 5 * time.Minute, wantErr: ErrSignatureMismatch},
		{name: "rotation: second v1 matches", header: other + ",v1=" + strings.SplitN(good, "v1=", 2)[1], body: body, secret: secret, now: at, tolerance: time.Minute},
		{name: "unknown scheme ignored", header: good + ",v0=deadbeef", body: body, secret: secret, now: at, tolerance: time.Minute},
		{name: "missing timestamp", header: "v1=" + strings.SplitN(good, "v1=", 2)[1], body: body, secret: secret, now: at, wantErr: ErrSignatureHeader},
		{name: "missing v1", header: "t=1700000000", body: body, secret: secret, now: at, wantErr: ErrSignatureHeader},
		{name: "garbage", header: "hello", body: body, secret: secret, now: at, wantErr: ErrSignatureHeader},
		{name: "empty", header: "", body: body, secret: secret, now: at, wantErr: ErrSignatureHeader},
		{name: "non-hex signature", header: "t=1700000000,v1=zz", body: body, secret: secret, now: at, wantErr: ErrSignatureMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.secret, tc.header, tc.body, tc.now, tc.tolerance)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Verify err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestSignFormat(t *testing.T) {
	// Known answer: HMAC-SHA256("secret", "1.{}") computed independently
	// (printf '1.{}' | openssl dgst -sha256 -hmac secret).
	got := Sign("secret", time.Unix(1, 0), []byte("{}"))
	const want = "t=1,v1=1122767b193110cfec322b6f199b599edbf608ed087f2d27afb0b97d99523908"
	if got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
	// The pooled signer must agree with Sign.
	if s := newSigner("secret").sign(1, []byte("{}")); s != got {
		t.Fatalf("pooled signer = %q, Sign = %q", s, got)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name  string
		value string
		limit time.Duration
		want  time.Duration
	}{
		{name: "empty", value: "", want: 0},
		{name: "seconds", value: "120", limit: time.Hour, want: 2 * time.Minute},
		{name: "seconds capped", value: "86400", limit: 10 * time.Minute, want: 10 * time.Minute},
		{name: "huge seconds capped without overflow", value: "99999999999999", limit: time.Minute, want: time.Minute},
		{name: "zero", value: "0", limit: time.Hour, want: 0},
		{name: "negative", value: "-5", limit: time.Hour, want: 0},
		{name: "http date", value: now.Add(90 * time.Second).Format(http.TimeFormat), limit: time.Hour, want: 90 * time.Second},
		{name: "http date capped", value: now.Add(48 * time.Hour).Format(http.TimeFormat), limit: time.Hour, want: time.Hour},
		{name: "http date in the past", value: now.Add(-time.Minute).Format(http.TimeFormat), limit: time.Hour, want: 0},
		{name: "garbage", value: "soon", limit: time.Hour, want: 0},
		{name: "no limit", value: "7200", want: 2 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseRetryAfter(tc.value, now, tc.limit); got != tc.want {
				t.Fatalf("ParseRetryAfter(%q) = %s, want %s", tc.value, got, tc.want)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{name: "userinfo dropped", raw: "https://user:pw@hooks.example.com/", want: "https://hooks.example.com"},
		{name: "query token dropped", raw: "https://hooks.example.com/?token=abc", want: "https://hooks.example.com/[redacted]"},
		{name: "secret path dropped", raw: "https://hooks.slack.com/services/T0/B0/XXXX", want: "https://hooks.slack.com/[redacted]"},
		{name: "port kept", raw: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := redactURL(u); got != tc.want {
				t.Fatalf("redactURL = %q, want %q", got, tc.want)
			}
		})
	}
}
