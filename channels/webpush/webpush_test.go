package webpush_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/channels/webpush"
)

type vapidKeys struct{ pub, priv string }

func newVAPIDKeys(t testing.TB) vapidKeys {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := k.Bytes()
	p, _ := k.PublicKey.Bytes()
	return vapidKeys{pub: base64.RawURLEncoding.EncodeToString(p), priv: base64.RawURLEncoding.EncodeToString(d)}
}

type rig struct {
	sb     *sandbox.WebPush
	keys   vapidKeys
	sender *webpush.Sender
	cfg    webpush.Config
}

func newRig(t testing.TB, sbOpts sandbox.WebPushOptions, opts ...webpush.Option) *rig {
	t.Helper()
	keys := newVAPIDKeys(t)
	if sbOpts.ApplicationServerKey == "bind" {
		sbOpts.ApplicationServerKey = keys.pub
	}
	sb, err := sandbox.NewWebPush(sbOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	cfg := webpush.Config{
		VAPIDPublicKey:  keys.pub,
		VAPIDPrivateKey: keys.priv,
		Subscriber:      "mailto:ops@notifyd.test",
		TLS:             channels.TLS{RootCAs: sb.CertPool()},
		Timeout:         5 * time.Second,
		AllowPlainHTTP:  true,
		AllowNetworks:   []string{"127.0.0.0/8", "::1"}, // the sandbox is on loopback
	}
	s, err := webpush.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{sb: sb, keys: keys, sender: s, cfg: cfg}
}

func (r *rig) subscribe(t testing.TB, name string, plain bool) channels.Subscription {
	t.Helper()
	sub, err := r.sb.NewNamedSubscription(name, plain)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func message(sub channels.Subscription, content channels.WebPushContent) *channels.Message {
	return &channels.Message{ID: "m-" + sub.Endpoint[len(sub.Endpoint)-6:], Subscription: &sub, WebPush: &content}
}

func sendOne(t testing.TB, s *webpush.Sender, ctx context.Context, m *channels.Message) channels.Result {
	t.Helper()
	res := s.Send(ctx, []*channels.Message{m})
	if len(res) != 1 {
		t.Fatalf("got %d results for 1 message", len(res))
	}
	return res[0]
}

func TestSendDeliversDecryptableContent(t *testing.T) {
	now := time.Now()
	r := newRig(t, sandbox.WebPushOptions{ApplicationServerKey: "bind"}, webpush.WithClock(func() time.Time { return now }))
	content := channels.WebPushContent{Title: "Sale \u2014 50% off", Body: "Ends <tonight> & \"soon\"", Icon: "https://cdn.test/i.png", URL: "https://shop.test/sale?x=1&y=2", Tag: "sale-2026"}
	tests := []struct {
		name        string
		plain       bool
		high        bool
		deadline    time.Time
		tag         string
		wantTTL     string
		wantUrgency string
		wantTopic   string
		wantProto   string
	}{
		{name: "https endpoint over HTTP/2, default TTL", wantTTL: "86400", wantUrgency: "normal", tag: "sale-2026", wantTopic: "sale-2026", wantProto: "HTTP/2.0"},
		{name: "plain http endpoint", plain: true, wantTTL: "86400", wantUrgency: "normal", tag: "sale-2026", wantTopic: "sale-2026", wantProto: "HTTP/1.1"},
		{name: "high urgency and deadline shortens TTL", high: true, deadline: now.Add(90 * time.Second), wantTTL: "90", wantUrgency: "high", tag: "sale-2026", wantTopic: "sale-2026"},
		{name: "tag too long for Topic is omitted", tag: strings.Repeat("a", 33), wantTTL: "86400", wantUrgency: "normal"},
		{name: "tag outside base64url is omitted", tag: "sale 2026", wantTTL: "86400", wantUrgency: "normal"},
		{name: "no tag no Topic", wantTTL: "86400", wantUrgency: "normal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r.sb.Recorder.Reset()
			sub := r.subscribe(t, "ok", tc.plain)
			c := content
			c.Tag = tc.tag
			m := message(sub, c)
			m.High = tc.high
			m.Deadline = tc.deadline
			res := sendOne(t, r.sender, context.Background(), m)
			if res.Err != nil {
				t.Fatalf("send: %v", res.Err)
			}
			if !strings.Contains(res.ProviderID, "/m/ok-") {
				t.Fatalf("ProviderID = %q, want the push service's Location", res.ProviderID)
			}
			got := r.sb.Recorder.All()
			if len(got) != 1 {
				t.Fatalf("sandbox recorded %d requests, want 1", len(got))
			}
			rec := got[0]
			if rec.Status != http.StatusCreated || rec.Address != sub.Endpoint[strings.LastIndexByte(sub.Endpoint, '/')+1:] {
				t.Fatalf("recorded status %d address %q", rec.Status, rec.Address)
			}
			var payload map[string]string
			if err := json.Unmarshal(rec.Body, &payload); err != nil {
				t.Fatalf("decrypted body %q is not JSON: %v", rec.Body, err)
			}
			want := map[string]string{"title": c.Title, "body": c.Body, "icon": c.Icon, "url": c.URL}
			if c.Tag != "" {
				want["tag"] = c.Tag
			}
			if len(payload) != len(want) {
				t.Fatalf("payload %v, want %v", payload, want)
			}
			for k, v := range want {
				if payload[k] != v {
					t.Errorf("payload[%q] = %q, want %q", k, payload[k], v)
				}
			}
			checks := map[string]string{
				"TTL": tc.wantTTL, "Urgency": tc.wantUrgency, "Topic": tc.wantTopic, "Content-Encoding": "aes128gcm",
				"vapid.sub": "mailto:ops@notifyd.test",
				"vapid.aud": sub.Endpoint[:strings.Index(sub.Endpoint, "/push/")],
			}
			if tc.wantProto != "" {
				checks["proto"] = tc.wantProto
			}
			for k, v := range checks {
				if rec.Headers[k] != v {
					t.Errorf("header %s = %q, want %q", k, rec.Headers[k], v)
				}
			}
			exp, _ := strconv.ParseInt(rec.Headers["vapid.exp"], 10, 64)
			if left := time.Unix(exp, 0).Sub(now); left <= 6*time.Hour || left > 24*time.Hour {
				t.Errorf("VAPID exp %s from now", left)
			}
		})
	}
}

func TestSendClassifiesPushServiceAnswers(t *testing.T) {
	r := newRig(t, sandbox.WebPushOptions{})
	tests := []struct {
		name       string
		fault      sandbox.Fault
		expire     bool
		unknown    bool
		reason     channels.Reason
		permanent  bool
		code       string
		retryAfter time.Duration
	}{
		{name: "404 is a dead subscription", fault: sandbox.Fault{Status: 404}, reason: channels.ReasonDeadAddress, permanent: true, code: "404"},
		{name: "410 is a dead subscription", fault: sandbox.Fault{Status: 410}, reason: channels.ReasonDeadAddress, permanent: true, code: "410"},
		{name: "expired subscription answers 410", expire: true, reason: channels.ReasonDeadAddress, permanent: true, code: "410"},
		{name: "unknown subscription answers 404", unknown: true, reason: channels.ReasonDeadAddress, permanent: true, code: "404"},
		{name: "413 is invalid", fault: sandbox.Fault{Status: 413}, reason: channels.ReasonInvalid, permanent: true, code: "413"},
		{name: "400 is invalid", fault: sandbox.Fault{Status: 400}, reason: channels.ReasonInvalid, permanent: true, code: "400"},
		{name: "401 is a VAPID problem", fault: sandbox.Fault{Status: 401}, reason: channels.ReasonAuth, permanent: true, code: "401"},
		{name: "403 is a VAPID problem", fault: sandbox.Fault{Status: 403}, reason: channels.ReasonAuth, permanent: true, code: "403"},
		{name: "429 carries Retry-After", fault: sandbox.Fault{Status: 429, RetryAfter: 7 * time.Second}, reason: channels.ReasonRateLimited, code: "429", retryAfter: 7 * time.Second},
		{name: "429 without Retry-After", fault: sandbox.Fault{Status: 429}, reason: channels.ReasonRateLimited, code: "429"},
		{name: "500 is unavailable", fault: sandbox.Fault{Status: 500}, reason: channels.ReasonUnavailable, code: "500"},
		{name: "503 with Retry-After", fault: sandbox.Fault{Status: 503, RetryAfter: 30 * time.Second}, reason: channels.ReasonUnavailable, code: "503", retryAfter: 30 * time.Second},
		{name: "other 4xx is rejected", fault: sandbox.Fault{Status: 422}, reason: channels.ReasonRejected, permanent: true, code: "422"},
		{name: "redirect is not followed", fault: sandbox.Fault{Status: 307}, reason: channels.ReasonRejected, permanent: true, code: "307"},
		{name: "dropped connection is a network error", fault: sandbox.Fault{Drop: true}, reason: channels.ReasonNetwork},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := "case" + strconv.Itoa(i)
			sub := r.subscribe(t, name, false)
			if tc.fault != (sandbox.Fault{}) {
				f := tc.fault
				f.Match = name + "-*"
				r.sb.Faults.Add(f)
			}
			if tc.expire && !r.sb.Expire(sub.Endpoint) {
				t.Fatal("expire: subscription not found")
			}
			if tc.unknown {
				sub.Endpoint += "x"
			}
			before := r.sb.Recorder.Count()
			res := sendOne(t, r.sender, context.Background(), message(sub, channels.WebPushContent{Title: "t"}))
			ce := channelstest.RequireReason(t, res.Err, tc.reason, tc.permanent)
			if ce.Code != tc.code {
				t.Errorf("code = %q, want %q", ce.Code, tc.code)
			}
			if ce.RetryAfter != tc.retryAfter {
				t.Errorf("RetryAfter = %s, want %s", ce.RetryAfter, tc.retryAfter)
			}
			if got := r.sb.Recorder.Count() - before; got != 1 {
				t.Errorf("push service saw %d requests, want exactly 1 (no retry inside Send)", got)
			}
			if tc.reason == channels.ReasonDeadAddress && !channels.IsDeadAddress(res.Err) {
				t.Error("IsDeadAddress = false")
			}
		})
	}
}

