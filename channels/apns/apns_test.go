package apns

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/channels/sandbox"
)

const (
	testTopic  = "com.example.app"
	testKeyID  = "KEY1234567"
	testTeamID = "TEAM123456"
	goodToken  = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
)

// tokenWith returns a valid-looking device token starting with prefix, so
// sandbox faults can match it.
func tokenWith(prefix string) string { return prefix + goodToken[len(prefix):] }

type rig struct {
	fake   *sandbox.APNs
	sender *Sender
	logs   *channelstest.LogBuffer
	keyPEM []byte
	now    *fakeClock
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newP8(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// newRig starts a token-auth sandbox and a Sender pointed at it. The sandbox
// checks JWTs against the real clock (apns2 signs with time.Now); the
// Sender's injected clock drives deadlines and token-refresh decisions.
func newRig(t testing.TB, opts ...Option) *rig {
	t.Helper()
	key, keyPEM := newP8(t)
	fake, err := sandbox.NewAPNs(sandbox.APNsOptions{TokenKey: &key.PublicKey, KeyID: testKeyID, TeamID: testTeamID})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	logger, logs := channelstest.NewLogger()
	clock := &fakeClock{t: time.Now()}
	opts = append([]Option{WithLogger(logger), WithClock(clock.Now)}, opts...)
	s, err := New(Config{
		Topic: testTopic, Host: fake.URL(), KeyID: testKeyID, TeamID: testTeamID, Key: keyPEM,
		TLS: channels.TLS{RootCAs: fake.CertPool()},
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return &rig{fake: fake, sender: s, logs: logs, keyPEM: keyPEM, now: clock}
}

// forEachTransport runs the test body against both clients, so they are
// held to the same behaviour.
func forEachTransport(t *testing.T, body func(t *testing.T, tr Transport)) {
	for _, tr := range []Transport{TransportDirect, TransportAPNs2} {
		t.Run(string(tr), func(t *testing.T) { body(t, tr) })
	}
}

func alert(to string) *channels.Message {
	return &channels.Message{ID: "m-" + to[:8], To: to, Push: &channels.Push{Title: "Hi", Body: "there"}}
}

func TestSendSuccessFieldByField(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		r := newRig(t, WithTransport(tr))
		badge := 3
		deadline := r.now.Now().Add(2 * time.Hour).Truncate(time.Second)
		tests := []struct {
			name        string
			msg         *channels.Message
			wantHeaders map[string]string
			absent      []string
			wantBody    map[string]any
		}{
			{
				name: "alert with everything",
				msg: &channels.Message{
					ID: "c1/u1/apns/0", IdempotencyKey: "c1/u1/apns", To: goodToken, High: true, Deadline: deadline,
					Push: &channels.Push{
						Title: "Sale \"now\"", Body: "50% off\ntoday", Sound: "default", Badge: &badge,
						DeepLink: "app://sale", ImageURL: "https://img.example/x.png",
						Data: json.RawMessage(`{"campaign":"c1","n":1,"nested":{"aps":1}}`), CollapseID: "sale", ThreadID: "promos",
					},
				},
				wantHeaders: map[string]string{
					"apns-topic": testTopic, "apns-push-type": "alert", "apns-priority": "10",
					"apns-expiration": strconv.FormatInt(deadline.Unix(), 10), "apns-collapse-id": "sale",
					"apns-id": apnsID("c1/u1/apns"), "authorization": "bearer [redacted]",
				},
				wantBody: map[string]any{
					"aps": map[string]any{
						"alert": map[string]any{"title": "Sale \"now\"", "body": "50% off\ntoday"},
						"badge": 3.0, "sound": "default", "thread-id": "promos", "mutable-content": 1.0,
					},
					"link": "app://sale", "image": "https://img.example/x.png",
					"campaign": "c1", "n": 1.0, "nested": map[string]any{"aps": 1.0},
				},
			},
			{
				name:        "background push is priority 5 with content-available and a bare topic",
				msg:         &channels.Message{ID: "bg", To: tokenWith("b0"), High: true, Push: &channels.Push{PushType: "background", Data: json.RawMessage(`{"sync":true}`)}},
				wantHeaders: map[string]string{"apns-topic": testTopic, "apns-push-type": "background", "apns-priority": "5"},
				absent:      []string{"apns-expiration", "apns-collapse-id", "apns-id"},
				wantBody:    map[string]any{"aps": map[string]any{"content-available": 1.0}, "sync": true},
			},
			{
				name:        "voip push gets the .voip topic",
				msg:         &channels.Message{ID: "voip", To: tokenWith("c0"), Push: &channels.Push{PushType: "voip", Body: "call"}},
				wantHeaders: map[string]string{"apns-topic": testTopic + ".voip", "apns-push-type": "voip", "apns-priority": "5"},
				wantBody:    map[string]any{"aps": map[string]any{"alert": map[string]any{"body": "call"}}},
			},
			{
				name:        "collapse id over 64 bytes is dropped, not sent",
				msg:         &channels.Message{ID: "long", To: tokenWith("d0"), Push: &channels.Push{Title: "t", CollapseID: strings.Repeat("x", 65)}},
				wantHeaders: map[string]string{"apns-push-type": "alert"},
				absent:      []string{"apns-collapse-id"},
				wantBody:    map[string]any{"aps": map[string]any{"alert": map[string]any{"title": "t"}}},
			},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r.fake.Recorder.Reset()
				res := r.sender.Send(context.Background(), []*channels.Message{tc.msg})
				if len(res) != 1 || res[0].Err != nil {
					t.Fatalf("results = %+v", res)
				}
				got := r.fake.Recorder.All()
				if len(got) != 1 {
					t.Fatalf("sandbox received %d pushes, want 1", len(got))
				}
				rec := got[0]
				if rec.Address != tc.msg.To || rec.Status != http.StatusOK {
					t.Fatalf("address/status = %s/%d", rec.Address, rec.Status)
				}
				if res[0].ProviderID == "" || res[0].ProviderID != rec.Headers["apns-id"] && rec.Headers["apns-id"] != "" {
					t.Fatalf("ProviderID = %q, sent apns-id %q", res[0].ProviderID, rec.Headers["apns-id"])
				}
				for k, want := range tc.wantHeaders {
					if rec.Headers[k] != want {
						t.Errorf("header %s = %q, want %q", k, rec.Headers[k], want)
					}
				}
				for _, k := range tc.absent {
					if v, ok := rec.Headers[k]; ok {
						t.Errorf("header %s = %q, want absent", k, v)
					}
				}
				var body map[string]any
				if err := json.Unmarshal(rec.Body, &body); err != nil {
					t.Fatalf("body %s: %v", rec.Body, err)
				}
				wantJSON, _ := json.Marshal(tc.wantBody)
				gotJSON, _ := json.Marshal(body)
				if string(gotJSON) != string(wantJSON) {
					t.Fatalf("body\n got %s\nwant %s", gotJSON, wantJSON)
				}
			})
		}
	})
}

