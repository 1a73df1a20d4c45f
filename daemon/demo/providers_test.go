package demo

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/channels/sandbox"
)

// countingLimiter is an account limiter that counts the tokens the pool took.
type countingLimiter struct {
	lim    *rate.Limiter
	tokens atomic.Int64
}

func (c *countingLimiter) WaitN(ctx context.Context, n int) error {
	if err := c.lim.WaitN(ctx, n); err != nil {
		return err
	}
	c.tokens.Add(int64(n))
	return nil
}

func (c *countingLimiter) AllowN(t time.Time, n int) bool {
	ok := c.lim.AllowN(t, n)
	if ok {
		c.tokens.Add(int64(n))
	}
	return ok
}

// TestEveryProviderThroughThePool drives each real provider client through a
// real worker pool against its sandbox: one message is accepted, one goes to
// a dead address (a feedback record, never retried), and one is rate limited
// once with Retry-After and then accepted on the second attempt, no sooner
// than the (capped) Retry-After. The account limiter is charged once per attempt.
func TestEveryProviderThroughThePool(t *testing.T) {
	sb, err := startSandboxes(50)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.close()
	logger, _ := channelstest.NewLogger()
	senders, err := sb.senders(logger)
	if err != nil {
		t.Fatal(err)
	}
	sub := func(name string) *channels.Subscription {
		s, err := sb.webpush.NewNamedSubscription(name, false)
		if err != nil {
			t.Fatal(err)
		}
		return &s
	}
	push := &channels.Push{Title: "t", Body: "b"}
	hex := func(prefix string) string {
		b := []byte(prefix)
		for len(b) < 64 {
			b = append(b, '0')
		}
		return string(b)
	}
	type addr struct {
		to  string
		sub *channels.Subscription
	}
	tests := []struct {
		channel         string
		good, dead, rl  addr
		deadFault       sandbox.Fault
		rlFault         sandbox.Fault
		faults          *sandbox.Faults
		content         func(m *channels.Message)
		rateLimitRetry  bool // the provider says Retry-After (SMTP has no such header)
		deadFeedbackKey string
	}{
		{channel: channels.APNs, good: addr{to: hex("a1")}, dead: addr{to: hex("dd")}, rl: addr{to: hex("ee")},
			deadFault: sandbox.Fault{Match: "dd*", Status: http.StatusGone, Reason: "Unregistered"},
			rlFault:   sandbox.Fault{Match: "ee*", Status: http.StatusTooManyRequests, Reason: "TooManyRequests", RetryAfter: time.Second, Times: 1},
			faults:    sb.apns.Faults, content: func(m *channels.Message) { m.Push = push }, rateLimitRetry: true},
		{channel: channels.FCM, good: addr{to: "good-token"}, dead: addr{to: "dead-token"}, rl: addr{to: "slow-token"},
			deadFault: sandbox.Fault{Match: "dead-token", Status: http.StatusNotFound, Reason: "UNREGISTERED"},
			rlFault:   sandbox.Fault{Match: "slow-token", Status: http.StatusTooManyRequests, Reason: "QUOTA_EXCEEDED", RetryAfter: time.Second, Times: 1},
			faults:    sb.fcm.Faults, content: func(m *channels.Message) { m.Push = push }, rateLimitRetry: true},
		{channel: channels.SMS, good: addr{to: "+14155550101"}, dead: addr{to: "+14155550102"}, rl: addr{to: "+14155550103"},
			deadFault: sandbox.Fault{Match: "+14155550102", Status: http.StatusBadRequest, Reason: "21211"},
			rlFault:   sandbox.Fault{Match: "+14155550103", Status: http.StatusTooManyRequests, Reason: "20429", RetryAfter: time.Second, Times: 1},
			faults:    sb.twilio.Faults, content: func(m *channels.Message) { m.Text = &channels.Text{Body: "hi"} }, rateLimitRetry: true},
		{channel: channels.Email, good: addr{to: "good@example.test"}, dead: addr{to: "dead@example.test"}, rl: addr{to: "busy@example.test"},
			deadFault: sandbox.Fault{Match: "dead@example.test", Status: 550, Reason: "5.1.1 user unknown"},
			rlFault:   sandbox.Fault{Match: "busy@example.test", Status: 451, Reason: "4.7.1 try again later", Times: 1},
			faults:    sb.smtp.Faults, content: func(m *channels.Message) {
				m.Mail = &channels.Mail{From: "shop@example.test", Subject: "s", Text: "t"}
			}},
		{channel: channels.WebPush, good: addr{sub: sub("good")}, dead: addr{sub: sub("dead")}, rl: addr{sub: sub("slow")},
			deadFault: sandbox.Fault{Match: "dead-*", Status: http.StatusGone},
			rlFault:   sandbox.Fault{Match: "slow-*", Status: http.StatusTooManyRequests, RetryAfter: time.Second, Times: 1},
			faults:    sb.webpush.Faults, content: func(m *channels.Message) { m.WebPush = &channels.WebPushContent{Title: "t", Body: "b"} }, rateLimitRetry: true},
		{channel: channels.Webhook, good: addr{to: "/good"}, dead: addr{to: "/dead"}, rl: addr{to: "/slow"},
			deadFault: sandbox.Fault{Match: "/dead", Status: http.StatusGone},
			rlFault:   sandbox.Fault{Match: "/slow", Status: http.StatusTooManyRequests, RetryAfter: time.Second, Times: 1},
			faults:    sb.webhook.Faults, content: nil, rateLimitRetry: true},
	}
	for _, tc := range tests {
		t.Run(tc.channel, func(t *testing.T) {
			tc.faults.Add(tc.deadFault)
			tc.faults.Add(tc.rlFault)
			msg := func(id string, a addr) *channels.Message {
				m := &channels.Message{ID: tc.channel + "-" + id, IdempotencyKey: tc.channel + "-" + id, UserID: "u-" + id, To: a.to, Subscription: a.sub,
					Deadline: time.Now().Add(time.Minute)}
				if tc.channel == channels.Webhook {
					body, _ := json.Marshal(map[string]string{"user": m.UserID})
					m.To = m.UserID
					m.Hook = &channels.Hook{URL: sb.webhook.URL() + a.to, Body: body}
				} else {
					tc.content(m)
				}
				return m
			}
			lim := &countingLimiter{lim: rate.NewLimiter(rate.Inf, 1)}
			spec := senders[tc.channel]
			outs, fb := channelstest.SendThroughPoolWith(t, spec.Channel, channels.PoolConfig{MaxRetryAfter: 200 * time.Millisecond},
				[]channels.PoolOption{channels.WithAccountLimiter(lim)}, msg("good", tc.good), msg("dead", tc.dead), msg("rl", tc.rl))
			byID := map[string]channels.Outcome{}
			for _, o := range outs {
				byID[o.Message.ID] = o
			}
			if o := byID[tc.channel+"-good"]; o.Status != channels.OutcomeAccepted || o.Attempts != 1 {
				t.Errorf("good: %s after %d attempts (%v)", o.Status, o.Attempts, o.Err)
			}
			if o := byID[tc.channel+"-dead"]; o.Status != channels.OutcomeDeadAddress || o.Attempts != 1 {
				t.Errorf("dead: %s after %d attempts (%v); a dead address is never retried", o.Status, o.Attempts, o.Err)
			}
			o := byID[tc.channel+"-rl"]
			if o.Status != channels.OutcomeAccepted || o.Attempts != 2 {
				t.Errorf("rate limited: %s after %d attempts (%v), want accepted on the 2nd", o.Status, o.Attempts, o.Err)
			}
			if tc.rateLimitRetry && o.Latency < 200*time.Millisecond {
				t.Errorf("rate limited message retried after %v, before the (capped) Retry-After of 200ms", o.Latency)
			}
			if len(fb) != 1 || fb[0].UserID != "u-dead" {
				t.Errorf("feedback %+v, want one record for the dead address", fb)
			}
			if got := lim.tokens.Load(); got != 4 {
				t.Errorf("account limiter charged %d tokens, want 4 (one per attempt)", got)
			}
		})
	}
}
