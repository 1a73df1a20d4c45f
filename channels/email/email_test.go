package email_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"mime"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/channels/email"
	"github.com/notifyd/notifyd/channels/sandbox"
)

const (
	testUser = "notifyd-relay"
	testPass = "smtp-pass-S3CRET-value"
)

// newSMTP starts a sandbox that requires testUser/testPass unless opts says
// otherwise; use newOpenSMTP for a relay without AUTH.
func newSMTP(t testing.TB, opts sandbox.SMTPOptions) *sandbox.SMTP {
	t.Helper()
	if opts.Username == "" && opts.Password == "" {
		opts.Username, opts.Password = testUser, testPass
	}
	return startSMTP(t, opts)
}

func newOpenSMTP(t testing.TB, opts sandbox.SMTPOptions) *sandbox.SMTP {
	t.Helper()
	opts.Username, opts.Password = "", ""
	return startSMTP(t, opts)
}

func startSMTP(t testing.TB, opts sandbox.SMTPOptions) *sandbox.SMTP {
	t.Helper()
	sb, err := sandbox.NewSMTP(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	return sb
}

// senderConfig points a Config at the sandbox with its CA trusted.
func senderConfig(sb *sandbox.SMTP) email.Config {
	return email.Config{
		Host:     sb.Host(),
		Port:     sb.Port(),
		TLS:      channels.TLS{RootCAs: sb.CertPool()},
		Username: testUser,
		Password: testPass,
		From:     "Notifyd <news@example.com>",
	}
}

func newSender(t testing.TB, cfg email.Config, opts ...email.Option) *email.Sender {
	t.Helper()
	quiet, _ := channelstest.NewLogger()
	s, err := email.New(cfg, append([]email.Option{email.WithLogger(quiet)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mailMsg(to string) *channels.Message {
	return &channels.Message{
		ID:             "m-" + to,
		IdempotencyKey: "camp1/" + to + "/email",
		To:             to,
		Mail: &channels.Mail{
			Subject: "Hello",
			Text:    "Hello in text",
			HTML:    "<p>Hello in <b>HTML</b></p>",
		},
	}
}

func TestSendSuccess(t *testing.T) {
	tests := []struct {
		name     string
		server   sandbox.SMTPOptions
		tlsMode  email.TLSMode
		auth     email.AuthMethod
		noAuth   bool
		wantTLS  bool
		wantUser string
	}{
		{name: "starttls mandatory, PLAIN", tlsMode: email.TLSStartTLS, auth: email.AuthPlain, wantTLS: true, wantUser: testUser},
		{name: "starttls, LOGIN", tlsMode: email.TLSStartTLS, auth: email.AuthLogin, wantTLS: true, wantUser: testUser},
		{name: "starttls, CRAM-MD5", tlsMode: email.TLSStartTLS, auth: email.AuthCRAMMD5, wantTLS: true, wantUser: testUser},
		{name: "implicit TLS, PLAIN", server: sandbox.SMTPOptions{TLS: sandbox.SMTPImplicit}, tlsMode: email.TLSImplicit, auth: email.AuthPlain, wantTLS: true, wantUser: testUser},
		{name: "opportunistic falls back to plain text", server: sandbox.SMTPOptions{TLS: sandbox.SMTPNoTLS}, tlsMode: email.TLSStartTLSOpportunistic, noAuth: true},
		{name: "opportunistic upgrades when offered", tlsMode: email.TLSStartTLSOpportunistic, auth: email.AuthPlain, wantTLS: true, wantUser: testUser},
		{name: "no TLS local relay without auth", server: sandbox.SMTPOptions{TLS: sandbox.SMTPNoTLS}, tlsMode: email.TLSNone, noAuth: true},
		{name: "no TLS local relay with PLAIN", server: sandbox.SMTPOptions{TLS: sandbox.SMTPNoTLS, Username: testUser, Password: testPass}, tlsMode: email.TLSNone, auth: email.AuthPlain, wantUser: testUser},
	}
	deadline := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sb *sandbox.SMTP
			if tc.noAuth {
				sb = newOpenSMTP(t, tc.server)
			} else {
				sb = newSMTP(t, tc.server)
			}
			runSuccess(t, sb, tc.tlsMode, tc.auth, tc.noAuth, tc.wantTLS, tc.wantUser, deadline)
		})
	}
}

func runSuccess(t *testing.T, sb *sandbox.SMTP, mode email.TLSMode, auth email.AuthMethod, noAuth, wantTLS bool, wantUser string, deadline time.Time) {
	t.Helper()
	cfg := senderConfig(sb)
	cfg.TLSMode, cfg.Auth = mode, auth
	if noAuth {
		cfg.Username, cfg.Password, cfg.Auth = "", "", email.AuthNone
	}
	s := newSender(t, cfg)
	m := mailMsg("alice@example.org")
	m.IdempotencyKey = "camp1/alice/email"
	m.Deadline = deadline
	m.Mail.ReplyTo = "support@example.com"
	m.Mail.ListUnsubscribe = "https://example.com/unsub?u=alice"
	m.Mail.ListUnsubscribeOneClick = true
	m.Mail.Headers = map[string]string{"X-Campaign": "camp1", "x-priority-class": "low"}
	m.Mail.Subject = "Grüße, Alice"

	res := s.Send(context.Background(), []*channels.Message{m})
	if res[0].Err != nil {
		t.Fatalf("Send: %v", res[0].Err)
	}
	got := sb.Messages()
	if len(got) != 1 {
		t.Fatalf("sandbox got %d messages, want 1", len(got))
	}
	g := got[0]
	if g.From != "news@example.com" || len(g.To) != 1 || g.To[0] != "alice@example.org" {
		t.Fatalf("envelope from=%q to=%v", g.From, g.To)
	}
	if g.TLS != wantTLS || g.AuthUser != wantUser {
		t.Fatalf("session TLS=%v user=%q, want TLS=%v user=%q", g.TLS, g.AuthUser, wantTLS, wantUser)
	}
	subj, err := new(mime.WordDecoder).DecodeHeader(g.Header.Get("Subject"))
	if err != nil || subj != "Grüße, Alice" {
		t.Fatalf("Subject = %q (%v)", subj, err)
	}
	wantHeaders := map[string]string{
		"Message-Id":            "<camp1/alice/email@example.com>",
		"List-Unsubscribe":      "<https://example.com/unsub?u=alice>",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
		"Reply-To":              "<support@example.com>",
		"X-Campaign":            "camp1",
		"X-Priority-Class":      "low",
		"Expires":               deadline.Format(time.RFC1123Z),
		"To":                    "<alice@example.org>",
	}
	for k, v := range wantHeaders {
		if h := g.Header.Get(k); h != v {
			t.Errorf("header %s = %q, want %q", k, h, v)
		}
	}
	if !strings.HasPrefix(g.Header.Get("Content-Type"), "multipart/alternative") {
		t.Errorf("Content-Type = %q, want multipart/alternative", g.Header.Get("Content-Type"))
	}
	if strings.TrimSpace(g.Text) != m.Mail.Text || strings.TrimSpace(g.HTML) != m.Mail.HTML {
		t.Errorf("bodies text=%q html=%q", g.Text, g.HTML)
	}
	if res[0].ProviderID != "<camp1/alice/email@example.com>" {
		t.Errorf("ProviderID = %q", res[0].ProviderID)
	}
}

func TestMessageIDStableAndSafe(t *testing.T) {
	sb := newSMTP(t, sandbox.SMTPOptions{})
	cfg := senderConfig(sb)
	cfg.MessageIDDomain = "mail.notifyd.test"
	s := newSender(t, cfg)
	odd := mailMsg("bob@example.org")
	odd.IdempotencyKey = "camp 1:bob<email>" // not dot-atom: hashed
	again := mailMsg("bob@example.org")
	again.IdempotencyKey = odd.IdempotencyKey
	res := s.Send(context.Background(), []*channels.Message{odd, again})
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if res[0].ProviderID != res[1].ProviderID {
		t.Fatalf("re-send changed the Message-ID: %q vs %q", res[0].ProviderID, res[1].ProviderID)
	}
	if !strings.HasSuffix(res[0].ProviderID, "@mail.notifyd.test>") || strings.ContainsAny(res[0].ProviderID, " :") {
		t.Fatalf("Message-ID %q is not a safe <hash@domain>", res[0].ProviderID)
	}
}

func TestConnectionReuse(t *testing.T) {
	tests := []struct {
		name            string
		connections     int
		perConn         int
		batches, size   int
		wantConnsAtMost int64
		wantConnsExact  int64
	}{
		{name: "one session carries two batches", connections: 1, perConn: 1000, batches: 2, size: 40, wantConnsExact: 1},
		{name: "pool of four", connections: 4, perConn: 1000, batches: 3, size: 40, wantConnsAtMost: 4},
		{name: "reconnect after messages per connection", connections: 1, perConn: 10, batches: 1, size: 35, wantConnsExact: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := newSMTP(t, sandbox.SMTPOptions{})
			cfg := senderConfig(sb)
			cfg.Connections, cfg.MessagesPerConn = tc.connections, tc.perConn
			s := newSender(t, cfg)
			for b := range tc.batches {
				batch := make([]*channels.Message, tc.size)
				for i := range batch {
					batch[i] = mailMsg(fmt.Sprintf("u%d-%d@example.org", b, i))
				}
				for i, r := range s.Send(context.Background(), batch) {
					if r.Err != nil {
						t.Fatalf("batch %d message %d: %v", b, i, r.Err)
					}
				}
			}
			if got, want := sb.Accepted(), int64(tc.batches*tc.size); got != want {
				t.Fatalf("accepted %d, want %d", got, want)
			}
			conns := sb.Connections()
			if tc.wantConnsExact != 0 && conns != tc.wantConnsExact {
				t.Fatalf("connections = %d, want %d", conns, tc.wantConnsExact)
			}
			if tc.wantConnsAtMost != 0 && conns > tc.wantConnsAtMost {
				t.Fatalf("connections = %d, want at most %d", conns, tc.wantConnsAtMost)
			}
			if auths := sb.Auths(); auths != conns {
				t.Fatalf("AUTH ran %d times for %d connections", auths, conns)
			}
		})
	}
}

func TestPoolBoundAcrossConcurrentSends(t *testing.T) {
	sb := newSMTP(t, sandbox.SMTPOptions{})
	cfg := senderConfig(sb)
	cfg.Connections = 3
	s := newSender(t, cfg)
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
	)
	for g := range 6 {
		wg.Go(func() {
			batch := make([]*channels.Message, 20)
			for i := range batch {
				batch[i] = mailMsg(fmt.Sprintf("g%d-%d@example.org", g, i))
			}
			for _, r := range s.Send(context.Background(), batch) {
				if r.Err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || sb.Accepted() != 120 {
		t.Fatalf("failed=%d accepted=%d", failed.Load(), sb.Accepted())
	}
	if c := sb.Connections(); c > 3 {
		t.Fatalf("%d connections with a pool of 3", c)
	}
}

type errorClass struct {
	name          string
	rcpt, data    *sandbox.Fault
	wantReason    channels.Reason
	wantPermanent bool
	wantCode      string
	// wantNewConn: the session was dropped, the next message needs a new one.
	wantNewConn bool
}

func TestErrorClasses(t *testing.T) {
	tests := []errorClass{
		{name: "550 5.1.1 unknown user is a dead address", rcpt: &sandbox.Fault{Status: 550, Reason: "5.1.1 user unknown"}, wantReason: channels.ReasonDeadAddress, wantPermanent: true, wantCode: "550 5.1.1"},
		{name: "553 bad mailbox is a dead address", rcpt: &sandbox.Fault{Status: 553, Reason: "mailbox name not allowed"}, wantReason: channels.ReasonDeadAddress, wantPermanent: true, wantCode: "553 5.0.0"},
		{name: "551 user not local", rcpt: &sandbox.Fault{Status: 551, Reason: "5.1.6 moved"}, wantReason: channels.ReasonDeadAddress, wantPermanent: true, wantCode: "551 5.1.6"},
		{name: "550 5.7.1 policy block is rejected, not dead", rcpt: &sandbox.Fault{Status: 550, Reason: "5.7.1 blocked by policy"}, wantReason: channels.ReasonRejected, wantPermanent: true, wantCode: "550 5.7.1"},
		{name: "451 4.7.1 try later is rate limited", rcpt: &sandbox.Fault{Status: 451, Reason: "4.7.1 try again later"}, wantReason: channels.ReasonRateLimited, wantCode: "451 4.7.1"},
		{name: "450 mailbox busy is rate limited", rcpt: &sandbox.Fault{Status: 450, Reason: "4.2.1 busy"}, wantReason: channels.ReasonRateLimited, wantCode: "450 4.2.1"},
		{name: "452 too many recipients is rate limited", rcpt: &sandbox.Fault{Status: 452, Reason: "4.5.3 too many"}, wantReason: channels.ReasonRateLimited, wantCode: "452 4.5.3"},
		{name: "451 local error is unavailable", rcpt: &sandbox.Fault{Status: 451, Reason: "4.3.0 local error"}, wantReason: channels.ReasonUnavailable, wantCode: "451 4.3.0"},
		{name: "421 closes the session", rcpt: &sandbox.Fault{Status: 421, Reason: "4.3.2 shutting down"}, wantReason: channels.ReasonUnavailable, wantCode: "421 4.3.2", wantNewConn: true},
		{name: "dropped connection at RCPT", rcpt: &sandbox.Fault{Drop: true}, wantReason: channels.ReasonNetwork, wantNewConn: true},
		{name: "554 5.7.1 after DATA is rejected", data: &sandbox.Fault{Status: 554, Reason: "5.7.1 looks like spam"}, wantReason: channels.ReasonRejected, wantPermanent: true, wantCode: "554 5.7.1"},
		{name: "552 5.3.4 after DATA is invalid", data: &sandbox.Fault{Status: 552, Reason: "5.3.4 message too big"}, wantReason: channels.ReasonInvalid, wantPermanent: true, wantCode: "552 5.3.4"},
		{name: "451 after DATA is transient", data: &sandbox.Fault{Status: 451, Reason: "4.3.0 queue full"}, wantReason: channels.ReasonUnavailable, wantCode: "451 4.3.0"},
		{name: "dropped connection after DATA", data: &sandbox.Fault{Drop: true}, wantReason: channels.ReasonNetwork, wantNewConn: true},
	}
	for _, tc := range tests {
		for _, mode := range []wireMode{modeChunking, modePipelining, modeStepwise} {
			t.Run(fmt.Sprintf("%s/%s", tc.name, mode), func(t *testing.T) {
				runErrorClass(t, tc, mode)
			})
		}
	}
}

// wireMode is how the Sender talks to the sandbox, which offers PIPELINING
// and CHUNKING.
type wireMode string

const (
	modeChunking   wireMode = "chunking"   // groups of BDAT transactions per write
	modePipelining wireMode = "pipelining" // DATA, the next envelope behind the end of data
	modeStepwise   wireMode = "stepwise"   // one command per round trip
)

func (m wireMode) apply(cfg *email.Config) {
	cfg.DisableChunking = m != modeChunking
	cfg.DisablePipelining = m == modeStepwise
}

func runErrorClass(t *testing.T, tc errorClass, mode wireMode) {
	sb := newSMTP(t, sandbox.SMTPOptions{})
	if tc.rcpt != nil {
		tc.rcpt.Match = "bad@*"
		sb.Faults.Add(*tc.rcpt)
	}
	if tc.data != nil {
		tc.data.Match = "bad@*"
		sb.DataFaults.Add(*tc.data)
	}
	cfg := senderConfig(sb)
	cfg.Connections = 1
	mode.apply(&cfg)
	s := newSender(t, cfg)
	res := s.Send(context.Background(), []*channels.Message{mailMsg("bad@example.org"), mailMsg("good@example.org")})
	ce := channelstest.RequireReason(t, res[0].Err, tc.wantReason, tc.wantPermanent)
	if tc.wantCode != "" && ce.Code != tc.wantCode {
		t.Fatalf("Code = %q, want %q", ce.Code, tc.wantCode)
	}
	if tc.wantReason == channels.ReasonDeadAddress && !channels.IsDeadAddress(res[0].Err) {
		t.Fatal("IsDeadAddress = false")
	}
	dropped := tc.rcpt != nil && tc.rcpt.Drop || tc.data != nil && tc.data.Drop
	wantAccepted := []string{"good@example.org", "later@example.org"}
	if mode == modeChunking && dropped {
		// good@'s content left in the same write as bad@'s: with no reply,
		// whether the server queued it is unknown, so it fails (the pool
		// may retry it) instead of moving silently to another session.
		channelstest.RequireReason(t, res[1].Err, channels.ReasonNetwork, false)
		wantAccepted = wantAccepted[1:]
	} else if res[1].Err != nil {
		// The failure must not poison the next message on the session.
		t.Fatalf("next message after the failure: %v", res[1].Err)
	}
	if res := s.Send(context.Background(), []*channels.Message{mailMsg("later@example.org")}); res[0].Err != nil {
		t.Fatalf("a later Send: %v", res[0].Err)
	}
	wantConns := int64(1)
	if tc.wantNewConn {
		wantConns = 2
	}
	if c := sb.Connections(); c != wantConns {
		t.Fatalf("connections = %d, want %d", c, wantConns)
	}
	var got []string
	for _, m := range sb.Messages() {
		got = append(got, m.To...)
	}
	if !slices.Equal(got, wantAccepted) {
		t.Fatalf("sandbox accepted %q, want %q", got, wantAccepted)
	}
}

// TestPipelining checks the wire: with PIPELINING a message costs about one
// client write (the end of one message and the next envelope together),
// without it at least four, and in both modes every message is answered by
// its own reply, failures in the middle of a run included.
func TestPipelining(t *testing.T) {
	tests := []struct {
		name             string
		mode             wireMode
		maxReadsPerMsg   float64
		minReadsPerMsg   float64
		faultAt, dropsAt []int
	}{
		{name: "chunked", mode: modeChunking, maxReadsPerMsg: 0.5},
		{name: "chunked with refusals in the run", mode: modeChunking, maxReadsPerMsg: 0.5, faultAt: []int{0, 3, 4, 9, 10, 17, 39}},
		{name: "chunked with data refusals", mode: modeChunking, maxReadsPerMsg: 0.5, dropsAt: []int{0, 8, 9, 19, 39}},
		{name: "chunked with both refusals", mode: modeChunking, maxReadsPerMsg: 0.5, faultAt: []int{1, 9, 20}, dropsAt: []int{0, 10, 19, 21}},
		{name: "pipelined", mode: modePipelining, maxReadsPerMsg: 1.5, minReadsPerMsg: 0.9},
		{name: "stepwise when disabled", mode: modeStepwise, minReadsPerMsg: 4},
		{name: "pipelined with refusals in the run", mode: modePipelining, maxReadsPerMsg: 2, faultAt: []int{3, 4, 17, 39}},
		{name: "stepwise with refusals in the run", mode: modeStepwise, minReadsPerMsg: 3, faultAt: []int{3, 4, 17, 39}},
		{name: "pipelined with data refusals", mode: modePipelining, maxReadsPerMsg: 2, dropsAt: []int{0, 8, 9, 39}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := newOpenSMTP(t, sandbox.SMTPOptions{TLS: sandbox.SMTPNoTLS})
			sb.Faults.Add(sandbox.Fault{Match: "rcpt-bad*", Status: 550, Reason: "5.1.1 user unknown"})
			sb.DataFaults.Add(sandbox.Fault{Match: "data-bad*", Status: 554, Reason: "5.7.1 spam"})
			// Groups of 10: the refusals above sit at both ends of groups.
			cfg := email.Config{Host: sb.Host(), Port: sb.Port(), TLSMode: email.TLSNone, From: "news@example.com", Connections: 1, MessagesPerWrite: 10}
			tc.mode.apply(&cfg)
			s := newSender(t, cfg)
			batch := make([]*channels.Message, 40)
			want := map[string]bool{}
			for i := range batch {
				to := fmt.Sprintf("u%d@example.org", i)
				switch {
				case slices.Contains(tc.faultAt, i):
					to = "rcpt-" + "bad" + to
				case slices.Contains(tc.dropsAt, i):
					to = "data-" + "bad" + to
				default:
					want[to] = true
				}
				batch[i] = mailMsg(to)
			}
			reads0 := sb.Reads()
			res := s.Send(context.Background(), batch)
			for i, r := range res {
				to := batch[i].To
				if want[to] != (r.Err == nil) {
					t.Errorf("message %d (%s): err = %v", i, to, r.Err)
				}
			}
			got := map[string]bool{}
			for _, m := range sb.Messages() {
				got[m.To[0]] = true
			}
			if !maps.Equal(got, want) {
				t.Errorf("sandbox accepted %d messages, want %d", len(got), len(want))
			}
			perMsg := float64(sb.Reads()-reads0) / float64(len(batch))
			t.Logf("server reads per message: %.2f", perMsg)
			if tc.maxReadsPerMsg > 0 && perMsg > tc.maxReadsPerMsg {
				t.Errorf("server reads per message = %.2f, want ≤ %.1f (not pipelined?)", perMsg, tc.maxReadsPerMsg)
			}
			if perMsg < tc.minReadsPerMsg {
				t.Errorf("server reads per message = %.2f, want ≥ %.1f (pipelined although disabled?)", perMsg, tc.minReadsPerMsg)
			}
			if c := sb.Connections(); c != 1 {
				t.Errorf("connections = %d, want 1", c)
			}
		})
	}
}

func TestSessionErrors(t *testing.T) {
	tests := []struct {
		name          string
		server        sandbox.SMTPOptions
		cfg           func(*email.Config)
		wantReason    channels.Reason
		wantPermanent bool
		wantCode      string
	}{
		{name: "wrong password is auth", cfg: func(c *email.Config) { c.Password = "wrong-password-123" }, wantReason: channels.ReasonAuth, wantPermanent: true, wantCode: "535"},
		{name: "wrong password over LOGIN", cfg: func(c *email.Config) { c.Password = "wrong-password-123"; c.Auth = email.AuthLogin }, wantReason: channels.ReasonAuth, wantPermanent: true, wantCode: "535"},
		{name: "no auth against a server requiring it", cfg: func(c *email.Config) { c.Username, c.Password = "", "" }, wantReason: channels.ReasonAuth, wantPermanent: true, wantCode: "502 5.7.0"},
		{name: "mandatory STARTTLS not offered", server: sandbox.SMTPOptions{TLS: sandbox.SMTPNoTLS}, wantReason: channels.ReasonNetwork, wantCode: "starttls_unavailable"},
		{name: "untrusted certificate", cfg: func(c *email.Config) { c.TLS = channels.TLS{} }, wantReason: channels.ReasonNetwork, wantCode: "tls_verify"},
		{name: "nothing listening", cfg: func(c *email.Config) { c.Port = 1 }, wantReason: channels.ReasonNetwork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := newSMTP(t, tc.server)
			cfg := senderConfig(sb)
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			s := newSender(t, cfg)
			res := s.Send(context.Background(), []*channels.Message{mailMsg("a@example.org"), mailMsg("b@example.org")})
			for i, r := range res {
				ce := channelstest.RequireReason(t, r.Err, tc.wantReason, tc.wantPermanent)
				if ce.Code != tc.wantCode {
					t.Fatalf("result %d Code = %q, want %q (%v)", i, ce.Code, tc.wantCode, ce)
				}
			}
		})
	}
}

func TestSendInvalid(t *testing.T) {
	sb := newSMTP(t, sandbox.SMTPOptions{})
	now := time.Now()
	cfg := senderConfig(sb)
	cfg.From = ""
	s := newSender(t, cfg, email.WithClock(func() time.Time { return now }))
	with := func(f func(m *channels.Message)) *channels.Message {
		m := mailMsg("a@example.org")
		m.Mail.From = "news@example.com"
		f(m)
		return m
	}
	tests := []struct {
		name       string
		msg        *channels.Message
		wantReason channels.Reason
	}{
		{name: "no mail content", msg: &channels.Message{To: "a@example.org"}, wantReason: channels.ReasonInvalid},
		{name: "no From anywhere", msg: mailMsg("a@example.org"), wantReason: channels.ReasonInvalid},
		{name: "bad From", msg: with(func(m *channels.Message) { m.Mail.From = "not an address" }), wantReason: channels.ReasonInvalid},
		{name: "CRLF in subject", msg: with(func(m *channels.Message) { m.Mail.Subject = "Hi\r\nBcc: victim@example.org" }), wantReason: channels.ReasonInvalid},
		{name: "CRLF in custom header value", msg: with(func(m *channels.Message) { m.Mail.Headers = map[string]string{"X-A": "1\nBcc: x@example.org"} }), wantReason: channels.ReasonInvalid},
		{name: "CR in custom header name", msg: with(func(m *channels.Message) { m.Mail.Headers = map[string]string{"X-A\r\nBcc": "x"} }), wantReason: channels.ReasonInvalid},
		{name: "colon in header name", msg: with(func(m *channels.Message) { m.Mail.Headers = map[string]string{"X:A": "x"} }), wantReason: channels.ReasonInvalid},
		{name: "reserved header override", msg: with(func(m *channels.Message) { m.Mail.Headers = map[string]string{"message-id": "<x@y>"} }), wantReason: channels.ReasonInvalid},
		{name: "no body", msg: with(func(m *channels.Message) { m.Mail.Text, m.Mail.HTML = "", "" }), wantReason: channels.ReasonInvalid},
		{name: "one-click needs https", msg: with(func(m *channels.Message) {
			m.Mail.ListUnsubscribe = "http://example.com/u"
			m.Mail.ListUnsubscribeOneClick = true
		}), wantReason: channels.ReasonInvalid},
		{name: "one-click without URL", msg: with(func(m *channels.Message) { m.Mail.ListUnsubscribeOneClick = true }), wantReason: channels.ReasonInvalid},
		{name: "malformed recipient is a dead address", msg: with(func(m *channels.Message) { m.To = "not-an-address" }), wantReason: channels.ReasonDeadAddress},
		{name: "CRLF in recipient", msg: with(func(m *channels.Message) { m.To = "a@example.org\r\nRCPT TO:<b@example.org>" }), wantReason: channels.ReasonInvalid},
		{name: "expired answered without a connection", msg: with(func(m *channels.Message) { m.Deadline = now.Add(-time.Second) }), wantReason: channels.ReasonExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := s.Send(context.Background(), []*channels.Message{tc.msg})
			channelstest.RequireReason(t, res[0].Err, tc.wantReason, true)
			if c := sb.Connections(); c != 0 {
				t.Fatalf("an invalid message opened %d connections", c)
			}
		})
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     email.Config
		wantErr string
	}{
		{name: "ok", cfg: email.Config{Host: "smtp.example.com"}},
		{name: "no host", cfg: email.Config{}, wantErr: "host is required"},
		{name: "bad TLS mode", cfg: email.Config{Host: "h", TLSMode: "ssl"}, wantErr: "TLS mode"},
		{name: "bad auth", cfg: email.Config{Host: "h", Auth: "xoauth"}, wantErr: "auth"},
		{name: "auth without password", cfg: email.Config{Host: "h", Auth: email.AuthLogin, Username: "u"}, wantErr: "needs a username and a password"},
		{name: "port out of range", cfg: email.Config{Host: "h", Port: 70000}, wantErr: "port"},
		{name: "negative pool", cfg: email.Config{Host: "h", Connections: -1}, wantErr: "negative"},
		{name: "CRLF in default From", cfg: email.Config{Host: "h", From: "a@b\r\nX: y"}, wantErr: "CR, LF"},
		{name: "missing CA file", cfg: email.Config{Host: "h", TLS: channels.TLS{CAFile: "/nonexistent.pem"}}, wantErr: "CA bundle"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := email.New(tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestContext(t *testing.T) {
	tests := []struct {
		name          string
		ctx           func() (context.Context, context.CancelFunc)
		wantReason    channels.Reason
		wantPermanent bool
		wantConns     int64
	}{
		{
			name: "canceled before sending",
			ctx: func() (context.Context, context.CancelFunc) {
				c, f := context.WithCancel(context.Background())
				f()
				return c, f
			},
			wantReason: channels.ReasonCanceled,
		},
		{
			name: "deadline while the server stalls at RCPT",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 200*time.Millisecond)
			},
			wantReason:    channels.ReasonExpired,
			wantPermanent: true,
			wantConns:     1,
		},
		{
			name: "canceled while the server stalls",
			ctx: func() (context.Context, context.CancelFunc) {
				c, f := context.WithCancel(context.Background())
				time.AfterFunc(200*time.Millisecond, f)
				return c, f
			},
			wantReason: channels.ReasonCanceled,
			wantConns:  1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := newSMTP(t, sandbox.SMTPOptions{})
			sb.Faults.Add(sandbox.Fault{Match: "slow@*", Latency: 10 * time.Second})
			s := newSender(t, senderConfig(sb))
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			res := s.Send(ctx, []*channels.Message{mailMsg("slow@example.org")})
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("Send took %s: it ignored the context", took)
			}
			channelstest.RequireReason(t, res[0].Err, tc.wantReason, tc.wantPermanent)
			if c := sb.Connections(); c != tc.wantConns {
				t.Fatalf("connections = %d, want %d", c, tc.wantConns)
			}
			// The interrupted session must not be reused.
			res = s.Send(context.Background(), []*channels.Message{mailMsg("after@example.org")})
			if res[0].Err != nil {
				t.Fatalf("send after interruption: %v", res[0].Err)
			}
		})
	}
}

func TestStaleAndIdleSessions(t *testing.T) {
	t.Run("server dropped idle session: reopened transparently", func(t *testing.T) {
		sb := newSMTP(t, sandbox.SMTPOptions{})
		s := newSender(t, senderConfig(sb))
		if r := s.Send(context.Background(), []*channels.Message{mailMsg("a@example.org")}); r[0].Err != nil {
			t.Fatal(r[0].Err)
		}
		if n := sb.DropConnections(); n != 1 {
			t.Fatalf("dropped %d connections, want 1", n)
		}
		if r := s.Send(context.Background(), []*channels.Message{mailMsg("b@example.org")}); r[0].Err != nil {
			t.Fatalf("send on a dropped pooled session: %v", r[0].Err)
		}
		if c := sb.Connections(); c != 2 {
			t.Fatalf("connections = %d, want 2", c)
		}
	})
	t.Run("session idle past MaxIdle is replaced", func(t *testing.T) {
		sb := newSMTP(t, sandbox.SMTPOptions{})
		var now atomic.Int64
		now.Store(time.Now().UnixNano())
		cfg := senderConfig(sb)
		cfg.MaxIdle = time.Minute
		s := newSender(t, cfg, email.WithClock(func() time.Time { return time.Unix(0, now.Load()) }))
		send := func(to string) {
			t.Helper()
			if r := s.Send(context.Background(), []*channels.Message{mailMsg(to)}); r[0].Err != nil {
				t.Fatal(r[0].Err)
			}
		}
		send("a@example.org")
		now.Add(int64(30 * time.Second))
		send("b@example.org")
		if c := sb.Connections(); c != 1 {
			t.Fatalf("connections after 30s idle = %d, want 1", c)
		}
		now.Add(int64(2 * time.Minute))
		send("c@example.org")
		if c := sb.Connections(); c != 2 {
			t.Fatalf("connections after 2m idle = %d, want 2", c)
		}
	})
}

func TestNoSecretLeaks(t *testing.T) {
	sb := newSMTP(t, sandbox.SMTPOptions{})
	sb.Faults.Add(sandbox.Fault{Match: "dead@*", Status: 550, Reason: "5.1.1 user unknown"})
	sb.Faults.Add(sandbox.Fault{Match: "drop@*", Drop: true})
	logger, logs := channelstest.NewLogger()
	good := senderConfig(sb)
	bad := senderConfig(sb)
	bad.Password = "wrong-" + testPass
	var texts []string
	for _, cfg := range []email.Config{good, bad} {
		s, err := email.New(cfg, email.WithLogger(logger))
		if err != nil {
			t.Fatal(err)
		}
		res := s.Send(context.Background(), []*channels.Message{mailMsg("ok@example.org"), mailMsg("dead@example.org"), mailMsg("drop@example.org")})
		texts = append(texts, channelstest.ErrorTexts(res)...)
		_ = s.Close()
	}
	if len(texts) < 4 {
		t.Fatalf("expected failures on both senders, got %q", texts)
	}
	texts = append(texts, logs.String())
	channelstest.AssertNoSecret(t, []string{testPass, bad.Password}, texts...)
}

var boundaryRE = regexp.MustCompile(`=_notifyd-[0-9a-f]{24}`)

// TestChunkingSameMessage: BDAT carries a message's bytes as they are and
// DATA dot-stuffed, so the server must receive the same message either way,
// lines that start with "." included (the BDAT size counts them unstuffed:
// a wrong size would cut the message or swallow the next command).
func TestChunkingSameMessage(t *testing.T) {
	now := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
	bodies := []struct{ name, text, html string }{
		{name: "no dots", text: "Hello\nthere", html: "<p>Hello</p>"},
		{name: "leading dots", text: ".\n.hidden\n..two\nend.", html: ".<p>\n.</p>"},
		{name: "dot after a soft break", text: strings.Repeat("x", 75) + ".tail\n" + strings.Repeat("y", 150), html: "<p>" + strings.Repeat(".z", 60) + "</p>"},
	}
	raw := map[wireMode][][]byte{}
	for _, mode := range []wireMode{modeChunking, modePipelining} {
		sb := newOpenSMTP(t, sandbox.SMTPOptions{TLS: sandbox.SMTPNoTLS})
		cfg := email.Config{Host: sb.Host(), Port: sb.Port(), TLSMode: email.TLSNone, From: "news@example.com", Connections: 1, MessagesPerWrite: 2}
		mode.apply(&cfg)
		s := newSender(t, cfg, email.WithClock(func() time.Time { return now }))
		var batch []*channels.Message
		for _, b := range bodies {
			m := mailMsg(strings.ReplaceAll(b.name, " ", "-") + "@example.org")
			m.Mail.Text, m.Mail.HTML = b.text, b.html
			batch = append(batch, m)
		}
		for i, r := range s.Send(context.Background(), batch) {
			if r.Err != nil {
				t.Fatalf("%s: message %d: %v", mode, i, r.Err)
			}
		}
		got := sb.Messages()
		if len(got) != len(bodies) {
			t.Fatalf("%s: sandbox accepted %d messages, want %d", mode, len(got), len(bodies))
		}
		for i, m := range got {
			want := strings.ReplaceAll(bodies[i].text, "\n", "\r\n")
			if m.Text != want || m.HTML != strings.ReplaceAll(bodies[i].html, "\n", "\r\n") {
				t.Fatalf("%s: message %d decodes to text %q html %q", mode, i, m.Text, m.HTML)
			}
			// Each Sender draws its own boundary.
			raw[mode] = append(raw[mode], boundaryRE.ReplaceAll(m.Raw, []byte("=_notifyd-B")))
		}
	}
	for i := range bodies {
		if !bytes.Equal(raw[modeChunking][i], raw[modePipelining][i]) {
			t.Errorf("%s: BDAT delivered\n%q\nDATA delivered\n%q", bodies[i].name, raw[modeChunking][i], raw[modePipelining][i])
		}
	}
}