func TestSendErrorClasses(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		r := newRig(t, WithTransport(tr))
		faults := []sandbox.Fault{
			{Match: "10*", Status: 410, Reason: "Unregistered"},
			{Match: "11*", Status: 410, Reason: "ExpiredToken"},
			{Match: "20*", Status: 400, Reason: "BadDeviceToken"},
			{Match: "21*", Status: 400, Reason: "DeviceTokenNotForTopic"},
			{Match: "22*", Status: 400, Reason: "BadTopic"},
			{Match: "23*", Status: 400, Reason: "MissingTopic"},
			{Match: "24*", Status: 413, Reason: "PayloadTooLarge"},
			{Match: "30*", Status: 403, Reason: "InvalidProviderToken"},
			{Match: "31*", Status: 403, Reason: "BadCertificate"},
			{Match: "32*", Status: 403, Reason: "ExpiredProviderToken"},
			{Match: "40*", Status: 429, Reason: "TooManyRequests", RetryAfter: 7 * time.Second},
			{Match: "41*", Status: 429, Reason: "TooManyProviderTokenUpdates"},
			{Match: "50*", Status: 500, Reason: "InternalServerError"},
			{Match: "51*", Status: 503, Reason: "ServiceUnavailable", RetryAfter: 30 * time.Second},
			{Match: "60*", Drop: true},
			{Match: "70*", Status: 405, Reason: "MethodNotAllowed"},
		}
		for _, f := range faults {
			r.fake.Faults.Add(f)
		}
		tests := []struct {
			name      string
			to        string
			reason    channels.Reason
			permanent bool
			code      string
			retry     time.Duration
		}{
			{"410 unregistered is a dead address", tokenWith("10"), channels.ReasonDeadAddress, true, "Unregistered", 0},
			{"410 expired token is a dead address", tokenWith("11"), channels.ReasonDeadAddress, true, "ExpiredToken", 0},
			{"400 bad device token is a dead address", tokenWith("20"), channels.ReasonDeadAddress, true, "BadDeviceToken", 0},
			{"400 token not for topic is a dead address", tokenWith("21"), channels.ReasonDeadAddress, true, "DeviceTokenNotForTopic", 0},
			{"400 bad topic is invalid", tokenWith("22"), channels.ReasonInvalid, true, "BadTopic", 0},
			{"400 missing topic is invalid", tokenWith("23"), channels.ReasonInvalid, true, "MissingTopic", 0},
			{"413 is invalid", tokenWith("24"), channels.ReasonInvalid, true, "PayloadTooLarge", 0},
			{"403 invalid provider token is auth", tokenWith("30"), channels.ReasonAuth, true, "InvalidProviderToken", 0},
			{"403 bad certificate is auth", tokenWith("31"), channels.ReasonAuth, true, "BadCertificate", 0},
			{"403 expired provider token is transient auth", tokenWith("32"), channels.ReasonAuth, false, "ExpiredProviderToken", 0},
			{"429 carries Retry-After", tokenWith("40"), channels.ReasonRateLimited, false, "TooManyRequests", 7 * time.Second},
			{"429 token updates is rate limited", tokenWith("41"), channels.ReasonRateLimited, false, "TooManyProviderTokenUpdates", 0},
			{"500 is unavailable", tokenWith("50"), channels.ReasonUnavailable, false, "InternalServerError", 0},
			{"503 carries Retry-After", tokenWith("51"), channels.ReasonUnavailable, false, "ServiceUnavailable", 30 * time.Second},
			{"reset stream is a network error", tokenWith("60"), channels.ReasonNetwork, false, "", 0},
			{"405 is rejected", tokenWith("70"), channels.ReasonRejected, true, "MethodNotAllowed", 0},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				res := r.sender.Send(context.Background(), []*channels.Message{alert(tc.to)})
				ce := channelstest.RequireReason(t, res[0].Err, tc.reason, tc.permanent)
				if ce.Code != tc.code {
					t.Errorf("Code = %q, want %q", ce.Code, tc.code)
				}
				if ce.RetryAfter != tc.retry {
					t.Errorf("RetryAfter = %v, want %v", ce.RetryAfter, tc.retry)
				}
				if tc.reason == channels.ReasonDeadAddress && !channels.IsDeadAddress(res[0].Err) {
					t.Error("IsDeadAddress = false")
				}
				if strings.Contains(res[0].Err.Error(), tc.to) {
					t.Errorf("error text repeats the device token: %v", res[0].Err)
				}
			})
		}
	})
}

