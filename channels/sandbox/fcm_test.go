package sandbox

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func fcmTestClient(f *FCM) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: twilioTestTLS(f.CertPool()), ForceAttemptHTTP2: true}, Timeout: 5 * time.Second}
}

// fcmTestAssertion signs a JWT-bearer assertion like x/oauth2/jwt does.
func fcmTestAssertion(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT"})
	cl, _ := json.Marshal(claims)
	signing := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(cl)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestFCMSandboxTokenEndpoint(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f, err := NewFCM(FCMOptions{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sa map[string]string
	if err := json.Unmarshal(f.ServiceAccountJSON(), &sa); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(sa["private_key"]))
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := map[string]any{"iss": sa["client_email"], "scope": "https://www.googleapis.com/auth/firebase.messaging",
		"aud": sa["token_uri"], "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for kk, vv := range good {
			c[kk] = vv
		}
		c[k] = v
		return c
	}
	tests := []struct {
		name      string
		grant     string
		assertion string
		wantCode  int
		wantErr   string
	}{
		{name: "valid assertion", assertion: fcmTestAssertion(t, key, good), wantCode: 200},
		{name: "wrong grant type", grant: "client_credentials", assertion: fcmTestAssertion(t, key, good), wantCode: 400, wantErr: "unsupported_grant_type"},
		{name: "foreign key", assertion: fcmTestAssertion(t, other, good), wantCode: 400, wantErr: "invalid JWT signature"},
		{name: "expired", assertion: fcmTestAssertion(t, key, with("exp", now.Add(-time.Minute).Unix())), wantCode: 400, wantErr: "expiry"},
		{name: "wrong audience", assertion: fcmTestAssertion(t, key, with("aud", "https://oauth2.googleapis.com/token")), wantCode: 400, wantErr: "audience"},
		{name: "missing scope", assertion: fcmTestAssertion(t, key, with("scope", "email")), wantCode: 400, wantErr: "scope"},
		{name: "garbage", assertion: "not.a.jwt.at.all", wantCode: 400, wantErr: "not a JWT"},
	}
	c := fcmTestClient(f)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			grant := tc.grant
			if grant == "" {
				grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
			}
			resp, err := c.PostForm(f.URL()+"/token", url.Values{"grant_type": {grant}, "assertion": {tc.assertion}})
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.wantErr) {
				t.Fatalf("got %d %s, want %d containing %q", resp.StatusCode, body, tc.wantCode, tc.wantErr)
			}
			if tc.wantCode == 200 && !strings.Contains(string(body), `"access_token":"ya29.sandbox-`) {
				t.Fatalf("no access token in %s", body)
			}
		})
	}
}

func TestFCMSandboxSend(t *testing.T) {
	f, err := NewFCM(FCMOptions{AccessToken: "static-token"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Faults.Add(Fault{Match: "dead-*", Reason: "UNREGISTERED"})
	f.Faults.Add(Fault{Match: "busy-*", Reason: "QUOTA_EXCEEDED", RetryAfter: 1500 * time.Millisecond, Times: 1})
	c := fcmTestClient(f)
	sendURL := f.Endpoint() + "/projects/" + f.ProjectID() + "/messages:send"
	tests := []struct {
		name       string
		url        string
		auth       string
		body       string
		wantStatus int
		wantInBody string
		wantRetry  string
	}{
		{name: "accepted", body: `{"message":{"token":"tok-1","data":{"k":"v"}}}`, wantStatus: 200, wantInBody: `"name":"projects/sandbox-project/messages/0:`},
		{name: "validate only", body: `{"validate_only":true,"message":{"token":"tok-1"}}`, wantStatus: 200, wantInBody: "fake_message_id"},
		{name: "no bearer", auth: "-", body: `{"message":{"token":"tok-1"}}`, wantStatus: 401, wantInBody: `"status":"UNAUTHENTICATED"`},
		{name: "other project", url: f.Endpoint() + "/projects/nope/messages:send", body: `{"message":{"token":"t"}}`, wantStatus: 404, wantInBody: "NOT_FOUND"},
		{name: "bad json", body: `{"message":`, wantStatus: 400, wantInBody: "INVALID_ARGUMENT"},
		{name: "two targets", body: `{"message":{"token":"t","topic":"news"}}`, wantStatus: 400, wantInBody: "Exactly one of"},
		{name: "reserved key", body: `{"message":{"token":"t","data":{"google.sent_time":"1"}}}`, wantStatus: 400, wantInBody: "Invalid data payload key"},
		{name: "too big", body: `{"message":{"token":"t","data":{"k":"` + strings.Repeat("x", 4100) + `"}}}`, wantStatus: 400, wantInBody: "Message is too big"},
		{name: "bad ttl", body: `{"message":{"token":"t","android":{"ttl":"soon"}}}`, wantStatus: 400, wantInBody: "android.ttl"},
		{name: "unregistered envelope", body: `{"message":{"token":"dead-1"}}`, wantStatus: 404,
			wantInBody: `"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]`},
		{name: "quota with retry-after", body: `{"message":{"token":"busy-1"}}`, wantStatus: 429, wantInBody: `"status":"RESOURCE_EXHAUSTED"`, wantRetry: "2"},
		{name: "fault used up", body: `{"message":{"token":"busy-1"}}`, wantStatus: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.url
			if u == "" {
				u = sendURL
			}
			req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(tc.body))
			if tc.auth != "-" {
				req.Header.Set("Authorization", "Bearer static-token")
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(body), tc.wantInBody) {
				t.Fatalf("got %d %s, want %d containing %q", resp.StatusCode, body, tc.wantStatus, tc.wantInBody)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.wantRetry {
				t.Errorf("Retry-After = %q, want %q", got, tc.wantRetry)
			}
			if resp.ProtoMajor != 2 {
				t.Errorf("proto = %s, want HTTP/2", resp.Proto)
			}
		})
	}
	recs := f.Recorder.All()
	if len(recs) == 0 || recs[0].Address != "tok-1" || recs[0].Status != 200 {
		t.Fatalf("recorder = %+v", recs)
	}
}