func TestSendRejectsWithoutRequest(t *testing.T) {
	r := newRig(t, sandbox.WebPushOptions{})
	good := r.subscribe(t, "good", false)
	now := time.Now()
	type mut func(m *channels.Message)
	tests := []struct {
		name   string
		mutate mut
		reason channels.Reason
		code   string
	}{
		{name: "no content", mutate: func(m *channels.Message) { m.WebPush = nil }, reason: channels.ReasonInvalid, code: "no_content"},
		{name: "no subscription", mutate: func(m *channels.Message) { m.Subscription = nil }, reason: channels.ReasonInvalid, code: "no_subscription"},
		{name: "p256dh not base64", mutate: func(m *channels.Message) { m.Subscription.P256dh = "***" }, reason: channels.ReasonInvalid, code: "bad_subscription_keys"},
		{name: "p256dh wrong length", mutate: func(m *channels.Message) { m.Subscription.P256dh = m.Subscription.P256dh[:40] }, reason: channels.ReasonInvalid, code: "bad_subscription_keys"},
		{name: "auth wrong length", mutate: func(m *channels.Message) { m.Subscription.Auth = "AAAA" }, reason: channels.ReasonInvalid, code: "bad_subscription_keys"},
		{name: "endpoint not a URL", mutate: func(m *channels.Message) { m.Subscription.Endpoint = "https://[::1" }, reason: channels.ReasonInvalid, code: "bad_endpoint"},
		{name: "endpoint scheme", mutate: func(m *channels.Message) { m.Subscription.Endpoint = "ftp://127.0.0.1/push/x" }, reason: channels.ReasonInvalid, code: "bad_endpoint"},
		{name: "endpoint with user info", mutate: func(m *channels.Message) {
			m.Subscription.Endpoint = strings.Replace(m.Subscription.Endpoint, "https://", "https://u:p@", 1)
		}, reason: channels.ReasonInvalid, code: "bad_endpoint"},
		{name: "payload over 3993 bytes", mutate: func(m *channels.Message) { m.WebPush.Body = strings.Repeat("x", webpush.MaxPayload) }, reason: channels.ReasonInvalid, code: "payload_too_large"},
		{name: "deadline passed", mutate: func(m *channels.Message) { m.Deadline = now.Add(-time.Second) }, reason: channels.ReasonExpired, code: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sub := good
			m := message(sub, channels.WebPushContent{Title: "t"})
			tc.mutate(m)
			before := r.sb.Recorder.Count()
			res := sendOne(t, r.sender, context.Background(), m)
			ce := channelstest.RequireReason(t, res.Err, tc.reason, true)
			if ce.Code != tc.code {
				t.Errorf("code = %q, want %q", ce.Code, tc.code)
			}
			if got := r.sb.Recorder.Count() - before; got != 0 {
				t.Errorf("push service saw %d requests, want none", got)
			}
		})
	}
}

