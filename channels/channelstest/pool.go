package channelstest

import (
	"context"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
)

// SendThroughPool runs msgs through a real worker pool in front of ch and
// returns their outcomes (in msgs order) and the feedback records written.
// It is how a provider test shows its errors drive the pool right: a dead
// address ends as dead_address with a Feedback record, a 429 is retried.
// Zero cfg fields get test-friendly values (4 workers, 3 attempts, 1-10 ms
// backoff, 100 ms max Retry-After); cfg.Outcomes is ignored. The pool is
// drained with a 30 s limit.
func SendThroughPool(t testing.TB, ch channels.Channel, cfg channels.PoolConfig, msgs ...*channels.Message) ([]channels.Outcome, []channels.Feedback) {
	t.Helper()
	return SendThroughPoolWith(t, ch, cfg, nil, msgs...)
}

// SendThroughPoolWith is SendThroughPool with extra pool options (an
// account limiter, a clock).
func SendThroughPoolWith(t testing.TB, ch channels.Channel, cfg channels.PoolConfig, opts []channels.PoolOption, msgs ...*channels.Message) ([]channels.Outcome, []channels.Feedback) {
	t.Helper()
	if cfg.Workers == 0 {
		cfg.Workers = 4
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase, cfg.BackoffMax = time.Millisecond, 10*time.Millisecond
	}
	if cfg.MaxRetryAfter == 0 {
		cfg.MaxRetryAfter = 100 * time.Millisecond
	}
	outs := &Outcomes{}
	cfg.Outcomes = outs
	fb := &channels.MemoryFeedback{}
	logger, _ := NewLogger()
	p, err := channels.NewWorkerPool(ch, cfg, append([]channels.PoolOption{channels.WithFeedbackSink(fb), channels.WithLogger(logger)}, opts...)...)
	if err != nil {
		t.Fatalf("create pool: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatalf("start pool: %v", err)
	}
	if _, err := p.Submit(ctx, channels.LaneNormal, msgs...); err != nil {
		t.Fatalf("submit: %v", err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("drain pool: %v", err)
	}
	byMsg := make(map[*channels.Message]channels.Outcome, len(msgs))
	for _, o := range outs.All() {
		if _, dup := byMsg[o.Message]; dup {
			t.Fatalf("message %q got two outcomes", o.Message.ID)
		}
		byMsg[o.Message] = o
	}
	ordered := make([]channels.Outcome, len(msgs))
	for i, m := range msgs {
		o, ok := byMsg[m]
		if !ok {
			t.Fatalf("message %q got no outcome", m.ID)
		}
		ordered[i] = o
	}
	return ordered, fb.All()
}
