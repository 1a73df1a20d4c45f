package sandbox

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// RFC 8291 Appendix A: the user agent's keys and the message the
// application server produced for it.
const (
	webPushRFCUAPrivate = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
	webPushRFCAuth      = "BTBZMqHH6r4Tts7J_aSIgg"
	webPushRFCBody      = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
	webPushRFCPlain     = "When I grow up, I want to be a watermelon"
)

func webPushB64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWebPushDecryptRFC8291(t *testing.T) {
	ua, err := ecdh.P256().NewPrivateKey(webPushB64(t, webPushRFCUAPrivate))
	if err != nil {
		t.Fatal(err)
	}
	auth := webPushB64(t, webPushRFCAuth)
	body := webPushB64(t, webPushRFCBody)
	flipped := bytes.Clone(body)
	flipped[len(flipped)-1] ^= 1
	shortRS := bytes.Clone(body)
	shortRS[16], shortRS[17], shortRS[18], shortRS[19] = 0, 0, 0, 20
	tests := []struct {
		name    string
		body    []byte
		auth    []byte
		want    string
		wantErr string
	}{
		{name: "appendix A message", body: body, auth: auth, want: webPushRFCPlain},
		{name: "tampered tag", body: flipped, auth: auth, wantErr: "tag does not verify"},
		{name: "wrong auth secret", body: body, auth: make([]byte, 16), wantErr: "tag does not verify"},
		{name: "truncated header", body: body[:20], auth: auth, wantErr: "shorter than the aes128gcm header"},
		{name: "record larger than rs", body: shortRS, auth: auth, wantErr: "single record"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := webPushDecrypt(tc.body, ua, tc.auth)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("plaintext %q, want %q", got, tc.want)
			}
		})
	}
}

// webPushTestSigner makes VAPID headers by hand so the sandbox's checks are
// tested without the sender under test.
type webPushTestSigner struct {
	key *ecdsa.PrivateKey
	pub string
}

func newWebPushTestSigner(t testing.TB) webPushTestSigner {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := k.PublicKey.Bytes()
	return webPushTestSigner{key: k, pub: base64.RawURLEncoding.EncodeToString(p)}
}

func (s webPushTestSigner) header(t testing.TB, alg string, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"typ": "JWT", "alg": alg})
	c, _ := json.Marshal(claims)
	signing := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	d := sha256.Sum256([]byte(signing))
	r, ss, err := ecdsa.Sign(rand.Reader, s.key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return "vapid t=" + signing + "." + base64.RawURLEncoding.EncodeToString(sig[:]) + ", k=" + s.pub
}