func TestSendEndpointPolicy(t *testing.T) {
	loopback := []string{"127.0.0.0/8", "::1"}
	keys := newVAPIDKeys(t)
	sb, err := sandbox.NewWebPush(sandbox.WebPushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	https, _ := sb.NewNamedSubscription("h", false)
	plain, _ := sb.NewNamedSubscription("p", true)
	tests := []struct {
		name      string
		allowed   []string
		plainOK   bool
		networks  []string
		sub       channels.Subscription
		wantError bool
		wantCode  string
	}{
		{name: "https allowed by exact host", allowed: []string{"127.0.0.1"}, networks: loopback, sub: https},
		{name: "host outside allow-list", allowed: []string{"fcm.googleapis.com", "*.push.apple.com"}, networks: loopback, sub: https, wantError: true},
		{name: "plain http refused by default", networks: loopback, sub: plain, wantError: true},
		{name: "plain http when allowed", plainOK: true, networks: loopback, sub: plain},
		{name: "loopback endpoint refused by the network guard", sub: https, wantError: true, wantCode: "blocked_destination"},
		{name: "endpoint name resolving to loopback refused at dial", sub: channels.Subscription{Endpoint: strings.Replace(https.Endpoint, "127.0.0.1", "localhost", 1), P256dh: https.P256dh, Auth: https.Auth}, wantError: true, wantCode: "blocked_destination"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := webpush.New(webpush.Config{VAPIDPublicKey: keys.pub, VAPIDPrivateKey: keys.priv, Subscriber: "https://notifyd.test/contact",
				TLS: channels.TLS{RootCAs: sb.CertPool()}, AllowedHosts: tc.allowed, AllowPlainHTTP: tc.plainOK, AllowNetworks: tc.networks})
			if err != nil {
				t.Fatal(err)
			}
			before := sb.Recorder.Count()
			res := sendOne(t, s, context.Background(), message(tc.sub, channels.WebPushContent{Title: "t"}))
			if tc.wantError {
				ce := channelstest.RequireReason(t, res.Err, channels.ReasonInvalid, true)
				want := tc.wantCode
				if want == "" {
					want = "bad_endpoint"
				}
				if ce.Code != want || sb.Recorder.Count() != before {
					t.Fatalf("code %q, %d requests", ce.Code, sb.Recorder.Count()-before)
				}
				return
			}
			if res.Err != nil {
				t.Fatal(res.Err)
			}
		})
	}
}