func TestSendRejectsLocallyWithoutARequest(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		r := newRig(t, WithTransport(tr))
		tests := []struct {
			name      string
			msg       *channels.Message
			reason    channels.Reason
			permanent bool
			code      string
		}{
			{"no push content", &channels.Message{ID: "x", To: goodToken}, channels.ReasonInvalid, true, ""},
			{"empty token", &channels.Message{ID: "x", Push: &channels.Push{Title: "t"}}, channels.ReasonInvalid, true, "MissingDeviceToken"},
			{"token not hex is a dead address", &channels.Message{ID: "x", To: "zz" + goodToken[2:], Push: &channels.Push{Title: "t"}}, channels.ReasonDeadAddress, true, "BadDeviceToken"},
			{"token of odd length is a dead address", &channels.Message{ID: "x", To: goodToken[1:], Push: &channels.Push{Title: "t"}}, channels.ReasonDeadAddress, true, "BadDeviceToken"},
			{"deadline passed", &channels.Message{ID: "x", To: goodToken, Deadline: r.now.Now().Add(-time.Second), Push: &channels.Push{Title: "t"}}, channels.ReasonExpired, true, ""},
			{"payload over 4 KiB", &channels.Message{ID: "x", To: goodToken, Push: &channels.Push{Body: strings.Repeat("é", 2100)}}, channels.ReasonInvalid, true, "PayloadTooLarge"},
			{"data not an object", &channels.Message{ID: "x", To: goodToken, Push: &channels.Push{Title: "t", Data: json.RawMessage(`[1,2]`)}}, channels.ReasonInvalid, true, ""},
			{"data sets aps", &channels.Message{ID: "x", To: goodToken, Push: &channels.Push{Title: "t", Data: json.RawMessage(`{"aps":{}}`)}}, channels.ReasonInvalid, true, ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				before := r.fake.Recorder.Count()
				res := r.sender.Send(context.Background(), []*channels.Message{tc.msg})
				ce := channelstest.RequireReason(t, res[0].Err, tc.reason, tc.permanent)
				if ce.Code != tc.code {
					t.Errorf("Code = %q, want %q", ce.Code, tc.code)
				}
				if n := r.fake.Recorder.Count() - before; n != 0 {
					t.Fatalf("sandbox received %d requests, want none", n)
				}
			})
		}
	})
}

