package webpush

import (
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/notifyd/notifyd/channels"
)

func TestClassify(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		status     int
		retryAfter string
		reason     channels.Reason
		permanent  bool
		wantAfter  time.Duration
	}{
		{status: 404, reason: channels.ReasonDeadAddress, permanent: true},
		{status: 410, reason: channels.ReasonDeadAddress, permanent: true},
		{status: 400, reason: channels.ReasonInvalid, permanent: true},
		{status: 413, reason: channels.ReasonInvalid, permanent: true},
		{status: 401, reason: channels.ReasonAuth, permanent: true},
		{status: 403, reason: channels.ReasonAuth, permanent: true},
		{status: 429, retryAfter: "120", reason: channels.ReasonRateLimited, wantAfter: 2 * time.Minute},
		{status: 429, retryAfter: now.Add(90 * time.Second).Format(http.TimeFormat), reason: channels.ReasonRateLimited, wantAfter: 90 * time.Second},
		{status: 408, reason: channels.ReasonNetwork},
		{status: 500, reason: channels.ReasonUnavailable},
		{status: 502, reason: channels.ReasonUnavailable},
		{status: 503, retryAfter: "5", reason: channels.ReasonUnavailable, wantAfter: 5 * time.Second},
		{status: 301, reason: channels.ReasonRejected, permanent: true},
		{status: 405, reason: channels.ReasonRejected, permanent: true},
	}
	for _, tc := range tests {
		t.Run(http.StatusText(tc.status)+" "+tc.retryAfter, func(t *testing.T) {
			cause := errors.New("cause")
			ce := classify(tc.status, tc.retryAfter, now, cause)
			if ce.Reason != tc.reason || ce.Permanent != tc.permanent || ce.RetryAfter != tc.wantAfter {
				t.Fatalf("got %s permanent=%v after=%s", ce.Reason, ce.Permanent, ce.RetryAfter)
			}
			if !errors.Is(ce, cause) || ce.Code == "" {
				t.Fatalf("error %v lost its cause or code", ce)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want time.Duration
	}{
		{name: "empty", in: "", want: 0},
		{name: "seconds", in: "30", want: 30 * time.Second},
		{name: "seconds with spaces", in: " 7 ", want: 7 * time.Second},
		{name: "zero", in: "0", want: 0},
		{name: "negative", in: "-5", want: 0},
		{name: "huge is capped at a year", in: "99999999999999", want: 365 * 24 * time.Hour},
		{name: "http date ahead", in: now.Add(time.Hour).Format(http.TimeFormat), want: time.Hour},
		{name: "http date past", in: now.Add(-time.Hour).Format(http.TimeFormat), want: 0},
		{name: "garbage", in: "soon", want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseRetryAfter(tc.in, now); got != tc.want {
				t.Fatalf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestIsTopic(t *testing.T) {
	tests := []struct {
		tag  string
		want bool
	}{
		{tag: "", want: false},
		{tag: "order-123_A", want: true},
		{tag: strings.Repeat("z", 32), want: true},
		{tag: strings.Repeat("z", 33), want: false},
		{tag: "has space", want: false},
		{tag: "slash/", want: false},
		{tag: "plus+", want: false},
		{tag: "ümlaut", want: false},
	}
	for _, tc := range tests {
		t.Run(tc.tag, func(t *testing.T) {
			if got := isTopic(tc.tag); got != tc.want {
				t.Fatalf("isTopic(%q) = %v", tc.tag, got)
			}
		})
	}
}

func TestReadReason(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{name: "empty", body: "", want: ""},
		{name: "autopush envelope", body: `{"code":410,"errno":103,"error":"Gone","message":"subscription expired"}`, want: ": subscription expired"},
		{name: "reason field", body: `{"reason":"BadJwtToken"}`, want: ": BadJwtToken"},
		{name: "text first line", body: "push subscription has unsubscribed or expired.\nmore", want: ": push subscription has unsubscribed or expired."},
		{name: "control characters dropped", body: "bad\x1b[31m thing", want: ": bad[31m thing"},
		{name: "long text cut", body: strings.Repeat("x", 500), want: ": " + strings.Repeat("x", 120)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := readReason(strings.NewReader(tc.body)); got != tc.want {
				t.Fatalf("readReason = %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzSubscriptionKeys feeds browser-supplied keys to the decoder and the
// encryptor: no panic, and whatever is accepted encrypts.
func FuzzSubscriptionKeys(f *testing.F) {
	f.Add(rfcUAPublic, rfcAuth)
	f.Add(rfcUAPublic+"==", "BTBZMqHH6r4Tts7J/aSIgg==")
	f.Add("", "")
	f.Add("BA", "AAAA")
	as, _ := ecdh.P256().GenerateKey(rand.Reader)
	salt := make([]byte, 16)
	f.Fuzz(func(t *testing.T, p256dh, auth string) {
		ua, secret, err := subscriptionKeys(p256dh, auth)
		if err != nil {
			if auth != "" && len(auth) >= 4 && strings.Contains(err.Error(), auth) {
				t.Fatalf("error echoes the auth secret: %v", err)
			}
			return
		}
		if len(secret) != 16 {
			t.Fatalf("accepted a %d-byte auth secret", len(secret))
		}
		if _, err := encrypt(nil, []byte(`{"title":"t"}`), ua, secret, as, salt, 0); err != nil {
			t.Fatalf("accepted keys do not encrypt: %v", err)
		}
	})
}

// FuzzReadReason: push service error bodies are outside input that ends up
// in logs; the reason must stay short, single-line and valid to print.
func FuzzReadReason(f *testing.F) {
	f.Add(`{"message":"gone"}`)
	f.Add("line1\nline2")
	f.Add("\x00\xff{")
	f.Fuzz(func(t *testing.T, body string) {
		got := readReason(strings.NewReader(body))
		if len(got) > 2+120 || strings.ContainsAny(got, "\n\r\x00") {
			t.Fatalf("reason %q", got)
		}
		if utf8.ValidString(body) && !utf8.ValidString(got) {
			t.Fatalf("reason %q cut a character of valid input", got)
		}
	})
}
