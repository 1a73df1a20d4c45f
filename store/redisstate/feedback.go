package redisstate

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/channels"
)

// Default bounds of the feedback stream and of what is kept for retry while
// Redis is away.
const (
	DefaultFeedbackMaxLen  = 1_000_000
	DefaultFeedbackBacklog = 100_000
)

// FeedbackSink writes dead-address and unsubscribe records to the stream
// <prefix>feedback (docs/redis-keys.md), where the data store's pruning job
// reads them (XREAD, or its own consumer group). Delivery is at least once:
// records a failed write leaves behind are kept (bounded) and written with
// the next call or Flush, so a consumer must treat a repeat as a no-op, which
// pruning an address is.
type FeedbackSink struct {
	s       *Store
	maxLen  int64
	backlog int

	mu      sync.Mutex
	pending []channels.Feedback
	dropped int64
}

var _ channels.FeedbackSink = (*FeedbackSink)(nil)

// Feedback returns the Store's feedback sink. The stream is trimmed to about
// maxLen entries (XADD MAXLEN ~) and at most backlog records wait for a retry
// while Redis is unreachable (older ones are dropped and counted); zero
// values take the defaults.
func (s *Store) Feedback(maxLen int64, backlog int) *FeedbackSink {
	if maxLen <= 0 {
		maxLen = DefaultFeedbackMaxLen
	}
	if backlog <= 0 {
		backlog = DefaultFeedbackBacklog
	}
	return &FeedbackSink{s: s, maxLen: maxLen, backlog: backlog}
}

func (f *FeedbackSink) key() string { return f.s.prefix + "feedback" }

// RecordFeedback implements channels.FeedbackSink.
func (f *FeedbackSink) RecordFeedback(ctx context.Context, recs []channels.Feedback) error {
	f.mu.Lock()
	batch := append(f.pending, recs...) // copies recs: the caller reuses its slice
	f.pending = nil
	f.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	_, err := f.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range batch {
			p.XAdd(ctx, &redis.XAddArgs{Stream: f.key(), MaxLen: f.maxLen, Approx: true, Values: feedbackValues(&batch[i])})
		}
		return nil
	})
	if err == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Records that arrived meanwhile go after the failed batch, keeping order.
	f.pending = append(batch, f.pending...)
	if over := len(f.pending) - f.backlog; over > 0 {
		f.pending = append([]channels.Feedback(nil), f.pending[over:]...)
		f.dropped += int64(over)
	}
	return fmt.Errorf("record feedback (%d records kept for retry, %d dropped so far): %w", len(f.pending), f.dropped, err)
}

// Flush writes what a failed call left behind.
func (f *FeedbackSink) Flush(ctx context.Context) error { return f.RecordFeedback(ctx, nil) }

// Pending is the number of records waiting for a retry, and Dropped the
// number given up because the backlog was full.
func (f *FeedbackSink) Pending() (pending int, dropped int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending), f.dropped
}

func feedbackValues(fb *channels.Feedback) []any {
	at := fb.At
	if at.IsZero() {
		at = time.Now()
	}
	return []any{
		"channel", fb.Channel,
		"address", fb.Address,
		"user", fb.UserID,
		"user_key", hex16(fb.UserKey),
		"campaign", fb.Campaign,
		"message", fb.MessageID,
		"reason", string(fb.Reason),
		"code", fb.Code,
		"at", at.UTC().Format(time.RFC3339Nano),
		"at_ms", strconv.FormatInt(at.UnixMilli(), 10),
	}
}
