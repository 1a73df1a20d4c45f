package channels_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
)

const waitFor = 10 * time.Second

func msg(id, to, campaign string) *channels.Message {
	return &channels.Message{ID: id, To: to, Campaign: campaign, UserID: "user-" + id, UserKey: 42}
}

// rig is a pool over a scripted channel with a fake clock and zero jitter.
type rig struct {
	t       *testing.T
	ch      *channelstest.Scripted
	clock   *channelstest.FakeClock
	outs    *channelstest.Outcomes
	fb      *channels.MemoryFeedback
	pool    *channels.Pool
	workers int
}

func newRig(t *testing.T, cfg channels.PoolConfig, opts ...channels.PoolOption) *rig {
	t.Helper()
	r := &rig{t: t, ch: channelstest.NewScripted("fake"), clock: channelstest.NewFakeClock(time.Time{}),
		outs: &channelstest.Outcomes{}, fb: &channels.MemoryFeedback{}}
	cfg.Outcomes = r.outs
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	r.workers = cfg.Workers
	logger, _ := channelstest.NewLogger()
	opts = append([]channels.PoolOption{channels.WithClock(r.clock), channels.WithRand(rand.New(channelstest.ConstSource(0))),
		channels.WithFeedbackSink(r.fb), channels.WithLogger(logger)}, opts...)
	p, err := channels.NewWorkerPool(r.ch, cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	r.pool = p
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = p.Close(ctx)
	})
	return r
}

func (r *rig) start() {
	r.t.Helper()
	if err := r.pool.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) submit(lane channels.Lane, msgs ...*channels.Message) {
	r.t.Helper()
	if n, err := r.pool.Submit(context.Background(), lane, msgs...); err != nil || n != len(msgs) {
		r.t.Fatalf("Submit = %d, %v", n, err)
	}
}

// idle waits until every worker waits for work: nothing more can happen
// until a message is submitted or the fake clock moves.
func (r *rig) idle() {
	r.t.Helper()
	channelstest.Eventually(r.t, waitFor, func() bool { return r.pool.Stats().IdleWorkers == r.workers }, "pool idle")
}

// next advances the fake clock to the pool's next timer and reports the step.
func (r *rig) next() time.Duration {
	r.t.Helper()
	r.idle()
	pending := r.clock.Pending()
	if len(pending) == 0 {
		r.t.Fatalf("pool idle with no timer pending; outcomes so far: %d", r.outs.Len())
	}
	d := pending[0].Sub(r.clock.Now())
	r.clock.Advance(d)
	return d
}

func quiet() *slog.Logger {
	l, _ := channelstest.NewLogger()
	return l
}