func TestSendBatchKeepsOrderAndSpreadsOverConnections(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		r := newRig(t, WithTransport(tr), WithConnections(3), WithMaxInFlight(64))
		r.fake.Faults.Add(sandbox.Fault{Match: "dead*", Status: 410, Reason: "Unregistered"})
		r.fake.Faults.Add(sandbox.Fault{Match: "5e5e*", Latency: 20 * time.Millisecond})
		batch := make([]*channels.Message, 300)
		for i := range batch {
			prefix := "5e5e"
			if i%7 == 0 {
				prefix = "dead"
			}
			tok := prefix + strconv.FormatInt(int64(1000+i), 16) + goodToken[len(prefix)+3:]
			batch[i] = &channels.Message{ID: strconv.Itoa(i), IdempotencyKey: "k" + strconv.Itoa(i), To: tok, Push: &channels.Push{Title: "t"}}
		}
		res := r.sender.Send(context.Background(), batch)
		if len(res) != len(batch) {
			t.Fatalf("%d results for %d messages", len(res), len(batch))
		}
		for i, rr := range res {
			switch {
			case i%7 == 0 && !channels.IsDeadAddress(rr.Err):
				t.Fatalf("result %d = %v, want dead address", i, rr.Err)
			case i%7 != 0 && rr.Err != nil:
				t.Fatalf("result %d = %v", i, rr.Err)
			case i%7 != 0 && rr.ProviderID != apnsID(batch[i].IdempotencyKey):
				t.Fatalf("result %d ProviderID %q, want the apns-id of its own message", i, rr.ProviderID)
			}
		}
		if got := r.fake.Connections(); got != 3 {
			t.Fatalf("sandbox saw %d connections, want 3", got)
		}
	})
}

