package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/channels/webhook"
)

const testSecret = "whsec-0123456789abcdef"

func newSandbox(t testing.TB, opts sandbox.WebhookOptions) *sandbox.Webhook {
	t.Helper()
	if opts.Secret == "" {
		opts.Secret = testSecret
	}
	sb, err := sandbox.NewWebhook(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	return sb
}

func newSender(t testing.TB, cfg webhook.Config, opts ...webhook.Option) *webhook.Sender {
	t.Helper()
	if cfg.Secret == "" {
		cfg.Secret = testSecret
	}
	if cfg.AllowNetworks == nil {
		// The sandbox listens on loopback, which the guard refuses by default.
		cfg.AllowNetworks = []string{"127.0.0.0/8", "::1"}
	}
	quiet, _ := channelstest.NewLogger()
	s, err := webhook.New(cfg, append([]webhook.Option{webhook.WithLogger(quiet)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func hookMsg(id, path string, body string) *channels.Message {
	return &channels.Message{
		ID:             id,
		IdempotencyKey: "idem-" + id,
		To:             "user-" + id,
		Hook:           &channels.Hook{URL: path, Body: []byte(body)},
	}
}

func TestSendSuccess(t *testing.T) {
	sb := newSandbox(t, sandbox.WebhookOptions{})
	fixed := time.Now().Truncate(time.Second)
	s := newSender(t, webhook.Config{URL: sb.URL() + "/default"}, webhook.WithClock(func() time.Time { return fixed }))

	tests := []struct {
		name       string
		msg        *channels.Message
		wantPath   string
		wantMethod string
		wantType   string
	}{
		{
			name:       "default URL and POST",
			msg:        &channels.Message{ID: "m1", IdempotencyKey: "camp1/u1/webhook", Hook: &channels.Hook{Body: []byte(`{"event":"welcome","user":"u1"}`), Headers: map[string]string{"X-Tenant": "acme"}}},
			wantPath:   "/default",
			wantMethod: http.MethodPost,
			wantType:   "application/json",
		},
		{
			name:       "per-message URL and method",
			msg:        &channels.Message{ID: "m2", IdempotencyKey: "camp1/u2/webhook", Hook: &channels.Hook{URL: sb.URL() + "/users/u2?src=notifyd", Method: "put", Body: []byte(`{"n":2}`)}},
			wantPath:   "/users/u2",
			wantMethod: http.MethodPut,
			wantType:   "application/json",
		},
		{
			// Issue 12 item 15: docs/templates.md allows a text body; it
			// was refused for every message as "not valid JSON".
			name:       "text body under its own content type",
			msg:        &channels.Message{ID: "m4", IdempotencyKey: "k4", Hook: &channels.Hook{URL: sb.URL() + "/text", Body: []byte(`hello "ann"`), Headers: map[string]string{"Content-Type": "text/plain; charset=utf-8"}}},
			wantPath:   "/text",
			wantMethod: http.MethodPost,
			wantType:   "text/plain; charset=utf-8",
		},
		{
			// notifyd's User-Agent wins over a template's, as a header the
			// template cannot spoof; names arrive canonical.
			name:       "template headers beside notifyd's",
			msg:        &channels.Message{ID: "m5", IdempotencyKey: "k5", Hook: &channels.Hook{URL: sb.URL() + "/h", Body: []byte(`{}`), Headers: map[string]string{"user-agent": "spoof/1", "x-tenant": "acme", "X-Trace-Id": "t-1"}}},
			wantPath:   "/h",
			wantMethod: http.MethodPost,
			wantType:   "application/json",
		},
		{
			name:       "empty body GET carries no content type",
			msg:        &channels.Message{ID: "m3", IdempotencyKey: "k3", Hook: &channels.Hook{URL: sb.URL() + "/ping", Method: "GET"}},
			wantPath:   "/ping",
			wantMethod: http.MethodGet,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb.Recorder.Reset()
			res := s.Send(context.Background(), []*channels.Message{tc.msg})
			if len(res) != 1 || res[0].Err != nil {
				t.Fatalf("Send = %+v", res)
			}
			got := sb.Recorder.All()
			if len(got) != 1 {
				t.Fatalf("sandbox recorded %d requests, want 1", len(got))
			}
			r := got[0]
			if r.Address != tc.wantPath || r.Headers[":method"] != tc.wantMethod || r.Status != http.StatusOK {
				t.Fatalf("arrived %s %s status %d, want %s %s 200", r.Headers[":method"], r.Address, r.Status, tc.wantMethod, tc.wantPath)
			}
			if string(r.Body) != string(tc.msg.Hook.Body) {
				t.Fatalf("body = %q, want %q", r.Body, tc.msg.Hook.Body)
			}
			if r.Headers["Content-Type"] != tc.wantType {
				t.Fatalf("Content-Type = %q, want %q", r.Headers["Content-Type"], tc.wantType)
			}
			if r.Headers["Idempotency-Key"] != tc.msg.IdempotencyKey {
				t.Fatalf("Idempotency-Key = %q, want %q", r.Headers["Idempotency-Key"], tc.msg.IdempotencyKey)
			}
			sig := r.Headers["X-Notifyd-Signature"]
			if want := webhook.Sign(testSecret, fixed, tc.msg.Hook.Body); sig != want {
				t.Fatalf("signature = %q, want %q", sig, want)
			}
			if err := webhook.Verify(testSecret, sig, r.Body, fixed.Add(time.Second), time.Minute); err != nil {
				t.Fatalf("receiver-side Verify: %v", err)
			}
			if ua := r.Headers["User-Agent"]; ua != "notifyd-webhook/1" {
				t.Fatalf("User-Agent = %q, want notifyd's", ua)
			}
			for k, v := range tc.msg.Hook.Headers {
				k = textproto.CanonicalMIMEHeaderKey(k)
				if k == "User-Agent" {
					continue
				}
				if r.Headers[k] != v {
					t.Fatalf("header %s = %q, want %q", k, r.Headers[k], v)
				}
			}
		})
	}
}

func TestSendErrorClasses(t *testing.T) {
	sb := newSandbox(t, sandbox.WebhookOptions{})
	s := newSender(t, webhook.Config{MaxRetryAfter: 10 * time.Minute})
	tests := []struct {
		name           string
		fault          sandbox.Fault
		secret         string // sender secret override
		wantReason     channels.Reason
		wantPermanent  bool
		wantCode       string
		wantRetryAfter time.Duration
	}{
		{name: "400 rejected", fault: sandbox.Fault{Status: 400, Reason: "bad field"}, wantReason: channels.ReasonRejected, wantPermanent: true, wantCode: "400"},
		{name: "401 auth", fault: sandbox.Fault{Status: 401}, wantReason: channels.ReasonAuth, wantPermanent: true, wantCode: "401"},
		{name: "403 auth", fault: sandbox.Fault{Status: 403}, wantReason: channels.ReasonAuth, wantPermanent: true, wantCode: "403"},
		{name: "404 rejected, not dead by default", fault: sandbox.Fault{Status: 404}, wantReason: channels.ReasonRejected, wantPermanent: true, wantCode: "404"},
		{name: "410 dead address", fault: sandbox.Fault{Status: 410}, wantReason: channels.ReasonDeadAddress, wantPermanent: true, wantCode: "410"},
		{name: "413 invalid", fault: sandbox.Fault{Status: 413}, wantReason: channels.ReasonInvalid, wantPermanent: true, wantCode: "413"},
		{name: "408 transient with Retry-After", fault: sandbox.Fault{Status: 408, RetryAfter: 3 * time.Second}, wantReason: channels.ReasonUnavailable, wantCode: "408", wantRetryAfter: 3 * time.Second},
		{name: "429 rate limited with Retry-After", fault: sandbox.Fault{Status: 429, RetryAfter: 7 * time.Second}, wantReason: channels.ReasonRateLimited, wantCode: "429", wantRetryAfter: 7 * time.Second},
		{name: "429 Retry-After capped", fault: sandbox.Fault{Status: 429, RetryAfter: 48 * time.Hour}, wantReason: channels.ReasonRateLimited, wantCode: "429", wantRetryAfter: 10 * time.Minute},
		{name: "500 unavailable", fault: sandbox.Fault{Status: 500}, wantReason: channels.ReasonUnavailable, wantCode: "500"},
		{name: "501 rejected, as retryablehttp's policy", fault: sandbox.Fault{Status: 501}, wantReason: channels.ReasonRejected, wantPermanent: true, wantCode: "501"},
		{name: "503 with Retry-After", fault: sandbox.Fault{Status: 503, RetryAfter: 5 * time.Second}, wantReason: channels.ReasonUnavailable, wantCode: "503", wantRetryAfter: 5 * time.Second},
		{name: "302 not followed", fault: sandbox.Fault{Status: 302}, wantReason: channels.ReasonRejected, wantPermanent: true, wantCode: "302"},
		{name: "dropped connection is network", fault: sandbox.Fault{Drop: true}, wantReason: channels.ReasonNetwork, wantCode: "network"},
		{name: "bad signature refused", secret: "wrong-secret-value", wantReason: channels.ReasonAuth, wantPermanent: true, wantCode: "401"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := fmt.Sprintf("/case-%d/", i)
			if tc.fault != (sandbox.Fault{}) {
				tc.fault.Match = path
				sb.Faults.Add(tc.fault)
			}
			sender := s
			if tc.secret != "" {
				sender = newSender(t, webhook.Config{Secret: tc.secret})
			}
			sb.Recorder.Reset()
			res := sender.Send(context.Background(), []*channels.Message{hookMsg("x", sb.URL()+path, `{"a":1}`)})
			ce := channelstest.RequireReason(t, res[0].Err, tc.wantReason, tc.wantPermanent)
			if ce.Code != tc.wantCode {
				t.Fatalf("Code = %q, want %q", ce.Code, tc.wantCode)
			}
			if ce.RetryAfter != tc.wantRetryAfter {
				t.Fatalf("RetryAfter = %s, want %s", ce.RetryAfter, tc.wantRetryAfter)
			}
			for _, r := range sb.Recorder.All() {
				if strings.HasPrefix(r.Address, "/redirected") {
					t.Fatalf("redirect was followed to %s", r.Address)
				}
			}
		})
	}
}

// TestUntrustedCertificateIsNotRetried: retryablehttp's retry policy
// (ErrorPropagatedRetryPolicy) decides which transport failures are
// permanent. A receiver whose certificate we do not trust will not be
// trusted on the next attempt either: permanent, not a network error for
// the pool to retry MaxAttempts times.
func TestUntrustedCertificateIsNotRetried(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	s := newSender(t, webhook.Config{})
	res := s.Send(context.Background(), []*channels.Message{hookMsg("x", srv.URL+"/in", `{"a":1}`)})
	ce := channelstest.RequireReason(t, res[0].Err, channels.ReasonNetwork, true)
	if ce.Code != "not_retryable" {
		t.Fatalf("Code = %q, want not_retryable", ce.Code)
	}
}

func TestDeadStatusesConfigurable(t *testing.T) {
	sb := newSandbox(t, sandbox.WebhookOptions{})
	sb.Faults.Add(sandbox.Fault{Match: "/gone-404", Status: 404})
	s := newSender(t, webhook.Config{DeadStatuses: []int{404, 410}})
	res := s.Send(context.Background(), []*channels.Message{hookMsg("a", sb.URL()+"/gone-404", `{}`)})
	channelstest.RequireReason(t, res[0].Err, channels.ReasonDeadAddress, true)
	if !channels.IsDeadAddress(res[0].Err) {
		t.Fatal("IsDeadAddress = false, want true so the pool records feedback")
	}
}

func TestSendInvalid(t *testing.T) {
	sb := newSandbox(t, sandbox.WebhookOptions{})
	now := time.Now()
	s := newSender(t, webhook.Config{AllowedHosts: []string{"127.0.0.1", "*.example.com"}, AllowedSchemes: []string{"http"}, MaxBodyBytes: 64},
		webhook.WithClock(func() time.Time { return now }))
	tests := []struct {
		name       string
		msg        *channels.Message
		wantReason channels.Reason
	}{
		{name: "nil hook", msg: &channels.Message{ID: "a"}, wantReason: channels.ReasonInvalid},
		{name: "no URL anywhere", msg: &channels.Message{ID: "a", Hook: &channels.Hook{Body: []byte(`{}`)}}, wantReason: channels.ReasonInvalid},
		{name: "body not JSON", msg: hookMsg("a", sb.URL()+"/x", `{not json`), wantReason: channels.ReasonInvalid},
		{name: "body too large", msg: hookMsg("a", sb.URL()+"/x", `{"pad":"`+strings.Repeat("x", 100)+`"}`), wantReason: channels.ReasonInvalid},
		{name: "host not allowed", msg: hookMsg("a", "http://evil.test/x", `{}`), wantReason: channels.ReasonInvalid},
		{name: "scheme not allowed", msg: hookMsg("a", "ftp://127.0.0.1/x", `{}`), wantReason: channels.ReasonInvalid},
		{name: "https not allowed here", msg: hookMsg("a", "https://a.example.com/x", `{}`), wantReason: channels.ReasonInvalid},
		{name: "header injection in value", msg: &channels.Message{Hook: &channels.Hook{URL: sb.URL() + "/x", Headers: map[string]string{"X-A": "1\r\nX-Evil: 1"}}}, wantReason: channels.ReasonInvalid},
		{name: "control character in a header value", msg: &channels.Message{Hook: &channels.Hook{URL: sb.URL() + "/x", Headers: map[string]string{"X-A": "1\x01"}}}, wantReason: channels.ReasonInvalid},
		{name: "control character in the idempotency key", msg: &channels.Message{IdempotencyKey: "k\x7f", Hook: &channels.Hook{URL: sb.URL() + "/x"}}, wantReason: channels.ReasonInvalid},
		{name: "bad header name", msg: &channels.Message{Hook: &channels.Hook{URL: sb.URL() + "/x", Headers: map[string]string{"X A": "1"}}}, wantReason: channels.ReasonInvalid},
		{name: "signature header override", msg: &channels.Message{Hook: &channels.Hook{URL: sb.URL() + "/x", Headers: map[string]string{"x-notifyd-signature": "t=1,v1=00"}}}, wantReason: channels.ReasonInvalid},
		{name: "idempotency key override", msg: &channels.Message{Hook: &channels.Hook{URL: sb.URL() + "/x", Headers: map[string]string{"Idempotency-Key": "k"}}}, wantReason: channels.ReasonInvalid},
		{name: "bad method", msg: &channels.Message{Hook: &channels.Hook{URL: sb.URL() + "/x", Method: "GE T"}}, wantReason: channels.ReasonInvalid},
		{name: "expired deadline answered without a request", msg: &channels.Message{Deadline: now.Add(-time.Second), Hook: &channels.Hook{URL: sb.URL() + "/x"}}, wantReason: channels.ReasonExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb.Recorder.Reset()
			res := s.Send(context.Background(), []*channels.Message{tc.msg})
			channelstest.RequireReason(t, res[0].Err, tc.wantReason, true)
			if n := sb.Recorder.Count(); n != 0 {
				t.Fatalf("sandbox received %d requests for an invalid message", n)
			}
		})
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     webhook.Config
		wantErr string
	}{
		{name: "ok minimal", cfg: webhook.Config{}},
		{name: "bad default URL scheme", cfg: webhook.Config{URL: "ftp://x/y"}, wantErr: "scheme"},
		{name: "default URL without host", cfg: webhook.Config{URL: "http:///path"}, wantErr: "no host"},
		{name: "bad method", cfg: webhook.Config{Method: "PO ST"}, wantErr: "method"},
		{name: "bad signature header", cfg: webhook.Config{SignatureHeader: "X Sig"}, wantErr: "signature header"},
		{name: "negative timeout", cfg: webhook.Config{Timeout: -time.Second}, wantErr: "negative"},
		{name: "unknown scheme allowed", cfg: webhook.Config{AllowedSchemes: []string{"gopher"}}, wantErr: "scheme"},
		{name: "allowed host with port", cfg: webhook.Config{AllowedHosts: []string{"a.com:443"}}, wantErr: "allowed host"},
		{name: "dead status outside 4xx", cfg: webhook.Config{DeadStatuses: []int{500}}, wantErr: "dead status"},
		{name: "missing CA file", cfg: webhook.Config{TLS: channels.TLS{CAFile: "/nonexistent/ca.pem"}}, wantErr: "CA bundle"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := webhook.New(tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New err = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestContextAndTimeouts(t *testing.T) {
	sb := newSandbox(t, sandbox.WebhookOptions{})
	sb.Faults.Add(sandbox.Fault{Match: "/slow", Latency: 5 * time.Second})
	tests := []struct {
		name          string
		cfg           webhook.Config
		ctx           func() (context.Context, context.CancelFunc)
		wantReason    channels.Reason
		wantPermanent bool
	}{
		{
			name: "already canceled: no request",
			ctx: func() (context.Context, context.CancelFunc) {
				c, f := context.WithCancel(context.Background())
				f()
				return c, f
			},
			wantReason: channels.ReasonCanceled,
		},
		{
			name: "canceled while waiting for a slow receiver",
			ctx: func() (context.Context, context.CancelFunc) {
				c, f := context.WithCancel(context.Background())
				go func() {
					// Cancel once the request is in flight at the sandbox.
					deadline := time.Now().Add(5 * time.Second)
					for time.Now().Before(deadline) && sb.Connections() == 0 {
						runtimeYield()
					}
					f()
				}()
				return c, f
			},
			wantReason: channels.ReasonCanceled,
		},
		{
			name: "caller deadline passes: expired",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			},
			wantReason:    channels.ReasonExpired,
			wantPermanent: true,
		},
		{
			name:       "request timeout is a transient network error",
			cfg:        webhook.Config{Timeout: 50 * time.Millisecond},
			ctx:        func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			wantReason: channels.ReasonNetwork,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSender(t, tc.cfg)
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			res := s.Send(ctx, []*channels.Message{hookMsg("a", sb.URL()+"/slow", `{}`)})
			if took := time.Since(start); took > 3*time.Second {
				t.Fatalf("Send took %s: it did not stop at the context or timeout", took)
			}
			channelstest.RequireReason(t, res[0].Err, tc.wantReason, tc.wantPermanent)
		})
	}
}

// runtimeYield gives the sender goroutine a chance to dial while polling.
func runtimeYield() { time.Sleep(time.Millisecond) }

func TestBatchOrderAndKeepAliveAfterErrors(t *testing.T) {
	sb := newSandbox(t, sandbox.WebhookOptions{})
	sb.Faults.Add(sandbox.Fault{Match: "/fail/*", Status: 503})
	s := newSender(t, webhook.Config{Concurrency: 4})
	var batch []*channels.Message
	for i := range 200 {
		path := fmt.Sprintf("/ok/%d", i)
		if i%2 == 1 {
			path = fmt.Sprintf("/fail/%d", i)
		}
		batch = append(batch, hookMsg(fmt.Sprint(i), sb.URL()+path, fmt.Sprintf(`{"i":%d}`, i)))
	}
	res := s.Send(context.Background(), batch)
	if len(res) != len(batch) {
		t.Fatalf("got %d results for %d messages", len(res), len(batch))
	}
	for i, r := range res {
		if i%2 == 0 && r.Err != nil {
			t.Fatalf("result %d: %v, want accepted", i, r.Err)
		}
		if i%2 == 1 {
			channelstest.RequireReason(t, r.Err, channels.ReasonUnavailable, false)
		}
	}
	// Every 503 must leave the keep-alive pool intact: retryablehttp closes
	// all idle connections when its CheckRetry asked for a retry it could not
	// make, which would show here as ~100 connections.
	if c := sb.Connections(); c > 8 {
		t.Fatalf("sandbox saw %d connections for 200 requests at concurrency 4: keep-alive broken by errors", c)
	}
}

func TestNoSecretLeaks(t *testing.T) {
	sb := newSandbox(t, sandbox.WebhookOptions{})
	sb.Faults.Add(sandbox.Fault{Match: "/hooks/fail-*", Status: 500, Reason: "upstream broke"})
	sb.Faults.Add(sandbox.Fault{Match: "/hooks/drop-*", Drop: true})
	sb.Faults.Add(sandbox.Fault{Match: "/hooks/redir-*", Status: 301})
	logger, logs := channelstest.NewLogger()
	s := newSender(t, webhook.Config{}, webhook.WithLogger(logger))
	const pathToken, queryToken, password = "pathtok-SECRET-42", "qtok-SECRET-99", "basicpw-SECRET-7"
	base := strings.Replace(sb.URL(), "http://", "http://svc:"+password+"@", 1)
	var batch []*channels.Message
	for _, prefix := range []string{"ok", "fail", "drop", "redir"} {
		batch = append(batch, hookMsg(prefix, base+"/hooks/"+prefix+"-"+pathToken+"?token="+queryToken, `{"x":1}`))
	}
	// A malformed URL with a secret must not echo it either.
	batch = append(batch, hookMsg("bad", "http://[::1"+queryToken, `{}`))
	res := s.Send(context.Background(), batch)
	if res[0].Err != nil {
		t.Fatalf("success path failed: %v", res[0].Err)
	}
	for i := 1; i < len(res); i++ {
		if res[i].Err == nil {
			t.Fatalf("message %d unexpectedly accepted", i)
		}
	}
	texts := append(channelstest.ErrorTexts(res), logs.String())
	channelstest.AssertNoSecret(t, []string{testSecret, pathToken, queryToken, password}, texts...)
	if !strings.Contains(logs.String(), "webhook request failed") {
		t.Fatalf("network failure was not logged: %q", logs.String())
	}
}

func TestConcurrentSendsShareConnections(t *testing.T) {
	sb := newSandbox(t, sandbox.WebhookOptions{})
	s := newSender(t, webhook.Config{URL: sb.URL() + "/hook", Concurrency: 8})
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
	)
	for g := range 4 {
		wg.Go(func() {
			batch := make([]*channels.Message, 50)
			for i := range batch {
				b, _ := json.Marshal(map[string]int{"g": g, "i": i})
				batch[i] = &channels.Message{IdempotencyKey: fmt.Sprintf("%d-%d", g, i), Hook: &channels.Hook{Body: b}}
			}
			for _, r := range s.Send(context.Background(), batch) {
				if r.Err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d sends failed", failed.Load())
	}
	if n := sb.Recorder.Count(); n != 200 {
		t.Fatalf("sandbox recorded %d, want 200", n)
	}
	if sb.BadSignatures() != 0 {
		t.Fatalf("%d bad signatures", sb.BadSignatures())
	}
	var errs []error
	// Dials race at start-up, so allow slack over the 32 concurrent requests;
	// one connection per request would be 200.
	if c := sb.Connections(); c > 64 {
		errs = append(errs, fmt.Errorf("%d connections for 4x8 concurrency", c))
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func TestDestinationGuard(t *testing.T) {
	sb := newSandbox(t, sandbox.WebhookOptions{})
	u, err := url.Parse(sb.URL())
	if err != nil {
		t.Fatal(err)
	}
	byName := "http://localhost:" + u.Port() + "/x"
	tests := []struct {
		name    string
		cfg     webhook.Config
		url     string
		wantErr bool // refused as blocked_destination, nothing received
	}{
		{name: "literal loopback refused by default", cfg: webhook.Config{AllowNetworks: []string{}}, url: sb.URL() + "/x", wantErr: true},
		{name: "name resolving to loopback refused at dial", cfg: webhook.Config{AllowNetworks: []string{}}, url: byName, wantErr: true},
		{name: "cloud metadata address refused", cfg: webhook.Config{AllowNetworks: []string{}}, url: "http://169.254.169.254/latest/meta-data/", wantErr: true},
		{name: "zoned v6 loopback refused", cfg: webhook.Config{AllowNetworks: []string{}}, url: "http://[::1%25lo]:" + u.Port() + "/x", wantErr: true},
		{name: "zoned unique-local refused", cfg: webhook.Config{AllowNetworks: []string{}}, url: "http://[fd00::1%25eth0]:" + u.Port() + "/x", wantErr: true},
		{name: "IPv4-mapped loopback refused", cfg: webhook.Config{AllowNetworks: []string{}}, url: "http://[::ffff:127.0.0.1]:" + u.Port() + "/x", wantErr: true},
		{name: "allowed network lets it through", cfg: webhook.Config{AllowNetworks: []string{"127.0.0.1/32"}}, url: byName},
		{name: "guard off", cfg: webhook.Config{AllowPrivateNetworks: true}, url: sb.URL() + "/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb.Recorder.Reset()
			s := newSender(t, tc.cfg)
			res := s.Send(context.Background(), []*channels.Message{hookMsg("a", tc.url, `{}`)})
			if !tc.wantErr {
				if res[0].Err != nil {
					t.Fatalf("Send: %v, want delivered", res[0].Err)
				}
				if n := sb.Recorder.Count(); n != 1 {
					t.Fatalf("sandbox received %d requests, want 1", n)
				}
				return
			}
			channelstest.RequireReason(t, res[0].Err, channels.ReasonInvalid, true)
			var ce *channels.Error
			if !errors.As(res[0].Err, &ce) || ce.Code != "blocked_destination" {
				t.Fatalf("error %v, want code blocked_destination", res[0].Err)
			}
			if n := sb.Recorder.Count(); n != 0 {
				t.Fatalf("sandbox received %d requests to a blocked destination", n)
			}
		})
	}
}

// TestURLCheckedOncePerString: per-message URLs are parsed and checked once
// per distinct string, never skipped: a refused URL between two accepted
// ones is still refused, and the accepted one still works after it.
func TestURLCheckedOncePerString(t *testing.T) {
	sb := newSandbox(t, sandbox.WebhookOptions{})
	s := newSender(t, webhook.Config{})
	for i, tc := range []struct {
		url     string
		refused bool
	}{
		{sb.URL() + "/a", false},
		{sb.URL() + "/a", false},
		{"http://169.254.169.254/latest/meta-data/", true},
		{sb.URL() + "/a", false},
		{"http://169.254.169.254/latest/meta-data/", true},
	} {
		m := hookMsg(fmt.Sprint(i), "", `{}`)
		m.Hook.URL = tc.url
		res := s.Send(context.Background(), []*channels.Message{m})
		var ce *channels.Error
		if refused := errors.As(res[0].Err, &ce) && ce.Code == "blocked_destination"; refused != tc.refused {
			t.Fatalf("message %d to %s: err %v, want refused=%v", i, tc.url, res[0].Err, tc.refused)
		}
	}
}

// TestReusedRequestPartsCarryOnlyTheirMessage: requests on the lean path
// are built in reused parts (header map, value arrays, replayable body).
// Under concurrency, with bodies, methods and template headers that differ
// per message (some with none), every request arrives with exactly its own
// message's body, Idempotency-Key, headers and a valid signature.
func TestReusedRequestPartsCarryOnlyTheirMessage(t *testing.T) {
	sb := newSandbox(t, sandbox.WebhookOptions{})
	s := newSender(t, webhook.Config{URL: sb.URL() + "/hook", Concurrency: 16})
	const n = 400
	batch := make([]*channels.Message, n)
	for i := range batch {
		h := &channels.Hook{Body: []byte(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, strings.Repeat("x", i%37)))}
		switch i % 3 {
		case 0:
			h.Headers = map[string]string{"X-Tenant": fmt.Sprintf("t-%d", i)}
		case 1:
			h.Headers = map[string]string{"x-tenant": fmt.Sprintf("t-%d", i), "X-Extra": "e"}
			h.Method = "put"
		}
		batch[i] = &channels.Message{IdempotencyKey: fmt.Sprintf("key-%d", i), Hook: h}
	}
	for i, r := range s.Send(context.Background(), batch) {
		if r.Err != nil {
			t.Fatalf("message %d: %v", i, r.Err)
		}
	}
	got := sb.Recorder.All()
	if len(got) != n || sb.BadSignatures() != 0 {
		t.Fatalf("recorded %d requests (%d bad signatures), want %d (0)", len(got), sb.BadSignatures(), n)
	}
	seen := make(map[int]bool, n)
	for _, rec := range got {
		var body struct{ I int }
		if err := json.Unmarshal(rec.Body, &body); err != nil {
			t.Fatalf("body %q: %v", rec.Body, err)
		}
		i := body.I
		if seen[i] {
			t.Fatalf("message %d arrived twice", i)
		}
		seen[i] = true
		if !bytes.Equal(rec.Body, batch[i].Hook.Body) {
			t.Errorf("message %d: body %q, want %q", i, rec.Body, batch[i].Hook.Body)
		}
		want := map[string]string{"Idempotency-Key": fmt.Sprintf("key-%d", i), "X-Tenant": "", "X-Extra": "", ":method": "POST"}
		switch i % 3 {
		case 0:
			want["X-Tenant"] = fmt.Sprintf("t-%d", i)
		case 1:
			want["X-Tenant"], want["X-Extra"], want[":method"] = fmt.Sprintf("t-%d", i), "e", "PUT"
		}
		for k, v := range want {
			if rec.Headers[k] != v {
				t.Errorf("message %d: %s = %q, want %q", i, k, rec.Headers[k], v)
			}
		}
	}
}