func TestNewWorkerPoolValidates(t *testing.T) {
	ch := channelstest.NewScripted("fake")
	sink := &channelstest.Outcomes{}
	tests := []struct {
		name    string
		ch      channels.Channel
		cfg     channels.PoolConfig
		opts    []channels.PoolOption
		wantErr string
	}{
		{name: "nil channel", cfg: channels.PoolConfig{Outcomes: sink}, wantErr: "nil channel"},
		{name: "no outcome sink", ch: ch, wantErr: "Outcomes sink is required"},
		{name: "negative workers", ch: ch, cfg: channels.PoolConfig{Outcomes: sink, Workers: -1}, wantErr: "Workers is negative"},
		{name: "negative timeout", ch: ch, cfg: channels.PoolConfig{Outcomes: sink, SendTimeout: -time.Second}, wantErr: "SendTimeout is negative"},
		{name: "backoff max below base", ch: ch, cfg: channels.PoolConfig{Outcomes: sink, BackoffBase: time.Minute, BackoffMax: time.Second}, wantErr: "BackoffMax"},
		{name: "queue smaller than a batch", ch: ch, cfg: channels.PoolConfig{Outcomes: sink, BatchSize: 500, QueueSize: 100}, wantErr: "QueueSize 100 is below BatchSize 500"},
		{name: "account burst below batch", ch: ch, cfg: channels.PoolConfig{Outcomes: sink, BatchSize: 10},
			opts: []channels.PoolOption{channels.WithAccountLimiter(rate.NewLimiter(5, 5))}, wantErr: "burst 5 is below BatchSize 10"},
		{name: "defaults", ch: ch, cfg: channels.PoolConfig{Outcomes: sink}},
		{name: "infinite account limiter ignores burst", ch: ch, cfg: channels.PoolConfig{Outcomes: sink, BatchSize: 10},
			opts: []channels.PoolOption{channels.WithAccountLimiter(rate.NewLimiter(rate.Inf, 0))}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := channels.NewWorkerPool(tc.ch, tc.cfg, tc.opts...)
			if tc.wantErr == "" {
				if err != nil || p == nil {
					t.Fatalf("NewWorkerPool: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestPoolOutcomePerErrorClass(t *testing.T) {
	dead := channels.Permanent(channels.ReasonDeadAddress, "BadDeviceToken", errors.New("400 bad device token"))
	unsub := channels.Permanent(channels.ReasonUnsubscribed, "21610", errors.New("recipient opted out"))
	invalid := channels.Permanent(channels.ReasonInvalid, "PayloadTooLarge", errors.New("413"))
	unavailable := channels.Transient(channels.ReasonUnavailable, "503", 0, errors.New("service unavailable"))
	tests := []struct {
		name         string
		answers      []channelstest.Answer
		wantStatus   channels.OutcomeStatus
		wantReason   channels.Reason
		wantCode     string
		wantAttempts int
		wantFeedback channels.Reason // empty: none
		wantProvider string
	}{
		{name: "accepted", answers: []channelstest.Answer{{ProviderID: "apns-1"}},
			wantStatus: channels.OutcomeAccepted, wantAttempts: 1, wantProvider: "apns-1"},
		{name: "transient then accepted", answers: []channelstest.Answer{{Err: unavailable}, {ProviderID: "apns-2"}},
			wantStatus: channels.OutcomeAccepted, wantAttempts: 2, wantProvider: "apns-2"},
		{name: "permanent is never retried", answers: []channelstest.Answer{{Err: invalid}},
			wantStatus: channels.OutcomeFailed, wantReason: channels.ReasonInvalid, wantCode: "PayloadTooLarge", wantAttempts: 1},
		{name: "dead address gives feedback", answers: []channelstest.Answer{{Err: dead}},
			wantStatus: channels.OutcomeDeadAddress, wantReason: channels.ReasonDeadAddress, wantCode: "BadDeviceToken", wantAttempts: 1, wantFeedback: channels.ReasonDeadAddress},
		{name: "unsubscribed gives feedback", answers: []channelstest.Answer{{Err: unsub}},
			wantStatus: channels.OutcomeDeadAddress, wantReason: channels.ReasonUnsubscribed, wantCode: "21610", wantAttempts: 1, wantFeedback: channels.ReasonUnsubscribed},
		{name: "retries exhausted keeps last reason", answers: []channelstest.Answer{{Err: unavailable}},
			wantStatus: channels.OutcomeRetriesExhausted, wantReason: channels.ReasonUnavailable, wantCode: "503", wantAttempts: 3},
		{name: "unclassified error is retried", answers: []channelstest.Answer{{Err: errors.New("boom")}, {}},
			wantStatus: channels.OutcomeAccepted, wantAttempts: 2},
		{name: "provider says expired", answers: []channelstest.Answer{{Err: channels.Permanent(channels.ReasonExpired, "", context.DeadlineExceeded)}},
			wantStatus: channels.OutcomeExpired, wantReason: channels.ReasonExpired, wantAttempts: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, channels.PoolConfig{MaxAttempts: 3})
			r.ch.Script("tok", tc.answers...)
			r.start()
			r.submit(channels.LaneNormal, msg("m1", "tok", "c1"))
			for r.outs.Len() == 0 {
				r.idle()
				if r.outs.Len() == 0 {
					r.next()
				}
			}
			out := r.outs.All()[0]
			if out.Status != tc.wantStatus || out.Reason != tc.wantReason || out.Code != tc.wantCode ||
				out.Attempts != tc.wantAttempts || out.ProviderID != tc.wantProvider {
				t.Fatalf("outcome = %+v, want status=%s reason=%s code=%s attempts=%d provider=%q",
					out, tc.wantStatus, tc.wantReason, tc.wantCode, tc.wantAttempts, tc.wantProvider)
			}
			if got := r.ch.Attempts("tok"); got != tc.wantAttempts {
				t.Fatalf("channel saw %d attempts, want %d", got, tc.wantAttempts)
			}
			if (out.Err == nil) != (tc.wantStatus == channels.OutcomeAccepted) {
				t.Fatalf("outcome err = %v for status %s", out.Err, out.Status)
			}
			fb := r.fb.All()
			if tc.wantFeedback == "" {
				if len(fb) != 0 {
					t.Fatalf("unexpected feedback %+v", fb)
				}
				return
			}
			want := channels.Feedback{Channel: "fake", Address: "tok", UserID: "user-m1", UserKey: 42, Campaign: "c1",
				MessageID: "m1", Reason: tc.wantFeedback, Code: tc.wantCode, At: r.clock.Now()}
			if len(fb) != 1 || fb[0] != want {
				t.Fatalf("feedback = %+v, want [%+v]", fb, want)
			}
		})
	}
}

func TestPoolFeedbackUsesWebPushEndpoint(t *testing.T) {
	r := newRig(t, channels.PoolConfig{})
	ep := "https://push.example/sub/1"
	r.ch.Script(ep, channelstest.Answer{Err: channels.Permanent(channels.ReasonDeadAddress, "410", errors.New("gone"))})
	r.start()
	r.submit(channels.LaneNormal, &channels.Message{ID: "w1", Subscription: &channels.Subscription{Endpoint: ep}})
	r.outs.WaitLen(t, 1, waitFor)
	if fb := r.fb.All(); len(fb) != 1 || fb[0].Address != ep {
		t.Fatalf("feedback = %+v, want address %s", fb, ep)
	}
}

func TestPoolRetryHonoursRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter time.Duration
		wantWait   time.Duration
	}{
		{name: "retry-after honoured", retryAfter: 30 * time.Second, wantWait: 30 * time.Second},
		{name: "retry-after capped", retryAfter: 6 * time.Hour, wantWait: 5 * time.Minute},
		{name: "no retry-after uses backoff", wantWait: time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, channels.PoolConfig{BackoffBase: 2 * time.Second, MaxRetryAfter: 5 * time.Minute})
			r.ch.Script("tok", channelstest.Answer{Err: channels.Transient(channels.ReasonRateLimited, "429", tc.retryAfter, errors.New("too many requests"))}, channelstest.Answer{})
			start := r.clock.Now()
			r.start()
			r.submit(channels.LaneHigh, msg("m1", "tok", ""))
			r.idle()
			if got := r.ch.Attempts("tok"); got != 1 {
				t.Fatalf("attempts = %d, want 1", got)
			}
			if s := r.pool.Stats(); s.Retrying != 1 {
				t.Fatalf("stats = %+v, want 1 retrying", s)
			}
			// One nanosecond early: nothing may happen.
			r.clock.Advance(tc.wantWait - time.Nanosecond)
			r.idle()
			if got := r.ch.Attempts("tok"); got != 1 {
				t.Fatalf("retried %v early", time.Nanosecond)
			}
			r.clock.Advance(time.Nanosecond)
			out := r.outs.WaitLen(t, 1, waitFor)[0]
			if out.Status != channels.OutcomeAccepted || out.Attempts != 2 || out.Latency != tc.wantWait {
				t.Fatalf("outcome = %+v, want accepted after 2 attempts and %v", out, tc.wantWait)
			}
			if r.clock.Now().Sub(start) != tc.wantWait {
				t.Fatalf("clock moved %v", r.clock.Now().Sub(start))
			}
		})
	}
}