// TestSendRealVAPIDRejections lets the sandbox's own checks refuse us, not an
// injected status: a subscription bound to another key, and a clock so far
// ahead that the token's exp is more than 24 hours out for the push service.
func TestSendRealVAPIDRejections(t *testing.T) {
	other := newVAPIDKeys(t)
	tests := []struct {
		name   string
		sbOpts sandbox.WebPushOptions
		clock  func() time.Time
		code   string
	}{
		{name: "subscription bound to another application server key", sbOpts: sandbox.WebPushOptions{ApplicationServerKey: other.pub}, code: "403"},
		{name: "our clock two days ahead", clock: func() time.Time { return time.Now().Add(48 * time.Hour) }, code: "401"},
		{name: "our clock a day behind gives an expired token", clock: func() time.Time { return time.Now().Add(-24 * time.Hour) }, code: "401"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []webpush.Option
			logger, logs := channelstest.NewLogger()
			opts = append(opts, webpush.WithLogger(logger))
			if tc.clock != nil {
				opts = append(opts, webpush.WithClock(tc.clock))
			}
			r := newRig(t, tc.sbOpts, opts...)
			for range 3 {
				res := sendOne(t, r.sender, context.Background(), message(r.subscribe(t, "v", false), channels.WebPushContent{Title: "t"}))
				ce := channelstest.RequireReason(t, res.Err, channels.ReasonAuth, true)
				if ce.Code != tc.code {
					t.Fatalf("code = %q, want %q (%v)", ce.Code, tc.code, ce)
				}
			}
			if n := strings.Count(logs.String(), "refused our VAPID credentials"); n != 1 {
				t.Fatalf("auth failure logged %d times, want once:\n%s", n, logs)
			}
		})
	}
}

