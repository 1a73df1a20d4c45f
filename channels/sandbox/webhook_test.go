package sandbox

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// webhookTestSign computes the Stripe-style header the fake must accept,
// written out here so the fake is checked against the formula, not itself.
func webhookTestSign(secret string, ts int64, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.%s", ts, body)
	return fmt.Sprintf("t=%d,v1=%s", ts, hex.EncodeToString(m.Sum(nil)))
}

func TestWebhookFake(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	wh, err := NewWebhook(WebhookOptions{Secret: "s3cret", Now: func() time.Time { return now }, MaxBodyBytes: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer wh.Close()
	wh.Faults.Add(Fault{Match: "/limited", Status: 429, RetryAfter: 1500 * time.Millisecond, Times: 1})
	wh.Faults.Add(Fault{Match: "/moved", Status: 301})
	wh.Faults.Add(Fault{Match: "/drop", Drop: true})

	body := `{"a":1}`
	tests := []struct {
		name           string
		path, sig      string
		body           string
		wantStatus     int
		wantRetryAfter string
		wantLocation   string
		wantErr        bool
	}{
		{name: "valid signature", path: "/ok", sig: webhookTestSign("s3cret", now.Unix(), body), body: body, wantStatus: 200},
		{name: "missing signature", path: "/ok", body: body, wantStatus: 401},
		{name: "wrong secret", path: "/ok", sig: webhookTestSign("other", now.Unix(), body), body: body, wantStatus: 401},
		{name: "tampered body", path: "/ok", sig: webhookTestSign("s3cret", now.Unix(), body), body: `{"a":2}`, wantStatus: 401},
		{name: "stale timestamp", path: "/ok", sig: webhookTestSign("s3cret", now.Add(-10*time.Minute).Unix(), body), body: body, wantStatus: 401},
		{name: "too large", path: "/ok", sig: webhookTestSign("s3cret", now.Unix(), strings.Repeat("x", 100)), body: strings.Repeat("x", 100), wantStatus: 413},
		{name: "429 fault rounds Retry-After up", path: "/limited", sig: webhookTestSign("s3cret", now.Unix(), body), body: body, wantStatus: 429, wantRetryAfter: "2"},
		{name: "fault used up after Times", path: "/limited", sig: webhookTestSign("s3cret", now.Unix(), body), body: body, wantStatus: 200},
		{name: "redirect fault sets Location", path: "/moved", sig: webhookTestSign("s3cret", now.Unix(), body), body: body, wantStatus: 301, wantLocation: "/redirected/moved"},
		{name: "drop closes the connection", path: "/drop", body: body, wantErr: true},
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, wh.URL()+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.sig != "" {
				req.Header.Set("X-Notifyd-Signature", tc.sig)
			}
			resp, err := client.Do(req)
			if tc.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got status %d, want a dropped connection", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.wantRetryAfter {
				t.Fatalf("Retry-After %q, want %q", got, tc.wantRetryAfter)
			}
			if got := resp.Header.Get("Location"); got != tc.wantLocation {
				t.Fatalf("Location %q, want %q", got, tc.wantLocation)
			}
		})
	}
	var ok int
	for _, r := range wh.Recorder.All() {
		if r.Status == 200 {
			ok++
			if string(r.Body) != body || r.Headers[":method"] != http.MethodPost {
				t.Fatalf("recorded %+v", r)
			}
		}
	}
	if ok != 2 {
		t.Fatalf("recorded %d accepted requests, want 2", ok)
	}
	if wh.BadSignatures() != 4 {
		t.Fatalf("BadSignatures = %d, want 4", wh.BadSignatures())
	}
}