func TestPoolBackoffIsExponentialAndBounded(t *testing.T) {
	r := newRig(t, channels.PoolConfig{MaxAttempts: 6, BackoffBase: time.Second, BackoffMax: 4 * time.Second})
	r.ch.Script("tok", channelstest.Answer{Err: channels.Transient(channels.ReasonUnavailable, "503", 0, errors.New("unavailable"))})
	r.start()
	r.submit(channels.LaneNormal, msg("m1", "tok", "c"))
	var waits []time.Duration
	for range 5 {
		waits = append(waits, r.next())
	}
	out := r.outs.WaitLen(t, 1, waitFor)[0]
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 2 * time.Second, 2 * time.Second}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Fatalf("waits = %v, want %v (zero jitter)", waits, want)
	}
	if out.Status != channels.OutcomeRetriesExhausted || out.Attempts != 6 || out.Reason != channels.ReasonUnavailable {
		t.Fatalf("outcome = %+v", out)
	}
	channelstest.RequireReason(t, out.Err, channels.ReasonRetriesExhausted, true)
}

func TestPoolDeadline(t *testing.T) {
	tests := []struct {
		name         string
		deadline     time.Duration // from now
		answer       channelstest.Answer
		wantAttempts int
	}{
		{name: "already past: never sent", deadline: -time.Second, wantAttempts: 0},
		{name: "exactly now: never sent", deadline: 0, wantAttempts: 0},
		{name: "retry would land after it", deadline: 10 * time.Second,
			answer: channelstest.Answer{Err: channels.Transient(channels.ReasonRateLimited, "429", time.Minute, errors.New("slow down"))}, wantAttempts: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, channels.PoolConfig{})
			r.ch.Script("tok", tc.answer)
			m := msg("m1", "tok", "c")
			m.Deadline = r.clock.Now().Add(tc.deadline)
			r.start()
			r.submit(channels.LaneNormal, m)
			out := r.outs.WaitLen(t, 1, waitFor)[0]
			if out.Status != channels.OutcomeExpired || out.Reason != channels.ReasonExpired || out.Attempts != tc.wantAttempts {
				t.Fatalf("outcome = %+v, want expired after %d attempts", out, tc.wantAttempts)
			}
			if got := r.ch.Attempts("tok"); got != tc.wantAttempts {
				t.Fatalf("channel saw %d attempts", got)
			}
			if s := r.pool.Stats(); s.Retrying != 0 {
				t.Fatalf("expired message still queued for retry: %+v", s)
			}
			channelstest.RequireReason(t, out.Err, channels.ReasonExpired, true)
		})
	}
}

func TestPoolHighLaneFirst(t *testing.T) {
	r := newRig(t, channels.PoolConfig{BatchSize: 2})
	var normal, high []*channels.Message
	for i := range 6 {
		normal = append(normal, msg(fmt.Sprintf("n%d", i), fmt.Sprintf("n%d", i), "campaign"))
		high = append(high, msg(fmt.Sprintf("h%d", i), fmt.Sprintf("h%d", i), "trigger"))
	}
	r.submit(channels.LaneNormal, normal...)
	r.submit(channels.LaneHigh, high[:3]...)
	r.start()
	r.outs.WaitLen(t, 9, waitFor)
	sent := r.ch.Sent()
	for i, m := range sent[:3] {
		if !strings.HasPrefix(m.ID, "h") {
			t.Fatalf("send %d was %s before every high-lane message went", i, m.ID)
		}
	}
	for _, o := range r.outs.All() {
		if want := map[bool]channels.Lane{true: channels.LaneHigh, false: channels.LaneNormal}[strings.HasPrefix(o.Message.ID, "h")]; o.Lane != want {
			t.Fatalf("outcome %s lane %v, want %v", o.Message.ID, o.Lane, want)
		}
	}
	// A batch may be topped up from the normal lane once high is empty.
	if b := r.ch.Batches(); b[0] != 2 || b[1] != 2 {
		t.Fatalf("batches = %v", b)
	}
}

