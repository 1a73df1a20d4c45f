package sms_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/channels/sms"
)

const (
	accountSID = "AC0123456789abcdef0123456789abcdef"
	authToken  = "f00dfacecafebabe0123456789abcdef"
	apiKeySID  = "SK0123456789abcdef0123456789abcdef"
	apiSecret  = "Zx9secretApiKeySecretValue123456"
	serviceSID = "MG0123456789abcdef0123456789abcdef"
	fromNumber = "+15005550006"
)

type rig struct {
	sb     *sandbox.Twilio
	sender *sms.Sender
	logs   *channelstest.LogBuffer
	now    time.Time
}

func newRig(t testing.TB, sbOpts sandbox.TwilioOptions, mutate func(*sms.Config), opts ...sms.Option) *rig {
	t.Helper()
	if sbOpts.AccountSID == "" {
		sbOpts.AccountSID = accountSID
	}
	if sbOpts.AuthToken == "" {
		sbOpts.AuthToken = authToken
	}
	sb, err := sandbox.NewTwilio(sbOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	logger, logs := channelstest.NewLogger()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cfg := sms.Config{AccountSID: accountSID, AuthToken: authToken, From: fromNumber, BaseURL: sb.URL(), TLS: channels.TLS{RootCAs: sb.CertPool()}}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := sms.New(cfg, append([]sms.Option{sms.WithLogger(logger), sms.WithClock(func() time.Time { return now })}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &rig{sb: sb, sender: s, logs: logs, now: now}
}

func textTo(to, body string) *channels.Message {
	return &channels.Message{ID: "m-" + to, To: to, Text: &channels.Text{Body: body}}
}

func form(t *testing.T, sb *sandbox.Twilio, to string) url.Values {
	t.Helper()
	for _, r := range sb.Recorder.All() {
		if r.Address == to {
			v, err := url.ParseQuery(string(r.Body))
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("fake received nothing for %s", to)
	return nil
}

func TestSendSuccess(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*sms.Config)
		msg    func(now time.Time) *channels.Message
		want   map[string]string // form fields; "" means absent
	}{
		{
			name: "from number with status callback and validity",
			mutate: func(c *sms.Config) {
				c.StatusCallback = "https://hooks.test/sms/status"
			},
			msg: func(now time.Time) *channels.Message {
				m := textTo("+14155550100", "Your code is 1234")
				m.Deadline = now.Add(90 * time.Second)
				return m
			},
			want: map[string]string{"To": "+14155550100", "From": fromNumber, "Body": "Your code is 1234",
				"StatusCallback": "https://hooks.test/sms/status", "ValidityPeriod": "90", "MessagingServiceSid": ""},
		},
		{
			name:   "messaging service only, far deadline leaves Twilio's default validity",
			mutate: func(c *sms.Config) { c.From, c.MessagingServiceSID = "", serviceSID },
			msg: func(now time.Time) *channels.Message {
				m := textTo("+447700900123", "Grüße 👋")
				m.Deadline = now.Add(48 * time.Hour)
				return m
			},
			want: map[string]string{"MessagingServiceSid": serviceSID, "From": "", "ValidityPeriod": "", "Body": "Grüße 👋"},
		},
		{
			name: "per-message From override",
			msg: func(time.Time) *channels.Message {
				m := textTo("+14155550101", "hi")
				m.Text.From = "+15005550009"
				return m
			},
			want: map[string]string{"From": "+15005550009"},
		},
		{
			name: "per-message messaging service override",
			msg: func(time.Time) *channels.Message {
				m := textTo("+14155550102", "hi")
				m.Text.From = serviceSID
				return m
			},
			want: map[string]string{"MessagingServiceSid": serviceSID, "From": ""},
		},
		{
			name:   "API key credentials",
			mutate: func(c *sms.Config) { c.AuthToken, c.APIKeySID, c.APIKeySecret = "", apiKeySID, apiSecret },
			msg:    func(time.Time) *channels.Message { return textTo("whatsapp:+14155550103", "hi") },
			want:   map[string]string{"To": "whatsapp:+14155550103"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, sandbox.TwilioOptions{APIKeySID: apiKeySID, APIKeySecret: apiSecret}, tc.mutate)
			m := tc.msg(r.now)
			res := r.sender.Send(context.Background(), []*channels.Message{m})
			if res[0].Err != nil {
				t.Fatal(res[0].Err)
			}
			if !strings.HasPrefix(res[0].ProviderID, "SM") || len(res[0].ProviderID) != 34 {
				t.Errorf("ProviderID = %q, want a Twilio message SID", res[0].ProviderID)
			}
			got := form(t, r.sb, m.To)
			for k, want := range tc.want {
				if _, present := got[k]; want == "" && present {
					t.Errorf("%s = %q, want absent", k, got.Get(k))
				} else if want != "" && got.Get(k) != want {
					t.Errorf("%s = %q, want %q", k, got.Get(k), want)
				}
			}
			if ua := r.sb.Recorder.All()[0].Headers["User-Agent"]; !strings.HasPrefix(ua, "twilio-go/") {
				t.Errorf("User-Agent = %q, want the real twilio-go client", ua)
			}
		})
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
		{name: "21211 invalid number is a dead address", fault: sandbox.Fault{Reason: "21211"}, reason: channels.ReasonDeadAddress, permanent: true, code: "21211"},
		{name: "21614 not a mobile is a dead address", fault: sandbox.Fault{Reason: "21614"}, reason: channels.ReasonDeadAddress, permanent: true, code: "21614"},
		{name: "21610 is unsubscribed", fault: sandbox.Fault{Reason: "21610"}, reason: channels.ReasonUnsubscribed, permanent: true, code: "21610"},
		{name: "21612 unreachable is rejected", fault: sandbox.Fault{Reason: "21612"}, reason: channels.ReasonRejected, permanent: true, code: "21612"},
		{name: "21408 region not enabled is rejected", fault: sandbox.Fault{Reason: "21408"}, reason: channels.ReasonRejected, permanent: true, code: "21408"},
		{name: "20429 with retry-after", fault: sandbox.Fault{Reason: "20429", RetryAfter: 4 * time.Second}, reason: channels.ReasonRateLimited, code: "20429", retryAfter: 4 * time.Second},
		{name: "plain 429", fault: sandbox.Fault{Reason: "0", Status: 429, RetryAfter: 2 * time.Second}, reason: channels.ReasonRateLimited, code: "429", retryAfter: 2 * time.Second},
		{name: "500", fault: sandbox.Fault{Reason: "20500"}, reason: channels.ReasonUnavailable, code: "20500"},
		{name: "503 with retry-after", fault: sandbox.Fault{Reason: "20503", RetryAfter: 30 * time.Second}, reason: channels.ReasonUnavailable, code: "20503", retryAfter: 30 * time.Second},
		{name: "20003 authenticate", fault: sandbox.Fault{Reason: "20003"}, reason: channels.ReasonAuth, permanent: true, code: "20003"},
		{name: "dropped connection", fault: sandbox.Fault{Drop: true}, reason: channels.ReasonNetwork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, sandbox.TwilioOptions{}, nil)
			tc.fault.Match = "+1999*"
			r.sb.Faults.Add(tc.fault)
			res := r.sender.Send(context.Background(), []*channels.Message{
				textTo("+14155550100", "a"), textTo("+19995550100", "b"), textTo("+14155550101", "c"),
			})
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
			wantDead := tc.reason == channels.ReasonDeadAddress || tc.reason == channels.ReasonUnsubscribed
			if channels.IsDeadAddress(res[1].Err) != wantDead {
				t.Errorf("IsDeadAddress = %v, want %v", channels.IsDeadAddress(res[1].Err), wantDead)
			}
		})
	}
}

