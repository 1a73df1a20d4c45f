package sandbox

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const apnsTestToken = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"

// apnsTestJWT signs an APNs provider token by hand, so the fake's verifier
// is checked against an independent encoder.
func apnsTestJWT(t *testing.T, key *ecdsa.PrivateKey, kid, iss string, iat int64) string {
	t.Helper()
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(fmt.Sprintf(`{"alg":"ES256","kid":%q}`, kid)))
	claims := enc.EncodeToString([]byte(fmt.Sprintf(`{"iss":%q,"iat":%d}`, iss, iat)))
	digest := sha256.Sum256([]byte(head + "." + claims))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return head + "." + claims + "." + enc.EncodeToString(sig)
}

func apnsTestClient(a *APNs) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: a.CertPool(), MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	return &http.Client{Transport: tr}
}

func TestAPNsSandbox(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	a, err := NewAPNs(APNsOptions{TokenKey: &key.PublicKey, KeyID: "KEY1234567", TeamID: "TEAM123456", Topics: []string{"com.example.app"}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	a.Faults.Add(Fault{Match: "dead*", Status: http.StatusGone, Reason: "Unregistered"})
	a.Faults.Add(Fault{Match: "42942942*", Status: http.StatusTooManyRequests, Reason: "TooManyRequests", RetryAfter: 3 * time.Second})
	a.Faults.Add(Fault{Match: "d20d20d2*", Drop: true})

	good := apnsTestJWT(t, key, "KEY1234567", "TEAM123456", now.Add(-time.Minute).Unix())
	client := apnsTestClient(a)
	payload := `{"aps":{"alert":"hi"}}`

	tests := []struct {
		name       string
		method     string
		path       string
		headers    map[string]string
		body       string
		wantStatus int
		wantReason string
		wantRetry  string
		wantErr    bool
	}{
		{name: "accepted", path: "/3/device/" + apnsTestToken, headers: map[string]string{"apns-id": "123e4567-e89b-12d3-a456-426614174000"}, wantStatus: 200},
		{name: "missing topic", path: "/3/device/" + apnsTestToken, headers: map[string]string{"apns-topic": ""}, wantStatus: 400, wantReason: "MissingTopic"},
		{name: "topic not allowed", path: "/3/device/" + apnsTestToken, headers: map[string]string{"apns-topic": "com.other"}, wantStatus: 400, wantReason: "TopicDisallowed"},
		{name: "token not hex", path: "/3/device/zz" + apnsTestToken[2:], wantStatus: 400, wantReason: "BadDeviceToken"},
		{name: "missing token", path: "/3/device/", wantStatus: 400, wantReason: "MissingDeviceToken"},
		{name: "bad path", path: "/2/device/" + apnsTestToken, wantStatus: 404, wantReason: "BadPath"},
		{name: "wrong method", method: http.MethodGet, path: "/3/device/" + apnsTestToken, body: "-", wantStatus: 405, wantReason: "MethodNotAllowed"},
		{name: "empty payload", path: "/3/device/" + apnsTestToken, body: "-", wantStatus: 400, wantReason: "PayloadEmpty"},
		{name: "payload too large", path: "/3/device/" + apnsTestToken, body: `{"x":"` + strings.Repeat("a", 4100) + `"}`, wantStatus: 413, wantReason: "PayloadTooLarge"},
		{name: "voip allows 5120 bytes", path: "/3/device/" + apnsTestToken, headers: map[string]string{"apns-push-type": "voip"}, body: `{"x":"` + strings.Repeat("a", 4100) + `"}`, wantStatus: 200},
		{name: "bad priority", path: "/3/device/" + apnsTestToken, headers: map[string]string{"apns-priority": "7"}, wantStatus: 400, wantReason: "BadPriority"},
		{name: "bad push type", path: "/3/device/" + apnsTestToken, headers: map[string]string{"apns-push-type": "shout"}, wantStatus: 400, wantReason: "InvalidPushType"},
		{name: "bad expiration", path: "/3/device/" + apnsTestToken, headers: map[string]string{"apns-expiration": "soon"}, wantStatus: 400, wantReason: "BadExpirationDate"},
		{name: "collapse id too long", path: "/3/device/" + apnsTestToken, headers: map[string]string{"apns-collapse-id": strings.Repeat("c", 65)}, wantStatus: 400, wantReason: "BadCollapseId"},
		{name: "bad apns-id", path: "/3/device/" + apnsTestToken, headers: map[string]string{"apns-id": "not-a-uuid"}, wantStatus: 400, wantReason: "BadMessageId"},
		{name: "missing provider token", path: "/3/device/" + apnsTestToken, headers: map[string]string{"authorization": ""}, wantStatus: 403, wantReason: "MissingProviderToken"},
		{name: "token signed by another key", path: "/3/device/" + apnsTestToken, headers: map[string]string{"authorization": "bearer " + apnsTestJWT(t, otherKey, "KEY1234567", "TEAM123456", now.Unix())}, wantStatus: 403, wantReason: "InvalidProviderToken"},
		{name: "token for another team", path: "/3/device/" + apnsTestToken, headers: map[string]string{"authorization": "bearer " + apnsTestJWT(t, key, "KEY1234567", "OTHERTEAM1", now.Unix())}, wantStatus: 403, wantReason: "InvalidProviderToken"},
		{name: "token older than an hour", path: "/3/device/" + apnsTestToken, headers: map[string]string{"authorization": "bearer " + apnsTestJWT(t, key, "KEY1234567", "TEAM123456", now.Add(-61*time.Minute).Unix())}, wantStatus: 403, wantReason: "ExpiredProviderToken"},
		{name: "fault unregistered", path: "/3/device/dead" + apnsTestToken[4:], wantStatus: 410, wantReason: "Unregistered"},
		{name: "fault 429 with retry-after", path: "/3/device/42942942" + apnsTestToken[8:], wantStatus: 429, wantReason: "TooManyRequests", wantRetry: "3"},
		{name: "fault drop resets the stream", path: "/3/device/d20d20d2" + apnsTestToken[8:], wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			body := tc.body
			switch body {
			case "":
				body = payload
			case "-":
				body = ""
			}
			req, err := http.NewRequest(method, a.URL()+tc.path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("apns-topic", "com.example.app")
			req.Header.Set("authorization", "bearer "+good)
			for k, v := range tc.headers {
				if v == "" {
					req.Header.Del(k)
				} else {
					req.Header.Set(k, v)
				}
			}
			resp, err := client.Do(req)
			if tc.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got status %d, want a transport error", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d (%s), want %d", resp.StatusCode, raw, tc.wantStatus)
			}
			if resp.ProtoMajor != 2 {
				t.Fatalf("proto = %s, want HTTP/2", resp.Proto)
			}
			if resp.Header.Get("apns-id") == "" {
				t.Fatal("no apns-id in the answer")
			}
			if id := req.Header.Get("apns-id"); id != "" && resp.Header.Get("apns-id") != id {
				t.Fatalf("apns-id = %q, want the request's %q", resp.Header.Get("apns-id"), id)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.wantRetry {
				t.Fatalf("Retry-After = %q, want %q", got, tc.wantRetry)
			}
			if tc.wantReason == "" {
				if len(raw) != 0 {
					t.Fatalf("success body = %q, want empty", raw)
				}
				return
			}
			var env struct {
				Reason    string `json:"reason"`
				Timestamp *int64 `json:"timestamp"`
			}
			if err := json.Unmarshal(raw, &env); err != nil {
				t.Fatalf("error body %q: %v", raw, err)
			}
			if env.Reason != tc.wantReason {
				t.Fatalf("reason = %q, want %q", env.Reason, tc.wantReason)
			}
			if (env.Timestamp != nil) != (tc.wantStatus == http.StatusGone) {
				t.Fatalf("timestamp = %v for status %d", env.Timestamp, tc.wantStatus)
			}
			if env.Timestamp != nil && *env.Timestamp != now.UnixMilli() {
				t.Fatalf("timestamp = %d, want %d", *env.Timestamp, now.UnixMilli())
			}
		})
	}

	t.Run("recorder keeps headers and body but not the bearer", func(t *testing.T) {
		var found *Received
		for _, r := range a.Recorder.All() {
			if r.Status == 200 && r.Headers["apns-id"] == "123e4567-e89b-12d3-a456-426614174000" {
				found = &r
			}
		}
		if found == nil {
			t.Fatal("accepted push not recorded")
		}
		if found.Address != apnsTestToken || string(found.Body) != payload || found.Headers["apns-topic"] != "com.example.app" {
			t.Fatalf("recorded %+v", found)
		}
		for _, r := range a.Recorder.All() {
			for _, v := range r.Headers {
				if strings.Contains(v, good) {
					t.Fatal("recorder kept the bearer token")
				}
			}
		}
	})
}

func TestAPNsSandboxLatencyHonoursClientCancel(t *testing.T) {
	a, err := NewAPNs(APNsOptions{RecordLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	a.Faults.Add(Fault{Match: "5103", Latency: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL()+"/3/device/5103"+apnsTestToken[4:], bytes.NewReader([]byte(`{"aps":{}}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("apns-topic", "t")
	start := time.Now()
	resp, err := apnsTestClient(a).Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("status %d, want the deadline to win", resp.StatusCode)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("took %v", el)
	}
	if a.Recorder.Count() != 0 {
		t.Fatalf("recorded %d requests, want 0 (the client gave up)", a.Recorder.Count())
	}
}

func TestAPNsSandboxClientCertificate(t *testing.T) {
	tests := []struct {
		name      string
		certified bool
		wantErr   bool
	}{
		{name: "without a client certificate the handshake fails", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAPNs(APNsOptions{ClientCAs: mustPoolOf(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			req, _ := http.NewRequest(http.MethodPost, a.URL()+"/3/device/"+apnsTestToken, strings.NewReader(`{"aps":{}}`))
			req.Header.Set("apns-topic", "t")
			resp, err := apnsTestClient(a).Do(req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil {
				resp.Body.Close()
			}
		})
	}
}

func mustPoolOf(t *testing.T) *x509.CertPool {
	t.Helper()
	_, _, pemBytes, err := loopbackCert()
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pemBytes) {
		t.Fatal("append CA")
	}
	return p
}