func TestPoolRoundRobinAcrossCampaigns(t *testing.T) {
	tests := []struct {
		name      string
		batchSize int
		big       int
		small     int
		// the small campaign must be done within this many sends
		within int
	}{
		{name: "batch 1", batchSize: 1, big: 1000, small: 10, within: 20},
		{name: "batch 50", batchSize: 50, big: 5000, small: 100, within: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, channels.PoolConfig{BatchSize: tc.batchSize, QueueSize: tc.big + tc.small})
			var big, small []*channels.Message
			for i := range tc.big {
				big = append(big, msg(fmt.Sprintf("big%d", i), "a", "big"))
			}
			for i := range tc.small {
				small = append(small, msg(fmt.Sprintf("small%d", i), "b", "small"))
			}
			r.submit(channels.LaneNormal, big...)
			r.submit(channels.LaneNormal, small...)
			r.start()
			r.outs.WaitLen(t, tc.big+tc.small, waitFor)
			last := -1
			for i, m := range r.ch.Sent() {
				if m.Campaign == "small" {
					last = i
				}
			}
			if last >= tc.within {
				t.Fatalf("small campaign's last message was send %d; a big campaign starved it", last)
			}
		})
	}
}

func TestPoolCampaignRateCountedOnFakeClock(t *testing.T) {
	r := newRig(t, channels.PoolConfig{Workers: 3, BatchSize: 4, QueueSize: 100})
	if err := r.pool.SetCampaignRate("slow", 10, 10); err != nil {
		t.Fatal(err)
	}
	if err := r.pool.SetCampaignRate("bad", 10, 0); err == nil {
		t.Fatal("burst 0 accepted")
	}
	var msgs []*channels.Message
	for i := range 35 {
		msgs = append(msgs, msg(fmt.Sprintf("s%d", i), "s", "slow"))
	}
	for i := range 5 {
		msgs = append(msgs, msg(fmt.Sprintf("f%d", i), "f", "free"))
	}
	r.submit(channels.LaneNormal, msgs...)
	r.start()
	r.idle()
	// The throttled campaign must not hold workers: the free one is all sent.
	if got := r.ch.Attempts("f"); got != 5 {
		t.Fatalf("unthrottled campaign sent %d of 5", got)
	}
	for _, want := range []int{10, 20, 30, 35} {
		r.idle()
		if got := r.ch.Attempts("s"); got != want {
			t.Fatalf("at %v: sent %d, want %d", r.clock.Now(), got, want)
		}
		r.clock.Advance(time.Second)
	}
	r.outs.WaitLen(t, 40, waitFor)

	// Lifting the limit releases a parked campaign at once.
	r.pool.SetCampaignLimiter("slow", rate.NewLimiter(0, 1))
	r.submit(channels.LaneNormal, msg("x1", "s", "slow"), msg("x2", "s", "slow"))
	r.idle()
	if got := r.ch.Attempts("s"); got != 36 {
		t.Fatalf("zero-rate limiter with burst 1 let %d through, want 1", got-35)
	}
	r.pool.SetCampaignLimiter("slow", nil)
	r.outs.WaitLen(t, 42, waitFor)
}

// countingLimiter counts the tokens workers waited for.
type countingLimiter struct {
	*rate.Limiter
	tokens chan int
}

func (c countingLimiter) WaitN(ctx context.Context, n int) error {
	err := c.Limiter.WaitN(ctx, n)
	if err == nil {
		c.tokens <- n
	}
	return err
}

// AllowN is the pool's non-blocking fast path; count it too.
func (c countingLimiter) AllowN(t time.Time, n int) bool {
	ok := c.Limiter.AllowN(t, n)
	if ok {
		c.tokens <- n
	}
	return ok
}