func TestWebPushServiceChecks(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	signer := newWebPushTestSigner(t)
	stranger := newWebPushTestSigner(t)
	w, err := NewWebPush(WebPushOptions{ApplicationServerKey: signer.pub, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	sub, err := w.NewNamedSubscription("checks", true)
	if err != nil {
		t.Fatal(err)
	}
	id := sub.Endpoint[strings.LastIndexByte(sub.Endpoint, '/')+1:]
	// Replace the minted keys by the RFC's, so the Appendix A body decrypts.
	ua, _ := ecdh.P256().NewPrivateKey(webPushB64(t, webPushRFCUAPrivate))
	w.mu.Lock()
	w.subs[id] = &webPushSub{key: ua, auth: webPushB64(t, webPushRFCAuth)}
	w.mu.Unlock()

	origin := w.PlainURL()
	good := map[string]any{"aud": origin, "exp": now.Add(12 * time.Hour).Unix(), "sub": "mailto:ops@notifyd.test"}
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for kk, vv := range good {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	body := webPushB64(t, webPushRFCBody)
	tests := []struct {
		name       string
		path       string
		auth       string
		ttl        string
		encoding   string
		urgency    string
		topic      string
		body       []byte
		wantStatus int
		wantPlain  string
	}{
		{name: "valid push", auth: signer.header(t, "ES256", good), ttl: "60", body: body, wantStatus: 201, wantPlain: webPushRFCPlain},
		{name: "valid with urgency and topic", auth: signer.header(t, "ES256", good), ttl: "0", urgency: "high", topic: "abc_-1", body: body, wantStatus: 201, wantPlain: webPushRFCPlain},
		{name: "unknown subscription", path: "/push/nobody", auth: signer.header(t, "ES256", good), ttl: "60", body: body, wantStatus: 404},
		{name: "no Authorization", ttl: "60", body: body, wantStatus: 401},
		{name: "legacy WebPush scheme", auth: strings.Replace(signer.header(t, "ES256", good), "vapid ", "WebPush ", 1), ttl: "60", body: body, wantStatus: 401},
		{name: "aud of another origin", auth: signer.header(t, "ES256", with("aud", "https://fcm.googleapis.com")), ttl: "60", body: body, wantStatus: 401},
		{name: "expired token", auth: signer.header(t, "ES256", with("exp", now.Add(-time.Minute).Unix())), ttl: "60", body: body, wantStatus: 401},
		{name: "exp more than 24h away", auth: signer.header(t, "ES256", with("exp", now.Add(25*time.Hour).Unix())), ttl: "60", body: body, wantStatus: 401},
		{name: "sub missing", auth: signer.header(t, "ES256", with("sub", nil)), ttl: "60", body: body, wantStatus: 401},
		{name: "alg not ES256", auth: signer.header(t, "HS256", with("exp", now.Add(13*time.Hour).Unix())), ttl: "60", body: body, wantStatus: 401},
		{name: "signature by another key", auth: strings.Replace(stranger.header(t, "ES256", with("exp", now.Add(14*time.Hour).Unix())), stranger.pub, signer.pub, 1), ttl: "60", body: body, wantStatus: 401},
		{name: "key not bound to the subscription", auth: stranger.header(t, "ES256", good), ttl: "60", body: body, wantStatus: 403},
		{name: "TTL missing", auth: signer.header(t, "ES256", good), body: body, wantStatus: 400},
		{name: "TTL negative", auth: signer.header(t, "ES256", good), ttl: "-1", body: body, wantStatus: 400},
		{name: "bad urgency", auth: signer.header(t, "ES256", good), ttl: "60", urgency: "urgent", body: body, wantStatus: 400},
		{name: "topic too long", auth: signer.header(t, "ES256", good), ttl: "60", topic: strings.Repeat("a", 33), body: body, wantStatus: 400},
		{name: "legacy aesgcm encoding", auth: signer.header(t, "ES256", good), ttl: "60", encoding: "aesgcm", body: body, wantStatus: 400},
		{name: "body over 4096 bytes", auth: signer.header(t, "ES256", good), ttl: "60", body: make([]byte, 4097), wantStatus: 413},
		{name: "body that does not decrypt", auth: signer.header(t, "ES256", good), ttl: "60", body: append(bytes.Clone(body[:len(body)-1]), body[len(body)-1]^1), wantStatus: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w.Recorder.Reset()
			path := tc.path
			if path == "" {
				path = "/push/" + id
			}
			req, _ := http.NewRequest(http.MethodPost, origin+path, bytes.NewReader(tc.body))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			if tc.ttl != "" {
				req.Header.Set("TTL", tc.ttl)
			}
			enc := tc.encoding
			if enc == "" {
				enc = "aes128gcm"
			}
			req.Header.Set("Content-Encoding", enc)
			if tc.urgency != "" {
				req.Header.Set("Urgency", tc.urgency)
			}
			if tc.topic != "" {
				req.Header.Set("Topic", tc.topic)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, msg, tc.wantStatus)
			}
			recs := w.Recorder.All()
			if len(recs) != 1 || recs[0].Status != tc.wantStatus {
				t.Fatalf("recorded %+v", recs)
			}
			if tc.wantStatus != 201 {
				var env struct {
					Code    int    `json:"code"`
					Errno   int    `json:"errno"`
					Message string `json:"message"`
				}
				if err := json.Unmarshal(msg, &env); err != nil || env.Code != tc.wantStatus || env.Message == "" {
					t.Fatalf("error envelope %s (%v)", msg, err)
				}
				return
			}
			if string(recs[0].Body) != tc.wantPlain {
				t.Fatalf("decrypted %q, want %q", recs[0].Body, tc.wantPlain)
			}
			if resp.Header.Get("Location") == "" {
				t.Fatal("201 without Location")
			}
		})
	}
}

func TestWebPushFaults(t *testing.T) {
	w, err := NewWebPush(WebPushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	w.Faults.Add(Fault{Match: "limited-*", Status: 429, RetryAfter: 1500 * time.Millisecond, Times: 1})
	w.Faults.Add(Fault{Match: "gone-*", Status: 410, Reason: "push subscription has unsubscribed or expired"})
	w.Faults.Add(Fault{Match: "drop-*", Drop: true})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: w.CertPool()}, ForceAttemptHTTP2: true}}
	tests := []struct {
		name           string
		sub            string
		wantStatus     int
		wantRetryAfter string
		wantErr        bool
	}{
		// Faults answer before VAPID and decryption, so an empty POST suffices.
		{name: "429 with Retry-After rounded up to seconds", sub: "limited", wantStatus: 429, wantRetryAfter: "2"},
		{name: "fault with Times runs out", sub: "limited", wantStatus: 401},
		{name: "410 with reason", sub: "gone", wantStatus: 410},
		{name: "drop resets the HTTP/2 stream", sub: "drop", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := w.NewNamedSubscription(tc.sub, false)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodPost, s.Endpoint, strings.NewReader(""))
			resp, err := client.Do(req)
			if tc.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("status %d, want a transport error", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || resp.Header.Get("Retry-After") != tc.wantRetryAfter {
				t.Fatalf("status %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			if resp.ProtoMajor != 2 {
				t.Fatalf("HTTPS answered over %s, want HTTP/2", resp.Proto)
			}
		})
	}
}