// A slow push must not hold up the others behind it: a Send worker keeps
// many pushes in flight and collects whichever are answered.
func TestSlowPushDoesNotHoldUpOthers(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		r := newRig(t, WithTransport(tr), WithConnections(1), WithMaxInFlight(8))
		r.fake.Faults.Add(sandbox.Fault{Match: "5105*", Latency: 2 * time.Second})
		batch := []*channels.Message{alert(tokenWith("5105"))}
		for i := range 50 {
			batch = append(batch, alert(tokenWith(fmt.Sprintf("f%03x", i))))
		}
		done := make(chan []channels.Result, 1)
		go func() { done <- r.sender.Send(context.Background(), batch) }()
		deadline := time.Now().Add(1800 * time.Millisecond)
		for r.fake.Recorder.Count() < 50 {
			if time.Now().After(deadline) {
				t.Fatalf("only %d of 50 fast pushes answered while the slow one was pending", r.fake.Recorder.Count())
			}
			time.Sleep(time.Millisecond) // polling the sandbox, not synchronising
		}
		for i, res := range <-done {
			if res.Err != nil {
				t.Fatalf("push %d: %v", i, res.Err)
			}
		}
	})
}

func TestSendContext(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		r := newRig(t, WithTransport(tr))
		r.fake.Faults.Add(sandbox.Fault{Match: "510*", Latency: time.Minute})
		tests := []struct {
			name      string
			ctx       func() (context.Context, context.CancelFunc)
			to        string
			reason    channels.Reason
			permanent bool
		}{
			{"already canceled", func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			}, goodToken, channels.ReasonCanceled, false},
			{"deadline hits a slow answer", func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 150*time.Millisecond)
			}, tokenWith("510"), channels.ReasonExpired, true},
			{"canceled while in flight", func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				go func() {
					deadline := time.Now().Add(5 * time.Second)
					for time.Now().Before(deadline) && !inFlight(r.sender) {
						time.Sleep(time.Millisecond) // polling for the push to be in flight, not waiting for a result
					}
					cancel()
				}()
				return ctx, cancel
			}, tokenWith("510"), channels.ReasonCanceled, false},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := tc.ctx()
				defer cancel()
				start := time.Now()
				res := r.sender.Send(ctx, []*channels.Message{alert(tc.to), alert(tc.to)})
				for _, rr := range res {
					channelstest.RequireReason(t, rr.Err, tc.reason, tc.permanent)
				}
				if el := time.Since(start); el > 10*time.Second {
					t.Fatalf("Send took %v after ctx ended", el)
				}
			})
		}
	})
}

func inFlight(s *Sender) bool {
	for _, c := range s.conns {
		if c.inFlight.Load() > 0 {
			return true
		}
	}
	return false
}

func TestExpiredProviderTokenRefreshesOnlyAfterMinimumInterval(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		r := newRig(t, WithTransport(tr))
		r.fake.Faults.Add(sandbox.Fault{Match: "32*", Status: 403, Reason: "ExpiredProviderToken"})
		tok := r.sender.token
		tests := []struct {
			name        string
			advance     time.Duration
			wantRefresh bool
		}{
			{"fresh token is kept (Apple limits refreshes to one per 20 minutes)", 0, false},
			{"token older than 20 minutes is re-signed", 25 * time.Minute, true},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r.now.Add(tc.advance)
				tok.Lock()
				tok.IssuedAt = r.now.Now().Add(-tc.advance).Unix()
				tok.Unlock()
				res := r.sender.Send(context.Background(), []*channels.Message{alert(tokenWith("32"))})
				channelstest.RequireReason(t, res[0].Err, channels.ReasonAuth, false)
				tok.Lock()
				refreshed := tok.IssuedAt == 0
				tok.Unlock()
				if refreshed != tc.wantRefresh {
					t.Fatalf("refreshed = %v, want %v", refreshed, tc.wantRefresh)
				}
				if tc.wantRefresh {
					// The next push signs a new JWT, which the sandbox verifies.
					res := r.sender.Send(context.Background(), []*channels.Message{alert(goodToken)})
					if res[0].Err != nil {
						t.Fatalf("push after refresh: %v", res[0].Err)
					}
					tok.Lock()
					defer tok.Unlock()
					if tok.IssuedAt == 0 {
						t.Fatal("token was not re-signed")
					}
				}
			})
		}
	})
}