func TestPoolAccountLimiterSharedByPools(t *testing.T) {
	// One hour per token: after the burst of 5 nothing refills during the test,
	// so the count is exact and does not depend on timing.
	shared := countingLimiter{Limiter: rate.NewLimiter(rate.Every(time.Hour), 5), tokens: make(chan int, 100)}
	ch := channelstest.NewScripted("sms")
	outs := &channelstest.Outcomes{}
	var pools []*channels.Pool
	for range 2 {
		p, err := channels.NewWorkerPool(ch, channels.PoolConfig{Workers: 2, Outcomes: outs}, channels.WithAccountLimiter(shared), channels.WithLogger(quiet()))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		pools = append(pools, p)
	}
	for i, p := range pools {
		for j := range 6 {
			if _, err := p.Submit(context.Background(), channels.LaneNormal, msg(fmt.Sprintf("p%d-%d", i, j), "+15550000", "c")); err != nil {
				t.Fatal(err)
			}
		}
	}
	channelstest.Eventually(t, waitFor, func() bool { return ch.SentCount() >= 5 && len(shared.tokens) >= 5 }, "5 sends")
	// The other 7 wait: in workers blocked on the shared limiter, or queued.
	channelstest.Eventually(t, waitFor, func() bool {
		a, b := pools[0].Stats(), pools[1].Stats()
		return a.InFlight+a.Queued[channels.LaneNormal]+b.InFlight+b.Queued[channels.LaneNormal] == 7
	}, "7 messages held back")
	if got := ch.SentCount(); got != 5 {
		t.Fatalf("sent %d with a burst of 5 and no refill", got)
	}
	canceled := 0
	for _, p := range pools {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := p.Close(ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Close: %v", err)
		}
	}
	for _, o := range outs.All() {
		if o.Status == channels.OutcomeCanceled {
			canceled++
			if o.Attempts != 0 {
				t.Fatalf("canceled while waiting for tokens, yet attempts = %d", o.Attempts)
			}
		}
	}
	if canceled != 7 || outs.Len() != 12 {
		t.Fatalf("%d outcomes, %d canceled; want 12 and 7", outs.Len(), canceled)
	}
}

func TestPoolBackpressure(t *testing.T) {
	r := newRig(t, channels.PoolConfig{QueueSize: 3})
	n, err := r.pool.TrySubmit(channels.LaneNormal, msg("1", "a", "c"), msg("2", "a", "c"))
	if n != 2 || err != nil {
		t.Fatalf("TrySubmit = %d, %v", n, err)
	}
	n, err = r.pool.TrySubmit(channels.LaneNormal, msg("3", "a", "c"), msg("4", "a", "c"))
	if n != 1 || !errors.Is(err, channels.ErrQueueFull) {
		t.Fatalf("TrySubmit on a nearly full queue = %d, %v; want 1, ErrQueueFull", n, err)
	}

	t.Run("high lane has reserved room", func(t *testing.T) {
		r := newRig(t, channels.PoolConfig{QueueSize: 4, HighReserve: 2})
		if n, err := r.pool.TrySubmit(channels.LaneNormal, msg("n1", "a", "c"), msg("n2", "a", "c"), msg("n3", "a", "c"), msg("n4", "a", "c"), msg("n5", "a", "c")); n != 4 || !errors.Is(err, channels.ErrQueueFull) {
			t.Fatalf("normal lane took %d (%v), want 4 and ErrQueueFull", n, err)
		}
		if n, err := r.pool.TrySubmit(channels.LaneHigh, msg("h1", "b", "t"), msg("h2", "b", "t"), msg("h3", "b", "t")); n != 2 || !errors.Is(err, channels.ErrQueueFull) {
			t.Fatalf("high lane took %d (%v) of a full queue, want its reserve of 2", n, err)
		}
	})

	t.Run("blocked submit returns ctx error", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		type res struct {
			n   int
			err error
		}
		done := make(chan res, 1)
		go func() {
			n, err := r.pool.Submit(ctx, channels.LaneNormal, msg("5", "a", "c"))
			done <- res{n, err}
		}()
		channelstest.Eventually(t, waitFor, func() bool { return r.pool.Stats().BlockedSubmitters == 1 }, "submitter blocked")
		cancel()
		got := <-done
		if got.n != 0 || !errors.Is(got.err, context.Canceled) {
			t.Fatalf("Submit = %d, %v; want 0, context.Canceled", got.n, got.err)
		}
	})

	t.Run("blocked submit proceeds when workers drain", func(t *testing.T) {
		done := make(chan error, 1)
		go func() {
			n, err := r.pool.Submit(context.Background(), channels.LaneNormal, msg("6", "a", "c"), msg("7", "a", "c"))
			if err == nil && n != 2 {
				err = fmt.Errorf("took %d of 2", n)
			}
			done <- err
		}()
		channelstest.Eventually(t, waitFor, func() bool { return r.pool.Stats().BlockedSubmitters == 1 }, "submitter blocked")
		r.start()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		r.outs.WaitLen(t, 5, waitFor)
	})

	t.Run("bad input", func(t *testing.T) {
		if _, err := r.pool.Submit(context.Background(), channels.LaneNormal, msg("8", "a", "c"), nil); err == nil || !strings.Contains(err.Error(), "message 1 is nil") {
			t.Fatalf("nil message: %v", err)
		}
		if _, err := r.pool.TrySubmit(channels.Lane(7), msg("9", "a", "c")); err == nil || !strings.Contains(err.Error(), "unknown lane") {
			t.Fatalf("bad lane: %v", err)
		}
	})
}