func TestProviderValidation(t *testing.T) {
	tests := []struct {
		name      string
		mutate    func(*sms.Config)
		reason    channels.Reason
		permanent bool
		code      string
	}{
		{name: "wrong auth token", mutate: func(c *sms.Config) { c.AuthToken = "wrongwrongwrongwrongwrongwrong00" }, reason: channels.ReasonAuth, permanent: true, code: "20003"},
		{name: "another account", mutate: func(c *sms.Config) { c.AccountSID = "ACffffffffffffffffffffffffffffffff" }, reason: channels.ReasonAuth, permanent: true, code: "20003"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, sandbox.TwilioOptions{}, tc.mutate)
			res := r.sender.Send(context.Background(), []*channels.Message{textTo("+14155550100", "a")})
			ce := channelstest.RequireReason(t, res[0].Err, tc.reason, tc.permanent)
			if ce.Code != tc.code {
				t.Errorf("Code = %q, want %q", ce.Code, tc.code)
			}
			if !strings.Contains(r.logs.String(), "credentials refused") {
				t.Errorf("auth failure not logged")
			}
		})
	}
}

func TestSendRejectsBadMessagesWithoutRequest(t *testing.T) {
	long := strings.Repeat("x", sms.MaxBodyChars+1)
	tests := []struct {
		name   string
		msg    *channels.Message
		reason channels.Reason
	}{
		{name: "no text content", msg: &channels.Message{To: "+14155550100"}, reason: channels.ReasonInvalid},
		{name: "not E.164", msg: textTo("4155550100", "x"), reason: channels.ReasonDeadAddress},
		{name: "letters in number", msg: textTo("+1415CALLME", "x"), reason: channels.ReasonDeadAddress},
		{name: "empty body", msg: textTo("+14155550100", ""), reason: channels.ReasonInvalid},
		{name: "body too long", msg: textTo("+14155550100", long), reason: channels.ReasonInvalid},
		{name: "deadline passed", msg: &channels.Message{To: "+14155550100", Text: &channels.Text{Body: "x"}, Deadline: time.Date(2026, 3, 1, 11, 59, 0, 0, time.UTC)}, reason: channels.ReasonExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, sandbox.TwilioOptions{}, nil)
			res := r.sender.Send(context.Background(), []*channels.Message{tc.msg, textTo("+14155550199", "ok")})
			channelstest.RequireReason(t, res[0].Err, tc.reason, true)
			if res[1].Err != nil {
				t.Fatal(res[1].Err)
			}
			if n := r.sb.Recorder.Count(); n != 1 {
				t.Errorf("fake saw %d requests, want 1", n)
			}
		})
	}
}