func TestSendContext(t *testing.T) {
	tests := []struct {
		name      string
		latency   time.Duration
		timeout   time.Duration // Config.Timeout
		ctx       func() (context.Context, context.CancelFunc)
		reason    channels.Reason
		permanent bool
	}{
		{name: "already canceled", ctx: func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, reason: channels.ReasonCanceled},
		{name: "canceled while the push service is slow", latency: 10 * time.Second, ctx: func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}, reason: channels.ReasonCanceled},
		{name: "caller deadline passes while the push service is slow", latency: 10 * time.Second, ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, reason: channels.ReasonExpired, permanent: true},
		{name: "request timeout is a network error", latency: 10 * time.Second, timeout: 50 * time.Millisecond, ctx: func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}, reason: channels.ReasonNetwork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, sandbox.WebPushOptions{})
			s := r.sender
			if tc.timeout > 0 {
				cfg := r.cfg
				cfg.Timeout = tc.timeout
				var err error
				if s, err = webpush.New(cfg); err != nil {
					t.Fatal(err)
				}
			}
			if tc.latency > 0 {
				r.sb.Faults.Add(sandbox.Fault{Match: "slow-*", Latency: tc.latency})
			}
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			res := sendOne(t, s, ctx, message(r.subscribe(t, "slow", false), channels.WebPushContent{Title: "t"}))
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("Send took %s; it did not respect cancellation", took)
			}
			channelstest.RequireReason(t, res.Err, tc.reason, tc.permanent)
		})
	}
}