func TestPoolCloseDrains(t *testing.T) {
	r := newRig(t, channels.PoolConfig{Workers: 2})
	r.ch.Script("flaky", channelstest.Answer{Err: channels.Transient(channels.ReasonUnavailable, "503", 0, errors.New("x"))}, channelstest.Answer{})
	for i := range 20 {
		r.submit(channels.LaneNormal, msg(fmt.Sprint(i), "ok", "c"))
	}
	r.submit(channels.LaneNormal, msg("flaky", "flaky", "c"))
	r.start()
	closed := make(chan error, 1)
	go func() { closed <- r.pool.Close(context.Background()) }()
	// Draining waits for the pending retry; the fake clock lets it come.
	// Close runs in its own goroutine, so the retry can be pending before
	// Close has begun: wait for both.
	channelstest.Eventually(t, waitFor, func() bool {
		s := r.pool.Stats()
		return s.Retrying == 1 && s.Closing
	}, "retry pending while closing")
	if _, err := r.pool.Submit(context.Background(), channels.LaneNormal, msg("late", "ok", "c")); !errors.Is(err, channels.ErrPoolClosed) {
		t.Fatalf("Submit after Close = %v", err)
	}
	r.next()
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	for id, outs := range r.outs.ByID() {
		if len(outs) != 1 || outs[0].Status != channels.OutcomeAccepted {
			t.Fatalf("message %s: %+v", id, outs)
		}
	}
	if r.outs.Len() != 21 {
		t.Fatalf("%d outcomes", r.outs.Len())
	}
	if err := r.pool.Start(context.Background()); !errors.Is(err, channels.ErrPoolClosed) {
		t.Fatalf("Start after Close = %v", err)
	}
}

func TestPoolStopCancelsEverything(t *testing.T) {
	tests := []struct {
		name string
		stop func(r *rig, cancelStart context.CancelFunc) error
		want error
	}{
		{name: "close deadline passes", want: context.DeadlineExceeded, stop: func(r *rig, _ context.CancelFunc) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			defer cancel()
			return r.pool.Close(ctx)
		}},
		{name: "start context canceled", want: context.Canceled, stop: func(r *rig, cancelStart context.CancelFunc) error {
			cancelStart()
			channelstest.Eventually(r.t, waitFor, func() bool { return r.outs.Len() == 6 }, "all outcomes after cancel")
			return r.pool.Close(context.Background())
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, channels.PoolConfig{Workers: 1})
			r.ch.Script("hang", channelstest.Answer{Block: true})
			r.ch.Script("retry", channelstest.Answer{Err: channels.Transient(channels.ReasonUnavailable, "503", time.Hour, errors.New("x"))})
			expiring := msg("expiring", "q", "c")
			expiring.Deadline = r.clock.Now().Add(time.Minute)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r.submit(channels.LaneHigh, msg("retry", "retry", "c"))
			r.submit(channels.LaneNormal, msg("hang", "hang", "c"), msg("q1", "q", "c"), msg("q2", "q", "c"), msg("q3", "q", "c"), expiring)
			if err := r.pool.Start(ctx); err != nil {
				t.Fatal(err)
			}
			channelstest.Eventually(t, waitFor, func() bool { return r.ch.Attempts("hang") == 1 }, "hanging send")
			r.clock.Advance(2 * time.Minute) // the queued "expiring" message is now past its deadline
			err := tc.stop(r, cancel)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "5 messages canceled") {
				t.Fatalf("Close = %v, want 5 canceled and %v", err, tc.want)
			}
			want := map[string]struct {
				status   channels.OutcomeStatus
				attempts int
			}{
				"retry": {channels.OutcomeCanceled, 1}, "hang": {channels.OutcomeCanceled, 1},
				"q1": {channels.OutcomeCanceled, 0}, "q2": {channels.OutcomeCanceled, 0}, "q3": {channels.OutcomeCanceled, 0},
				"expiring": {channels.OutcomeExpired, 0},
			}
			byID := r.outs.ByID()
			if len(byID) != len(want) {
				t.Fatalf("outcomes for %d messages, want %d", len(byID), len(want))
			}
			for id, w := range want {
				outs := byID[id]
				if len(outs) != 1 || outs[0].Status != w.status || outs[0].Attempts != w.attempts {
					t.Fatalf("%s: %+v, want one %s after %d attempts", id, outs, w.status, w.attempts)
				}
				if w.status == channels.OutcomeCanceled {
					channelstest.RequireReason(t, outs[0].Err, channels.ReasonCanceled, false)
				}
			}
			if _, err := r.pool.Submit(context.Background(), channels.LaneNormal, msg("late", "a", "c")); !errors.Is(err, channels.ErrPoolClosed) {
				t.Fatalf("Submit after stop = %v", err)
			}
		})
	}
}

func TestPoolCloseBeforeStart(t *testing.T) {
	r := newRig(t, channels.PoolConfig{})
	r.submit(channels.LaneNormal, msg("1", "a", "c"), msg("2", "a", "c"))
	err := r.pool.Close(context.Background())
	if err == nil || !strings.Contains(err.Error(), "2 messages canceled") {
		t.Fatalf("Close = %v", err)
	}
	if r.outs.Len() != 2 || r.ch.SentCount() != 0 {
		t.Fatalf("outcomes %d, sent %d", r.outs.Len(), r.ch.SentCount())
	}
}