func TestWrongKeyIsAuthError(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		key, _ := newP8(t)
		fake, err := sandbox.NewAPNs(sandbox.APNsOptions{TokenKey: &key.PublicKey, KeyID: testKeyID, TeamID: testTeamID})
		if err != nil {
			t.Fatal(err)
		}
		defer fake.Close()
		_, otherPEM := newP8(t)
		s, err := New(Config{Topic: testTopic, Host: fake.URL(), KeyID: testKeyID, TeamID: testTeamID, Key: otherPEM, TLS: channels.TLS{RootCAs: fake.CertPool()}}, WithTransport(tr))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		res := s.Send(context.Background(), []*channels.Message{alert(goodToken)})
		ce := channelstest.RequireReason(t, res[0].Err, channels.ReasonAuth, true)
		if ce.Code != "InvalidProviderToken" {
			t.Fatalf("Code = %q", ce.Code)
		}
	})
}

// newClientCert issues a client certificate from a fresh CA and returns the
// CA pool and the certificate+key as one PEM (the usual APNs .pem layout).
func newClientCert(t *testing.T) (*x509.CertPool, []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Apple Push Services: " + testTopic}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	return pool, out
}

func TestCertificateAuth(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		pool, certPEM := newClientCert(t)
		_, strangerPEM := newClientCert(t)
		fake, err := sandbox.NewAPNs(sandbox.APNsOptions{ClientCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		defer fake.Close()
		file := filepath.Join(t.TempDir(), "push.pem")
		if err := os.WriteFile(file, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name      string
			cfg       Config
			wantErr   bool
			reason    channels.Reason
			permanent bool
		}{
			{name: "pem bytes", cfg: Config{Certificate: certPEM}},
			{name: "pem file", cfg: Config{CertificateFile: file}},
			{name: "certificate from another CA fails the handshake", cfg: Config{Certificate: strangerPEM}, wantErr: true, reason: channels.ReasonNetwork},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				cfg := tc.cfg
				cfg.Topic, cfg.Host, cfg.TLS = testTopic, fake.URL(), channels.TLS{RootCAs: fake.CertPool()}
				s, err := New(cfg, WithTransport(tr))
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				res := s.Send(context.Background(), []*channels.Message{alert(goodToken)})
				if !tc.wantErr {
					if res[0].Err != nil {
						t.Fatal(res[0].Err)
					}
					return
				}
				channelstest.RequireReason(t, res[0].Err, tc.reason, tc.permanent)
			})
		}
	})
}

func TestNewValidatesConfig(t *testing.T) {
	_, keyPEM := newP8(t)
	dir := t.TempDir()
	tests := []struct {
		name    string
		cfg     Config
		opts    []Option
		wantErr string
	}{
		{"no topic", Config{KeyID: "k", TeamID: "t", Key: keyPEM}, nil, "Topic"},
		{"no auth", Config{Topic: testTopic}, nil, "exactly one of token auth"},
		{"both auths", Config{Topic: testTopic, KeyID: "k", TeamID: "t", Key: keyPEM, Certificate: []byte("x")}, nil, "exactly one of token auth"},
		{"token without team", Config{Topic: testTopic, KeyID: "k", Key: keyPEM}, nil, "KeyID and TeamID"},
		{"token without key", Config{Topic: testTopic, KeyID: "k", TeamID: "t"}, nil, "Key or KeyFile"},
		{"key and key file", Config{Topic: testTopic, KeyID: "k", TeamID: "t", Key: keyPEM, KeyFile: "x"}, nil, "not both"},
		{"key not PEM", Config{Topic: testTopic, KeyID: "k", TeamID: "t", Key: []byte("garbage")}, nil, "parse apns .p8 key"},
		{"key file missing", Config{Topic: testTopic, KeyID: "k", TeamID: "t", KeyFile: filepath.Join(dir, "none.p8")}, nil, "read apns key file"},
		{"certificate garbage", Config{Topic: testTopic, Certificate: []byte("garbage")}, nil, "load apns certificate"},
		{"host not https", Config{Topic: testTopic, KeyID: "k", TeamID: "t", Key: keyPEM, Host: "http://127.0.0.1:1"}, nil, "Host must look like"},
		{"host with path", Config{Topic: testTopic, KeyID: "k", TeamID: "t", Key: keyPEM, Host: "https://127.0.0.1:1/3/device"}, nil, "Host must look like"},
		{"zero connections", Config{Topic: testTopic, KeyID: "k", TeamID: "t", Key: keyPEM}, []Option{WithConnections(0)}, "connections must be"},
		{"unknown transport", Config{Topic: testTopic, KeyID: "k", TeamID: "t", Key: keyPEM}, []Option{WithTransport("http3")}, "transport must be"},
		{"bad CA file", Config{Topic: testTopic, KeyID: "k", TeamID: "t", Key: keyPEM, TLS: channels.TLS{CAFile: filepath.Join(dir, "none.pem")}}, nil, "read CA bundle"},
		{"production default", Config{Topic: testTopic, KeyID: "k", TeamID: "t", Key: keyPEM, Production: true}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg, tc.opts...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.host != "https://api.push.apple.com" || s.Name() != channels.APNs {
					t.Fatalf("host %q name %q", s.host, s.Name())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
			}
			channelstest.AssertNoSecret(t, []string{string(keyPEM[30:90])}, err.Error())
		})
	}
}