func TestSendBatchOrderAndParallelism(t *testing.T) {
	var inFlight, peak atomic.Int64
	r := newRig(t, sandbox.WebPushOptions{}, webpush.WithParallelism(4))
	// The sandbox's latency fault makes requests overlap; peak concurrency is
	// observed through a counting RoundTripper.
	r.sb.Faults.Add(sandbox.Fault{Match: "slow-*", Latency: 20 * time.Millisecond})
	base := &http.Transport{TLSClientConfig: mustTLS(t, r.sb), ForceAttemptHTTP2: true}
	counting := &http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		return base.RoundTrip(req)
	})}
	s, err := webpush.New(r.cfg, webpush.WithParallelism(4), webpush.WithHTTPClient(counting))
	if err != nil {
		t.Fatal(err)
	}
	r.sb.Faults.Add(sandbox.Fault{Match: "dead-*", Status: 410})
	var batch []*channels.Message
	wantDead := map[int]bool{}
	for i := range 12 {
		name := "slow"
		if i%3 == 1 {
			name = "dead"
			wantDead[i] = true
		}
		m := message(r.subscribe(t, name, false), channels.WebPushContent{Title: "n" + strconv.Itoa(i)})
		if i == 5 {
			m.WebPush = nil
		}
		batch = append(batch, m)
	}
	res := s.Send(context.Background(), batch)
	if len(res) != len(batch) {
		t.Fatalf("%d results for %d messages", len(res), len(batch))
	}
	for i, rr := range res {
		switch {
		case i == 5:
			channelstest.RequireReason(t, rr.Err, channels.ReasonInvalid, true)
		case wantDead[i]:
			channelstest.RequireReason(t, rr.Err, channels.ReasonDeadAddress, true)
		case rr.Err != nil:
			t.Errorf("result %d: %v", i, rr.Err)
		}
	}
	if p := peak.Load(); p < 2 || p > 4 {
		t.Fatalf("peak concurrency %d, want 2..4", p)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func mustTLS(t testing.TB, sb *sandbox.WebPush) *tls.Config {
	t.Helper()
	c, err := channels.TLS{RootCAs: sb.CertPool()}.Config()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSendLeaksNoSecret(t *testing.T) {
	logger, logs := channelstest.NewLogger()
	r := newRig(t, sandbox.WebPushOptions{}, webpush.WithLogger(logger))
	r.sb.Faults.Add(sandbox.Fault{Match: "e429-*", Status: 429, RetryAfter: time.Second})
	r.sb.Faults.Add(sandbox.Fault{Match: "e401-*", Status: 401})
	r.sb.Faults.Add(sandbox.Fault{Match: "e500-*", Status: 500, Reason: "internal"})
	r.sb.Faults.Add(sandbox.Fault{Match: "drop-*", Drop: true})
	var batch []*channels.Message
	var secrets = []string{r.keys.priv}
	for _, name := range []string{"ok", "e429", "e401", "e500", "drop", "dead"} {
		sub := r.subscribe(t, name, false)
		if name == "dead" {
			r.sb.Expire(sub.Endpoint)
		}
		secrets = append(secrets, sub.Auth, sub.Endpoint[strings.LastIndexByte(sub.Endpoint, '/')+1:])
		batch = append(batch, message(sub, channels.WebPushContent{Title: "hello"}))
	}
	bad := r.subscribe(t, "bad", false)
	bad.Auth = bad.Auth[:len(bad.Auth)-2]
	secrets = append(secrets, bad.Auth)
	batch = append(batch, message(bad, channels.WebPushContent{Title: "x"}))

	res := r.sender.Send(context.Background(), batch)
	if res[0].Err != nil {
		t.Fatalf("success path failed: %v", res[0].Err)
	}
	texts := channelstest.ErrorTexts(res)
	if len(texts) != len(batch)-1 {
		t.Fatalf("%d errors, want %d", len(texts), len(batch)-1)
	}
	// A bad private key in config must not echo either.
	_, err := webpush.New(webpush.Config{VAPIDPublicKey: r.keys.pub, VAPIDPrivateKey: r.keys.priv + "!", Subscriber: "mailto:a@b.test"})
	if err == nil {
		t.Fatal("New accepted a corrupt private key")
	}
	// A caller printing or logging the Config must not leak it either.
	logger.Info("configured", "config", r.cfg)
	texts = append(texts, err.Error(), fmt.Sprintf("%v %+v %#v %s", r.cfg, r.cfg, r.cfg, r.cfg), logs.String())
	channelstest.AssertNoSecret(t, secrets, texts...)
	if !strings.Contains(logs.String(), "vapid_private_key=[redacted]") {
		t.Fatalf("config not logged through LogValue:\n%s", logs)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	keys := newVAPIDKeys(t)
	valid := webpush.Config{VAPIDPublicKey: keys.pub, VAPIDPrivateKey: keys.priv, Subscriber: "mailto:ops@notifyd.test"}
	tests := []struct {
		name    string
		mutate  func(*webpush.Config)
		opts    []webpush.Option
		wantErr string
	}{
		{name: "valid", mutate: func(*webpush.Config) {}},
		{name: "missing private key", mutate: func(c *webpush.Config) { c.VAPIDPrivateKey = "" }, wantErr: "private key is required"},
		{name: "swapped keys", mutate: func(c *webpush.Config) { c.VAPIDPublicKey, c.VAPIDPrivateKey = c.VAPIDPrivateKey, c.VAPIDPublicKey }, wantErr: "VAPID private key"},
		{name: "bare subscriber", mutate: func(c *webpush.Config) { c.Subscriber = "ops@notifyd.test" }, wantErr: "mailto: or https://"},
		{name: "negative TTL", mutate: func(c *webpush.Config) { c.TTL = -time.Second }, wantErr: "negative TTL"},
		{name: "negative timeout", mutate: func(c *webpush.Config) { c.Timeout = -time.Second }, wantErr: "negative timeout"},
		{name: "allowed host with path", mutate: func(c *webpush.Config) { c.AllowedHosts = []string{"fcm.googleapis.com/fcm"} }, wantErr: "allowed host"},
		{name: "allowed host wildcard in the middle", mutate: func(c *webpush.Config) { c.AllowedHosts = []string{"push.*.com"} }, wantErr: "allowed host"},
		{name: "allowed host wildcard subdomain", mutate: func(c *webpush.Config) { c.AllowedHosts = []string{"*.push.apple.com"} }},
		{name: "missing CA file", mutate: func(c *webpush.Config) { c.TLS.CAFile = "/nonexistent/ca.pem" }, wantErr: "read CA bundle"},
		{name: "zero parallelism", mutate: func(*webpush.Config) {}, opts: []webpush.Option{webpush.WithParallelism(0)}, wantErr: "parallelism"},
		{name: "padding too large", mutate: func(*webpush.Config) {}, opts: []webpush.Option{webpush.WithPadding(5000)}, wantErr: "padding"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.mutate(&cfg)
			s, err := webpush.New(cfg, tc.opts...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.Name() != channels.WebPush {
					t.Fatalf("Name = %q", s.Name())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "check webpush config: ") {
				t.Fatalf("err %q lacks the verb-object prefix", err)
			}
		})
	}
}

func TestSendPadding(t *testing.T) {
	tests := []struct {
		name     string
		block    int
		wantBody int64
	}{
		// 86-byte header + plaintext (17) + delimiter + padding + 16-byte tag.
		{name: "unpadded by default", block: 0, wantBody: 86 + 17 + 1 + 16},
		{name: "padded to 256", block: 256, wantBody: 86 + 256 + 1 + 16},
		{name: "padded to 16", block: 16, wantBody: 86 + 32 + 1 + 16},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, sandbox.WebPushOptions{})
			var size atomic.Int64
			base := &http.Transport{TLSClientConfig: mustTLS(t, r.sb)}
			client := &http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
				size.Store(req.ContentLength)
				return base.RoundTrip(req)
			})}
			s, err := webpush.New(r.cfg, webpush.WithPadding(tc.block), webpush.WithHTTPClient(client))
			if err != nil {
				t.Fatal(err)
			}
			res := sendOne(t, s, context.Background(), message(r.subscribe(t, "pad", false), channels.WebPushContent{Title: "short"}))
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			got := r.sb.Recorder.All()
			if len(got) != 1 || string(got[0].Body) != `{"title":"short"}` {
				t.Fatalf("recorded %+v", got)
			}
			if size.Load() != tc.wantBody {
				t.Fatalf("body is %d bytes, want %d", size.Load(), tc.wantBody)
			}
		})
	}
}