func TestPoolSurvivesBrokenChannels(t *testing.T) {
	tests := []struct {
		name       string
		send       func(ctx context.Context, batch []*channels.Message) []channels.Result
		timeout    time.Duration
		wantStatus channels.OutcomeStatus
		wantReason channels.Reason
	}{
		{name: "panic fails the batch permanently", wantStatus: channels.OutcomeFailed, wantReason: channels.ReasonUnknown,
			send: func(context.Context, []*channels.Message) []channels.Result { panic("provider bug") }},
		{name: "too few results are transient", wantStatus: channels.OutcomeRetriesExhausted, wantReason: channels.ReasonUnknown,
			send: func(context.Context, []*channels.Message) []channels.Result { return nil }},
		{name: "send timeout is a transient network error", timeout: 5 * time.Millisecond,
			wantStatus: channels.OutcomeRetriesExhausted, wantReason: channels.ReasonNetwork,
			send: func(ctx context.Context, batch []*channels.Message) []channels.Result {
				<-ctx.Done()
				return []channels.Result{{Err: ctx.Err()}, {Err: ctx.Err()}}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			outs := &channelstest.Outcomes{}
			logger, logs := channelstest.NewLogger()
			p, err := channels.NewWorkerPool(&channelstest.FuncChannel{ChannelName: "broken", SendFunc: tc.send},
				channels.PoolConfig{BatchSize: 2, MaxAttempts: 1, SendTimeout: tc.timeout, Outcomes: outs}, channels.WithLogger(logger))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Submit(context.Background(), channels.LaneNormal, msg("1", "a", "c"), msg("2", "b", "c")); err != nil {
				t.Fatal(err)
			}
			got := outs.WaitLen(t, 2, waitFor)
			for _, o := range got {
				if o.Status != tc.wantStatus || o.Reason != tc.wantReason {
					t.Fatalf("outcome %+v, want %s/%s", o, tc.wantStatus, tc.wantReason)
				}
			}
			if err := p.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), "channel=broken") {
				t.Fatalf("log lacks the channel: %s", logs)
			}
		})
	}
}

func TestPoolLogsRepeatedFailureOncePerInterval(t *testing.T) {
	logger, logs := channelstest.NewLogger()
	r := newRig(t, channels.PoolConfig{}, channels.WithLogger(logger), channels.WithLogInterval(time.Minute))
	secret := "sk-live-0123456789"
	bad := channels.Permanent(channels.ReasonAuth, "InvalidProviderToken", errors.New("403 forbidden"))
	r.ch.Script("t", channelstest.Answer{Err: bad})
	r.start()
	for i := range 10 {
		m := msg(fmt.Sprint(i), "t", "c")
		m.Hook = &channels.Hook{Headers: map[string]string{"Authorization": secret}}
		r.submit(channels.LaneNormal, m)
	}
	r.outs.WaitLen(t, 10, waitFor)
	if n := strings.Count(logs.String(), "send failed"); n != 1 {
		t.Fatalf("logged %d lines for 10 identical failures:\n%s", n, logs)
	}
	r.clock.Advance(time.Minute)
	r.submit(channels.LaneNormal, msg("11", "t", "c"))
	r.outs.WaitLen(t, 11, waitFor)
	text := logs.String()
	if n := strings.Count(text, "send failed"); n != 2 || !strings.Contains(text, "suppressed_since_last=9") {
		t.Fatalf("after the interval want a second line counting 9 suppressed:\n%s", text)
	}
	var errs []string
	for _, o := range r.outs.All() {
		errs = append(errs, o.Err.Error())
	}
	channelstest.AssertNoSecret(t, []string{secret}, append(errs, text)...)
}

func TestPoolPauseOnRateLimit(t *testing.T) {
	tests := []struct {
		name       string
		pause      bool
		wantBefore int // sends before the Retry-After passes
	}{
		{name: "off: other messages keep going", pause: false, wantBefore: 4},
		{name: "on: the whole pool waits", pause: true, wantBefore: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, channels.PoolConfig{PauseOnRateLimit: tc.pause})
			r.ch.Script("quota", channelstest.Answer{Err: channels.Transient(channels.ReasonRateLimited, "QUOTA_EXCEEDED", 10*time.Second, errors.New("quota"))}, channelstest.Answer{})
			r.submit(channels.LaneNormal, msg("q", "quota", "c"), msg("1", "ok", "c"), msg("2", "ok", "c"), msg("3", "ok", "c"))
			r.start()
			r.idle()
			if got := r.ch.SentCount(); got != tc.wantBefore {
				t.Fatalf("sent %d before Retry-After, want %d", got, tc.wantBefore)
			}
			if step := r.next(); step != 10*time.Second {
				t.Fatalf("next wake-up after %v, want 10s", step)
			}
			outs := r.outs.WaitLen(t, 4, waitFor)
			for _, o := range outs {
				if o.Status != channels.OutcomeAccepted {
					t.Fatalf("outcome %+v", o)
				}
			}
		})
	}
}

type failingFeedback struct{}

func (failingFeedback) RecordFeedback(context.Context, []channels.Feedback) error {
	return errors.New("redis: connection refused")
}