func TestSendContext(t *testing.T) {
	t.Run("already canceled sends nothing", func(t *testing.T) {
		r := newRig(t, sandbox.TwilioOptions{}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		res := r.sender.Send(ctx, []*channels.Message{textTo("+14155550100", "a"), textTo("+14155550101", "b")})
		for _, x := range res {
			channelstest.RequireReason(t, x.Err, channels.ReasonCanceled, false)
		}
		if r.sb.Recorder.Count() != 0 {
			t.Errorf("fake saw %d requests", r.sb.Recorder.Count())
		}
	})
	t.Run("cancel aborts a slow request promptly", func(t *testing.T) {
		r := newRig(t, sandbox.TwilioOptions{}, nil)
		r.sb.Faults.Add(sandbox.Fault{Match: "+1888*", Latency: 10 * time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan []channels.Result, 1)
		start := time.Now()
		go func() { done <- r.sender.Send(ctx, []*channels.Message{textTo("+18885550100", "slow")}) }()
		deadline := time.Now().Add(5 * time.Second)
		for r.sb.Requests() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // polling the fake, not waiting for the result
		}
		cancel()
		res := <-done
		channelstest.RequireReason(t, res[0].Err, channels.ReasonCanceled, false)
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("Send took %v after cancel", el)
		}
	})
	t.Run("call deadline shorter than latency is a transient timeout", func(t *testing.T) {
		r := newRig(t, sandbox.TwilioOptions{}, nil)
		r.sb.Faults.Add(sandbox.Fault{Match: "+1888*", Latency: 10 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		m := textTo("+18885550100", "slow")
		m.Deadline = r.now.Add(time.Hour)
		res := r.sender.Send(ctx, []*channels.Message{m})
		ce := channelstest.RequireReason(t, res[0].Err, channels.ReasonNetwork, false)
		if ce.Code != "timeout" {
			t.Errorf("Code = %q", ce.Code)
		}
	})
}

func TestStatusCallback(t *testing.T) {
	type hit struct {
		form url.Values
		sig  string
	}
	hits := make(chan hit, 4)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		v, _ := url.ParseQuery(string(b))
		hits <- hit{form: v, sig: r.Header.Get("X-Twilio-Signature")}
	}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	cb := "http://" + ln.Addr().String() + "/status"

	r := newRig(t, sandbox.TwilioOptions{StatusCallbacks: true}, func(c *sms.Config) { c.StatusCallback = cb })
	res := r.sender.Send(context.Background(), []*channels.Message{textTo("+14155550100", "a")})
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	for _, want := range []string{"sent", "delivered"} {
		select {
		case h := <-hits:
			if h.form.Get("MessageStatus") != want || h.form.Get("MessageSid") != res[0].ProviderID {
				t.Errorf("callback = %v, want %s for %s", h.form, want, res[0].ProviderID)
			}
			if h.sig != sandbox.TwilioSignature(authToken, cb, h.form) {
				t.Errorf("callback signature does not verify")
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s callback", want)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	good := sms.Config{AccountSID: accountSID, AuthToken: authToken, From: fromNumber}
	tests := []struct {
		name    string
		mutate  func(*sms.Config)
		opts    []sms.Option
		wantErr string
	}{
		{name: "valid", mutate: func(*sms.Config) {}},
		{name: "bad account sid", mutate: func(c *sms.Config) { c.AccountSID = "AC123" }, wantErr: "AccountSID"},
		{name: "no credentials", mutate: func(c *sms.Config) { c.AuthToken = "" }, wantErr: "is required"},
		{name: "both credentials", mutate: func(c *sms.Config) { c.APIKeySID, c.APIKeySecret = apiKeySID, apiSecret }, wantErr: "not both"},
		{name: "api key without secret", mutate: func(c *sms.Config) { c.AuthToken, c.APIKeySID = "", apiKeySID }, wantErr: "APIKeySecret"},
		{name: "token with symbols", mutate: func(c *sms.Config) { c.AuthToken = "sekrit/token+value" }, wantErr: "alphanumeric"},
		{name: "no sender", mutate: func(c *sms.Config) { c.From = "" }, wantErr: "From or MessagingServiceSID"},
		{name: "bad service sid", mutate: func(c *sms.Config) { c.MessagingServiceSID = "MGxyz" }, wantErr: "MessagingServiceSID"},
		{name: "relative callback", mutate: func(c *sms.Config) { c.StatusCallback = "/status" }, wantErr: "StatusCallback"},
		{name: "bad base url", mutate: func(c *sms.Config) { c.BaseURL = "ftp://x" }, wantErr: "BaseURL"},
		{name: "negative rate", mutate: func(c *sms.Config) { c.RatePerSecond = -1 }, wantErr: "negative"},
		{name: "zero concurrency", mutate: func(*sms.Config) {}, opts: []sms.Option{sms.WithConcurrency(0)}, wantErr: "concurrency"},
		{name: "missing CA file", mutate: func(c *sms.Config) { c.TLS.CAFile = "/nonexistent.pem" }, wantErr: "read CA bundle"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mutate(&cfg)
			s, err := sms.New(cfg, tc.opts...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.Name() != channels.SMS {
					t.Errorf("Name = %q", s.Name())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			channelstest.AssertNoSecret(t, []string{"sekrit/token+value", authToken}, err.Error())
		})
	}
}

func TestNoSecretLeaks(t *testing.T) {
	r := newRig(t, sandbox.TwilioOptions{}, nil)
	r.sb.Faults.Add(sandbox.Fault{Match: "+1999*", Reason: "21211"})
	r.sb.Faults.Add(sandbox.Fault{Match: "+1888*", Reason: "20429", RetryAfter: time.Second})
	r.sb.Faults.Add(sandbox.Fault{Match: "+1777*", Drop: true})
	res := r.sender.Send(context.Background(), []*channels.Message{
		textTo("+14155550100", "ok"), textTo("+19995550100", "x"), textTo("+18885550100", "x"), textTo("+17775550100", "x"),
	})
	bad := newRig(t, sandbox.TwilioOptions{}, func(c *sms.Config) { c.AuthToken = "0badbadbadbadbadbadbadbadbadbad0" })
	res2 := bad.sender.Send(context.Background(), []*channels.Message{textTo("+14155550100", "x")})
	channelstest.RequireReason(t, res2[0].Err, channels.ReasonAuth, true)
	texts := append(channelstest.ErrorTexts(res), channelstest.ErrorTexts(res2)...)
	texts = append(texts, r.logs.String(), bad.logs.String())
	channelstest.AssertNoSecret(t, []string{authToken, "0badbadbadbadbadbadbadbadbadbad0"}, texts...)
	if len(channelstest.ErrorTexts(res)) != 3 {
		t.Errorf("want 3 failures, got %v", channelstest.ErrorTexts(res))
	}
}

func BenchmarkSend(b *testing.B) {
	r := newRig(b, sandbox.TwilioOptions{RecordLimit: -1}, nil)
	const batchSize = 64
	batch := make([]*channels.Message, batchSize)
	for i := range batch {
		batch[i] = textTo("+1415555"+strconv.Itoa(1000+i), "Your verification code is 123456")
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
