package fcm_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/channels/fcm"
	"github.com/notifyd/notifyd/channels/sandbox"
)

// loopbackOnly fails any request that would leave the machine and counts the rest,
// proving no call went to Google.
type loopbackOnly struct {
	base http.RoundTripper
	mu   sync.Mutex
	hits map[string]int
	t    testing.TB
}

func (l *loopbackOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	host, _, err := net.SplitHostPort(req.URL.Host)
	if err != nil || (host != "127.0.0.1" && host != "::1") {
		l.t.Errorf("request left loopback: %s", req.URL.Redacted())
		return nil, fmt.Errorf("blocked non-loopback request")
	}
	l.mu.Lock()
	l.hits[req.URL.Path]++
	l.mu.Unlock()
	return l.base.RoundTrip(req)
}

func (l *loopbackOnly) count(path string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hits[path]
}

type rig struct {
	sb     *sandbox.FCM
	sender *fcm.Sender
	guard  *loopbackOnly
	logs   *channelstest.LogBuffer
	now    time.Time
}

func newRig(t testing.TB, sbOpts sandbox.FCMOptions, mutate func(*fcm.Config), opts ...fcm.Option) *rig {
	t.Helper()
	sb, err := sandbox.NewFCM(sbOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	tlsCfg, err := channels.TLS{RootCAs: sb.CertPool()}.Config()
	if err != nil {
		t.Fatal(err)
	}
	guard := &loopbackOnly{base: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}, hits: map[string]int{}, t: t}
	logger, logs := channelstest.NewLogger()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cfg := fcm.Config{ProjectID: sb.ProjectID(), CredentialsJSON: sb.ServiceAccountJSON(), Endpoint: sb.Endpoint()}
	if mutate != nil {
		mutate(&cfg)
	}
	all := append([]fcm.Option{fcm.WithTransport(guard), fcm.WithLogger(logger), fcm.WithClock(func() time.Time { return now })}, opts...)
	s, err := fcm.New(cfg, all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &rig{sb: sb, sender: s, guard: guard, logs: logs, now: now}
}

func pushTo(token string) *channels.Message {
	return &channels.Message{ID: "m-" + token, To: token, Push: &channels.Push{Title: "Hello", Body: "World"}}
}

// sent decodes what the fake received for token.
func sent(t *testing.T, sb *sandbox.FCM, token string) map[string]any {
	t.Helper()
	for _, r := range sb.Recorder.All() {
		if r.Address != token {
			continue
		}
		var body struct {
			Message map[string]any `json:"message"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatal(err)
		}
		return body.Message
	}
	t.Fatalf("fake did not receive a message for %s", token)
	return nil
}

func dig(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func TestSendSuccess(t *testing.T) {
	r := newRig(t, sandbox.FCMOptions{}, nil)
	badge := 3
	full := &channels.Message{
		ID: "m1", To: "tok-full", High: true, Deadline: r.now.Add(time.Hour),
		Push: &channels.Push{
			Title: "Sale", Body: "50% off", Sound: "ping.caf", Badge: &badge, ImageURL: "https://img.test/a.png",
			DeepLink: "https://shop.test/sale", CollapseID: "sale-42", ThreadID: "promo",
			Data: json.RawMessage(`{"s":"x","n":7,"o":{"a":[1,2]},"b":true}`),
		},
	}
	silent := &channels.Message{ID: "m2", To: "tok-silent", Push: &channels.Push{Data: json.RawMessage(`{"sync":"1"}`)}}
	res := r.sender.Send(context.Background(), []*channels.Message{full, silent})
	if len(res) != 2 {
		t.Fatalf("got %d results", len(res))
	}
	for i, x := range res {
		if x.Err != nil {
			t.Fatalf("result %d: %v", i, x.Err)
		}
		if !strings.HasPrefix(x.ProviderID, "projects/"+r.sb.ProjectID()+"/messages/") {
			t.Errorf("result %d ProviderID = %q", i, x.ProviderID)
		}
	}
	if r.sb.TokenGrants() != 1 {
		t.Errorf("token grants = %d, want 1 (token reused)", r.sb.TokenGrants())
	}
	if got := r.guard.count("/v1/projects/" + r.sb.ProjectID() + "/messages:send"); got != 2 {
		t.Errorf("sends through loopback guard = %d, want 2", got)
	}
	if r.guard.count("/token") != 1 {
		t.Errorf("token requests = %d, want 1", r.guard.count("/token"))
	}

	m := sent(t, r.sb, "tok-full")
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"token", m["token"], "tok-full"},
		{"title", dig(m, "notification", "title"), "Sale"},
		{"body", dig(m, "notification", "body"), "50% off"},
		{"image", dig(m, "notification", "image"), "https://img.test/a.png"},
		{"data string", dig(m, "data", "s"), "x"},
		{"data number", dig(m, "data", "n"), "7"},
		{"data object", dig(m, "data", "o"), `{"a":[1,2]}`},
		{"data bool", dig(m, "data", "b"), "true"},
		{"deep link", dig(m, "data", "deep_link"), "https://shop.test/sale"},
		{"android collapse key", dig(m, "android", "collapse_key"), "sale-42"},
		{"android priority", dig(m, "android", "priority"), "high"},
		{"android ttl", dig(m, "android", "ttl"), "3600s"},
		{"android sound", dig(m, "android", "notification", "sound"), "ping.caf"},
		{"apns priority", dig(m, "apns", "headers", "apns-priority"), "10"},
		{"apns expiration", dig(m, "apns", "headers", "apns-expiration"), strconv.FormatInt(r.now.Add(time.Hour).Unix(), 10)},
		{"apns collapse id", dig(m, "apns", "headers", "apns-collapse-id"), "sale-42"},
		{"apns push type", dig(m, "apns", "headers", "apns-push-type"), "alert"},
		{"apns badge", dig(m, "apns", "payload", "aps", "badge"), float64(3)},
		{"apns sound", dig(m, "apns", "payload", "aps", "sound"), "ping.caf"},
		{"apns thread", dig(m, "apns", "payload", "aps", "thread-id"), "promo"},
		{"apns mutable", dig(m, "apns", "payload", "aps", "mutable-content"), float64(1)},
		{"webpush ttl", dig(m, "webpush", "headers", "TTL"), "3600"},
		{"webpush urgency", dig(m, "webpush", "headers", "Urgency"), "high"},
		{"webpush topic", dig(m, "webpush", "headers", "Topic"), "sale-42"},
		{"webpush link", dig(m, "webpush", "fcm_options", "link"), "https://shop.test/sale"},
	}
	for _, c := range checks {
		t.Run("full/"+c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %#v, want %#v", c.got, c.want)
			}
		})
	}
	s := sent(t, r.sb, "tok-silent")
	silentChecks := []struct {
		name string
		got  any
		want any
	}{
		{"no notification", s["notification"], nil},
		{"data", dig(s, "data", "sync"), "1"},
		{"normal priority", dig(s, "android", "priority"), "normal"},
		{"no ttl without deadline", dig(s, "android", "ttl"), nil},
		{"background push type", dig(s, "apns", "headers", "apns-push-type"), "background"},
		{"background priority", dig(s, "apns", "headers", "apns-priority"), "5"},
		{"content available", dig(s, "apns", "payload", "aps", "content-available"), float64(1)},
	}
	for _, c := range silentChecks {
		t.Run("silent/"+c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %#v, want %#v", c.got, c.want)
			}
		})
	}
	hdr := r.sb.Recorder.All()[0].Headers
	if hdr["X-Goog-Api-Format-Version"] != "2" || !strings.HasPrefix(hdr["X-Firebase-Client"], "fire-admin-go/") {
		t.Errorf("library headers missing: %v", hdr)
	}
}

func TestSendErrorClasses(t *testing.T) {
	tests := []struct {
		name       string
		fault      sandbox.Fault
		reason     channels.Reason
		permanent  bool
		code       string
		retryAfter time.Duration
	}{
		{name: "unregistered is a dead address", fault: sandbox.Fault{Reason: "UNREGISTERED"}, reason: channels.ReasonDeadAddress, permanent: true, code: "UNREGISTERED"},
		{name: "invalid token is a dead address", fault: sandbox.Fault{Reason: "INVALID_ARGUMENT"}, reason: channels.ReasonDeadAddress, permanent: true, code: "INVALID_ARGUMENT"},
		{name: "sender id mismatch is a dead address", fault: sandbox.Fault{Reason: "SENDER_ID_MISMATCH"}, reason: channels.ReasonDeadAddress, permanent: true, code: "SENDER_ID_MISMATCH"},
		{name: "quota exceeded with retry-after", fault: sandbox.Fault{Reason: "QUOTA_EXCEEDED", RetryAfter: 7 * time.Second}, reason: channels.ReasonRateLimited, code: "QUOTA_EXCEEDED", retryAfter: 7 * time.Second},
		{name: "unavailable with retry-after is not retried inside", fault: sandbox.Fault{Reason: "UNAVAILABLE", RetryAfter: 3 * time.Second}, reason: channels.ReasonUnavailable, code: "UNAVAILABLE", retryAfter: 3 * time.Second},
		{name: "unavailable without retry-after", fault: sandbox.Fault{Reason: "UNAVAILABLE"}, reason: channels.ReasonUnavailable, code: "UNAVAILABLE"},
		{name: "internal", fault: sandbox.Fault{Reason: "INTERNAL"}, reason: channels.ReasonUnavailable, code: "INTERNAL"},
		{name: "third party auth", fault: sandbox.Fault{Reason: "THIRD_PARTY_AUTH_ERROR"}, reason: channels.ReasonAuth, permanent: true, code: "THIRD_PARTY_AUTH_ERROR"},
		{name: "bare 502 without envelope code", fault: sandbox.Fault{Reason: "SOMETHING_NEW", Status: 502}, reason: channels.ReasonUnavailable, code: "502"},
		{name: "dropped connection", fault: sandbox.Fault{Drop: true}, reason: channels.ReasonNetwork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, sandbox.FCMOptions{}, nil)
			tc.fault.Match = "bad-*"
			r.sb.Faults.Add(tc.fault)
			res := r.sender.Send(context.Background(), []*channels.Message{pushTo("ok-1"), pushTo("bad-1"), pushTo("ok-2")})
			if res[0].Err != nil || res[2].Err != nil {
				t.Fatalf("healthy messages failed: %v / %v", res[0].Err, res[2].Err)
			}
			ce := channelstest.RequireReason(t, res[1].Err, tc.reason, tc.permanent)
			if ce.Code != tc.code {
				t.Errorf("Code = %q, want %q", ce.Code, tc.code)
			}
			if ce.RetryAfter != tc.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", ce.RetryAfter, tc.retryAfter)
			}
			if got := r.sb.Sends(); got != 3 {
				t.Errorf("fake saw %d sends, want 3 (the library must not retry)", got)
			}
			if channels.IsDeadAddress(res[1].Err) != (tc.reason == channels.ReasonDeadAddress) {
				t.Errorf("IsDeadAddress = %v", channels.IsDeadAddress(res[1].Err))
			}
		})
	}
}

func TestSendSplitsLargeBatches(t *testing.T) {
	r := newRig(t, sandbox.FCMOptions{RecordLimit: -1}, nil)
	r.sb.Faults.Add(sandbox.Fault{Match: "dead-*", Reason: "UNREGISTERED"})
	const n = 2*fcm.MaxBatch + 3
	batch := make([]*channels.Message, n)
	for i := range batch {
		tok := "tok-" + strconv.Itoa(i)
		if i%250 == 0 {
			tok = "dead-" + strconv.Itoa(i)
		}
		batch[i] = pushTo(tok)
	}
	res := r.sender.Send(context.Background(), batch)
	if len(res) != n {
		t.Fatalf("got %d results, want %d", len(res), n)
	}
	for i, x := range res {
		if i%250 == 0 {
			channelstest.RequireReason(t, x.Err, channels.ReasonDeadAddress, true)
		} else if x.Err != nil {
			t.Fatalf("result %d: %v", i, x.Err)
		}
	}
	if r.sb.Sends() != n {
		t.Errorf("fake saw %d sends, want %d", r.sb.Sends(), n)
	}
}

func TestSendRejectsBadMessagesWithoutRequest(t *testing.T) {
	tests := []struct {
		name   string
		msg    *channels.Message
		reason channels.Reason
	}{
		{name: "no push content", msg: &channels.Message{To: "tok"}, reason: channels.ReasonInvalid},
		{name: "empty token", msg: &channels.Message{Push: &channels.Push{Title: "x"}}, reason: channels.ReasonInvalid},
		{name: "data is an array", msg: &channels.Message{To: "tok", Push: &channels.Push{Data: json.RawMessage(`[1]`)}}, reason: channels.ReasonInvalid},
		{name: "reserved data key", msg: &channels.Message{To: "tok", Push: &channels.Push{Data: json.RawMessage(`{"google.x":"1"}`)}}, reason: channels.ReasonInvalid},
		{name: "relative image url", msg: &channels.Message{To: "tok", Push: &channels.Push{Title: "x", ImageURL: "img.png"}}, reason: channels.ReasonInvalid},
		{name: "deadline passed", msg: &channels.Message{To: "tok", Push: &channels.Push{Title: "x"}, Deadline: time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)}, reason: channels.ReasonExpired},
		{name: "deadline within a second", msg: &channels.Message{To: "tok", Push: &channels.Push{Title: "x"}, Deadline: time.Date(2026, 3, 1, 12, 0, 0, 500, time.UTC)}, reason: channels.ReasonExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, sandbox.FCMOptions{}, nil)
			res := r.sender.Send(context.Background(), []*channels.Message{tc.msg, pushTo("good")})
			channelstest.RequireReason(t, res[0].Err, tc.reason, true)
			if res[1].Err != nil {
				t.Fatalf("good message failed: %v", res[1].Err)
			}
			if r.sb.Sends() != 1 {
				t.Errorf("fake saw %d sends, want 1", r.sb.Sends())
			}
		})
	}
}

func TestSendContext(t *testing.T) {
	t.Run("already canceled sends nothing", func(t *testing.T) {
		r := newRig(t, sandbox.FCMOptions{}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		res := r.sender.Send(ctx, []*channels.Message{pushTo("a"), pushTo("b")})
		for _, x := range res {
			channelstest.RequireReason(t, x.Err, channels.ReasonCanceled, false)
		}
		if r.sb.Sends() != 0 {
			t.Errorf("fake saw %d sends", r.sb.Sends())
		}
	})
	t.Run("cancel while the provider is slow returns promptly", func(t *testing.T) {
		r := newRig(t, sandbox.FCMOptions{}, nil)
		r.sb.Faults.Add(sandbox.Fault{Match: "slow", Latency: 10 * time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan []channels.Result, 1)
		start := time.Now()
		go func() { done <- r.sender.Send(ctx, []*channels.Message{pushTo("slow")}) }()
		deadline := time.Now().Add(5 * time.Second)
		for r.sb.Sends() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // polling the fake, not waiting for a result
		}
		cancel()
		res := <-done
		channelstest.RequireReason(t, res[0].Err, channels.ReasonCanceled, false)
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("Send took %v after cancel", el)
		}
	})
	t.Run("call deadline shorter than latency is a transient timeout", func(t *testing.T) {
		r := newRig(t, sandbox.FCMOptions{}, nil)
		r.sb.Faults.Add(sandbox.Fault{Match: "slow", Latency: 10 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		m := pushTo("slow")
		m.Deadline = r.now.Add(time.Hour)
		res := r.sender.Send(ctx, []*channels.Message{m})
		ce := channelstest.RequireReason(t, res[0].Err, channels.ReasonNetwork, false)
		if ce.Code != "timeout" {
			t.Errorf("Code = %q", ce.Code)
		}
	})
}

func TestAuthFailures(t *testing.T) {
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(sb *sandbox.FCM, cfg *fcm.Config)
		opts   []fcm.Option
	}{
		{name: "service account key the token endpoint does not know", mutate: func(sb *sandbox.FCM, cfg *fcm.Config) {
			var sa map[string]string
			_ = json.Unmarshal(sb.ServiceAccountJSON(), &sa)
			sa["private_key"] = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(otherKey)}))
			cfg.CredentialsJSON, _ = json.Marshal(sa)
		}},
		{name: "access token the fake did not issue", mutate: func(_ *sandbox.FCM, cfg *fcm.Config) { cfg.CredentialsJSON = nil },
			opts: []fcm.Option{fcm.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "ya29.not-issued-secret"}))}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb, err := sandbox.NewFCM(sandbox.FCMOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			cfg := fcm.Config{ProjectID: sb.ProjectID(), CredentialsJSON: sb.ServiceAccountJSON(), Endpoint: sb.Endpoint(), TLS: channels.TLS{RootCAs: sb.CertPool()}}
			tc.mutate(sb, &cfg)
			logger, _ := channelstest.NewLogger()
			s, err := fcm.New(cfg, append(tc.opts, fcm.WithLogger(logger))...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			res := s.Send(context.Background(), []*channels.Message{pushTo("a")})
			channelstest.RequireReason(t, res[0].Err, channels.ReasonAuth, true)
		})
	}
}

func TestConfigTLSAndCredentialsFile(t *testing.T) {
	sb, err := sandbox.NewFCM(sandbox.FCMOptions{ProjectID: "other-project-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	path := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(path, sb.ServiceAccountJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		tls    channels.TLS
		reason channels.Reason // empty: accepted
	}{
		{name: "trusted sandbox CA", tls: channels.TLS{RootCAs: sb.CertPool()}},
		{name: "untrusted certificate is a network error", tls: channels.TLS{}, reason: channels.ReasonNetwork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := fcm.New(fcm.Config{ProjectID: sb.ProjectID(), CredentialsFile: path, Endpoint: sb.Endpoint(), TLS: tc.tls})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			res := s.Send(context.Background(), []*channels.Message{pushTo("a")})
			if tc.reason == "" {
				if res[0].Err != nil {
					t.Fatal(res[0].Err)
				}
				return
			}
			channelstest.RequireReason(t, res[0].Err, tc.reason, false)
		})
	}
}

func TestNewValidatesConfig(t *testing.T) {
	ts := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"})
	tests := []struct {
		name    string
		cfg     fcm.Config
		opts    []fcm.Option
		wantErr string
	}{
		{name: "missing project", cfg: fcm.Config{CredentialsJSON: []byte("{}")}, wantErr: "ProjectID is required"},
		{name: "project with a slash", cfg: fcm.Config{ProjectID: "a/b"}, opts: []fcm.Option{fcm.WithTokenSource(ts)}, wantErr: "not a valid"},
		{name: "no credentials", cfg: fcm.Config{ProjectID: "proj-1"}, wantErr: "exactly one of"},
		{name: "two credentials", cfg: fcm.Config{ProjectID: "proj-1", CredentialsFile: "x"}, opts: []fcm.Option{fcm.WithTokenSource(ts)}, wantErr: "exactly one of"},
		{name: "garbage key file", cfg: fcm.Config{ProjectID: "proj-1", CredentialsJSON: []byte(`{"private_key":"sekrit-material"}`)}, wantErr: "not a valid service-account key"},
		{name: "missing key file", cfg: fcm.Config{ProjectID: "proj-1", CredentialsFile: "/nonexistent/sa.json"}, wantErr: "read credentials file"},
		{name: "relative endpoint", cfg: fcm.Config{ProjectID: "proj-1", Endpoint: "fcm.test/v1"}, opts: []fcm.Option{fcm.WithTokenSource(ts)}, wantErr: "absolute http(s) URL"},
		{name: "negative rate", cfg: fcm.Config{ProjectID: "proj-1", RatePerSecond: -1}, opts: []fcm.Option{fcm.WithTokenSource(ts)}, wantErr: "must not be negative"},
		{name: "missing CA file", cfg: fcm.Config{ProjectID: "proj-1", TLS: channels.TLS{CAFile: "/nonexistent.pem"}}, opts: []fcm.Option{fcm.WithTokenSource(ts)}, wantErr: "read CA bundle"},
		{name: "token source is enough", cfg: fcm.Config{ProjectID: "proj-1"}, opts: []fcm.Option{fcm.WithTokenSource(ts)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := fcm.New(tc.cfg, tc.opts...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.Name() != channels.FCM {
					t.Errorf("Name = %q", s.Name())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			channelstest.AssertNoSecret(t, []string{"sekrit-material"}, err.Error())
		})
	}
}

func TestNoSecretLeaks(t *testing.T) {
	r := newRig(t, sandbox.FCMOptions{}, nil)
	var sa map[string]string
	if err := json.Unmarshal(r.sb.ServiceAccountJSON(), &sa); err != nil {
		t.Fatal(err)
	}
	keyLines := strings.Split(sa["private_key"], "\n")
	secrets := []string{keyLines[1], keyLines[len(keyLines)/2]}
	r.sb.Faults.Add(sandbox.Fault{Match: "dead", Reason: "UNREGISTERED"})
	r.sb.Faults.Add(sandbox.Fault{Match: "busy", Reason: "QUOTA_EXCEEDED", RetryAfter: time.Second})
	r.sb.Faults.Add(sandbox.Fault{Match: "drop", Drop: true})
	res := r.sender.Send(context.Background(), []*channels.Message{pushTo("ok"), pushTo("dead"), pushTo("busy"), pushTo("drop")})
	for _, rec := range r.sb.Recorder.All() {
		if tok := strings.TrimPrefix(rec.Headers["Authorization"], "Bearer "); tok != "" {
			secrets = append(secrets, tok)
		}
	}

	// A refused static token must not show either.
	sb2, err := sandbox.NewFCM(sandbox.FCMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sb2.Close()
	logger2, logs2 := channelstest.NewLogger()
	const static = "ya29.static-secret-token"
	s2, err := fcm.New(fcm.Config{ProjectID: sb2.ProjectID(), Endpoint: sb2.Endpoint(), TLS: channels.TLS{RootCAs: sb2.CertPool()}},
		fcm.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: static})), fcm.WithLogger(logger2))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	res2 := s2.Send(context.Background(), []*channels.Message{pushTo("a")})
	channelstest.RequireReason(t, res2[0].Err, channels.ReasonAuth, true)

	texts := append(channelstest.ErrorTexts(res), channelstest.ErrorTexts(res2)...)
	texts = append(texts, r.logs.String(), logs2.String())
	if !strings.Contains(logs2.String(), "credentials refused") {
		t.Errorf("auth failure not logged: %q", logs2.String())
	}
	channelstest.AssertNoSecret(t, append(secrets, static), texts...)
}

func BenchmarkSend(b *testing.B) {
	r := newRig(b, sandbox.FCMOptions{RecordLimit: -1}, nil)
	const batchSize = 100
	batch := make([]*channels.Message, batchSize)
	for i := range batch {
		batch[i] = &channels.Message{To: "tok-" + strconv.Itoa(i), Deadline: r.now.Add(time.Hour), Push: &channels.Push{
			Title: "Hello", Body: "World", CollapseID: "c", Data: json.RawMessage(`{"k":"v","n":1}`),
		}}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i, x := range r.sender.Send(context.Background(), batch) {
			if x.Err != nil {
				b.Fatalf("result %d: %v", i, x.Err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchSize), "ns/msg")
}