func TestPoolFeedbackSinkFailureIsLogged(t *testing.T) {
	logger, logs := channelstest.NewLogger()
	r := newRig(t, channels.PoolConfig{}, channels.WithFeedbackSink(failingFeedback{}), channels.WithLogger(logger))
	r.ch.Script("dead", channelstest.Answer{Err: channels.Permanent(channels.ReasonDeadAddress, "410", errors.New("gone"))})
	r.start()
	r.submit(channels.LaneNormal, msg("1", "dead", "c"))
	out := r.outs.WaitLen(t, 1, waitFor)[0]
	if out.Status != channels.OutcomeDeadAddress {
		t.Fatalf("outcome = %+v", out)
	}
	if !strings.Contains(logs.String(), "record feedback failed") || !strings.Contains(logs.String(), "connection refused") {
		t.Fatalf("feedback failure not logged:\n%s", logs)
	}
}

// SentAt is the start of the last attempt that carried the message, for
// the delivery log's sent_at: after a retry it is the retry's start.
func TestPoolOutcomeSentAt(t *testing.T) {
	tests := []struct {
		name     string
		answers  []channelstest.Answer
		status   channels.OutcomeStatus
		wantSent time.Duration // after the submit
	}{
		{name: "accepted first time", answers: []channelstest.Answer{{}}, status: channels.OutcomeAccepted},
		{name: "accepted after a retry", answers: []channelstest.Answer{{Err: channels.Transient(channels.ReasonUnavailable, "503", 0, errors.New("busy"))}, {}},
			status: channels.OutcomeAccepted, wantSent: time.Second},
		{name: "permanent failure", answers: []channelstest.Answer{{Err: channels.Permanent(channels.ReasonInvalid, "400", errors.New("bad"))}}, status: channels.OutcomeFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, channels.PoolConfig{BackoffBase: 2 * time.Second})
			r.ch.Script("tok", tc.answers...)
			start := r.clock.Now()
			r.start()
			r.submit(channels.LaneNormal, msg("m1", "tok", ""))
			if len(tc.answers) > 1 {
				r.next()
			}
			out := r.outs.WaitLen(t, 1, waitFor)[0]
			if out.Status != tc.status || !out.SentAt.Equal(start.Add(tc.wantSent)) {
				t.Fatalf("outcome %s sent at %v, want %s sent at %v", out.Status, out.SentAt, tc.status, start.Add(tc.wantSent))
			}
		})
	}
	t.Run("expired before sending", func(t *testing.T) {
		r := newRig(t, channels.PoolConfig{})
		m := msg("m1", "tok", "")
		m.Deadline = r.clock.Now()
		r.start()
		r.submit(channels.LaneNormal, m)
		if out := r.outs.WaitLen(t, 1, waitFor)[0]; out.Status != channels.OutcomeExpired || !out.SentAt.IsZero() {
			t.Fatalf("outcome %s sent at %v, want expired and never sent", out.Status, out.SentAt)
		}
	})
}

// barrierChannel holds every Send until want of them are in progress at
// once: a pool that loses a wake-up never gets there.
type barrierChannel struct {
	want    int
	mu      sync.Mutex
	inside  int
	release chan struct{}
}

func (c *barrierChannel) Name() string { return "barrier" }

func (c *barrierChannel) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	c.mu.Lock()
	c.inside++
	if c.inside == c.want {
		close(c.release)
	}
	c.mu.Unlock()
	select {
	case <-c.release:
	case <-ctx.Done():
	}
	return make([]channels.Result, len(batch))
}

// TestPoolBurstReachesEveryWorker: the pool wakes at most as many workers
// at once as there are cores and the woken chain the wake-up, so a burst
// of slow sends (webhooks, one per worker) must still end up with every
// worker sending at once, whether it arrives in one Submit or one by one.
func TestPoolBurstReachesEveryWorker(t *testing.T) {
	for _, tc := range []struct {
		name     string
		workers  int
		batch    int
		oneByOne bool
	}{
		{name: "one submit, batch 1", workers: 64, batch: 1},
		{name: "one by one, batch 1", workers: 64, batch: 1, oneByOne: true},
		{name: "one submit, batch 4", workers: 16, batch: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := &barrierChannel{want: tc.workers, release: make(chan struct{})}
			outs := &channelstest.Outcomes{}
			p, err := channels.NewWorkerPool(ch, channels.PoolConfig{Workers: tc.workers, BatchSize: tc.batch, QueueSize: 1000, Outcomes: outs})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer p.Close(context.Background())
			channelstest.Eventually(t, waitFor, func() bool { return p.Stats().IdleWorkers == tc.workers }, "workers idle")
			n := tc.workers * tc.batch
			msgs := make([]*channels.Message, n)
			for i := range msgs {
				msgs[i] = msg(fmt.Sprint(i), "a", "c")
			}
			if tc.oneByOne {
				for _, m := range msgs {
					if _, err := p.Submit(context.Background(), channels.LaneHigh, m); err != nil {
						t.Fatal(err)
					}
				}
			} else if _, err := p.Submit(context.Background(), channels.LaneHigh, msgs...); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ch.release:
			case <-time.After(waitFor):
				ch.mu.Lock()
				inside := ch.inside
				ch.mu.Unlock()
				t.Fatalf("%d of %d workers sending after %v: a wake-up was lost", inside, tc.workers, waitFor)
			}
			outs.WaitLen(t, n, waitFor)
		})
	}
}
