package channels

import (
	"context"
	"sync"
	"time"
)

// Feedback says an address is dead (or unsubscribed) so the store can prune
// it. The pool writes one per OutcomeDeadAddress and never retries the message.
type Feedback struct {
	Channel string
	// Address is the device token, email, phone number or web push endpoint.
	Address   string
	UserID    string
	UserKey   uint64
	Campaign  string
	MessageID string
	Reason    Reason // ReasonDeadAddress or ReasonUnsubscribed
	Code      string // the provider's code, e.g. "Unregistered", "21211", "550"
	At        time.Time
}

// FeedbackSink stores feedback records (a Redis Stream in production). It is
// called by several workers at once and must not keep the slice.
type FeedbackSink interface {
	RecordFeedback(ctx context.Context, recs []Feedback) error
}

// MemoryFeedback is an in-memory FeedbackSink for tests, the demo and a
// daemon without Redis.
type MemoryFeedback struct {
	// Limit keeps only the newest Limit records (0: all).
	Limit int

	mu   sync.Mutex
	recs []Feedback
}

var _ FeedbackSink = (*MemoryFeedback)(nil)

// RecordFeedback appends recs.
func (m *MemoryFeedback) RecordFeedback(_ context.Context, recs []Feedback) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, recs...)
	if m.Limit > 0 && len(m.recs) >= 2*m.Limit {
		// Compact once the slice holds twice the limit: amortised O(1) per
		// record, and the dropped records can be freed.
		m.recs = append(m.recs[:0:0], m.recs[len(m.recs)-m.Limit:]...)
	}
	return nil
}

// All returns a copy of every record kept, oldest first.
func (m *MemoryFeedback) All() []Feedback {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Feedback(nil), m.kept()...)
}

// Len is the number of records kept.
func (m *MemoryFeedback) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.kept())
}

func (m *MemoryFeedback) kept() []Feedback {
	if m.Limit > 0 && len(m.recs) > m.Limit {
		return m.recs[len(m.recs)-m.Limit:]
	}
	return m.recs
}

func feedbackAddress(m *Message) string {
	if m.To == "" && m.Subscription != nil {
		return m.Subscription.Endpoint
	}
	return m.To
}