func TestWebPushSubscriptions(t *testing.T) {
	w, err := NewWebPush(WebPushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	tests := []struct {
		name       string
		sub        string
		plain      bool
		wantPrefix string
		wantErr    bool
	}{
		{name: "random https", wantPrefix: w.URL() + "/push/"},
		{name: "named plain", sub: "dead", plain: true, wantPrefix: w.PlainURL() + "/push/dead-"},
		{name: "name with slash", sub: "a/b", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := w.NewNamedSubscription(tc.sub, tc.plain)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(s.Endpoint, tc.wantPrefix) {
				t.Fatalf("endpoint %q, want prefix %q", s.Endpoint, tc.wantPrefix)
			}
			if p, _ := base64.RawURLEncoding.DecodeString(s.P256dh); len(p) != 65 {
				t.Fatalf("p256dh is %d bytes", len(p))
			}
			if a, _ := base64.RawURLEncoding.DecodeString(s.Auth); len(a) != 16 {
				t.Fatalf("auth is %d bytes", len(a))
			}
			if !w.Expire(s.Endpoint) || w.Expire(s.Endpoint+"x") {
				t.Fatal("Expire did not find exactly the minted subscription")
			}
		})
	}
	if _, err := NewWebPush(WebPushOptions{ApplicationServerKey: "short"}); err == nil {
		t.Fatal("NewWebPush accepted a bad ApplicationServerKey")
	}
}

// FuzzWebPushDecrypt: the fake decrypts whatever a client posts; it must
// reject garbage with an error, never panic, and only accept bodies that
// carry the padding delimiter.
func FuzzWebPushDecrypt(f *testing.F) {
	body, _ := base64.RawURLEncoding.DecodeString(webPushRFCBody)
	f.Add(body)
	f.Add(body[:21])
	f.Add([]byte{})
	ua, _ := ecdh.P256().NewPrivateKey(webPushB64(f, webPushRFCUAPrivate))
	auth := webPushB64(f, webPushRFCAuth)
	f.Fuzz(func(t *testing.T, b []byte) {
		plain, err := webPushDecrypt(b, ua, auth)
		if err == nil && len(plain) > len(b) {
			t.Fatalf("plaintext longer than the body")
		}
	})
}