func TestNoSecretLeaks(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		r := newRig(t, WithTransport(tr))
		r.fake.Faults.Add(sandbox.Fault{Match: "40*", Status: 429, Reason: "TooManyRequests", RetryAfter: time.Second})
		r.fake.Faults.Add(sandbox.Fault{Match: "30*", Status: 403, Reason: "InvalidProviderToken"})
		r.fake.Faults.Add(sandbox.Fault{Match: "60*", Drop: true})
		batch := []*channels.Message{alert(goodToken), alert(tokenWith("40")), alert(tokenWith("30")), alert(tokenWith("60")), {ID: "bad", To: "nothex!", Push: &channels.Push{}}}
		res := r.sender.Send(context.Background(), batch)
		r.sender.token.Lock()
		bearer := r.sender.token.Bearer
		r.sender.token.Unlock()
		if bearer == "" {
			t.Fatal("no bearer to look for")
		}
		keyBody := strings.Join(strings.Split(string(r.keyPEM), "\n")[1:3], "")
		texts := append(channelstest.ErrorTexts(res), r.logs.String())
		if len(texts) < 5 {
			t.Fatalf("expected 4 errors and a log, got %d texts", len(texts))
		}
		var records []string
		for _, rec := range r.fake.Recorder.All() {
			for _, v := range rec.Headers {
				records = append(records, v)
			}
		}
		channelstest.AssertNoSecret(t, []string{bearer, keyBody}, append(texts, records...)...)
		if !strings.Contains(r.logs.String(), "InvalidProviderToken") {
			t.Fatalf("auth failure not logged: %s", r.logs.String())
		}

		// Certificate auth with a password: the password never shows either.
		_, err := New(Config{Topic: testTopic, Certificate: []byte("not a p12"), CertificatePassword: "hunter2-secret"})
		if err == nil {
			t.Fatal("want an error")
		}
		channelstest.AssertNoSecret(t, []string{"hunter2-secret"}, err.Error())
	})
}

// The sandbox's certificate is trusted only through channels.TLS; without
// it the handshake fails and the push is a (transient) network error.
func TestUntrustedSandboxIsANetworkError(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		r := newRig(t, WithTransport(tr))
		s, err := New(Config{Topic: testTopic, Host: r.fake.URL(), KeyID: testKeyID, TeamID: testTeamID, Key: r.keyPEM, TLS: channels.TLS{RootCAs: x509.NewCertPool()}}, WithTransport(tr))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		res := s.Send(context.Background(), []*channels.Message{alert(goodToken)})
		ce := channelstest.RequireReason(t, res[0].Err, channels.ReasonNetwork, false)
		var verr *tls.CertificateVerificationError
		if !strings.Contains(ce.Error(), "certificate") && !errors.As(ce, &verr) {
			t.Fatalf("error %v does not mention the certificate", ce)
		}
	})
}
