package channels

import (
	"context"
	"time"
)

// OutcomeStatus is how a message left the pool. Every submitted message ends
// in exactly one.
type OutcomeStatus string

const (
	// OutcomeAccepted: the provider took the message.
	OutcomeAccepted OutcomeStatus = "accepted"
	// OutcomeFailed: a permanent error other than a dead address or expiry.
	OutcomeFailed OutcomeStatus = "failed"
	// OutcomeDeadAddress: the address is gone (ReasonDeadAddress or
	// ReasonUnsubscribed); a Feedback record was written for it.
	OutcomeDeadAddress OutcomeStatus = "dead_address"
	// OutcomeExpired: the message's Deadline passed, or a retry would have
	// landed after it.
	OutcomeExpired OutcomeStatus = "expired"
	// OutcomeRetriesExhausted: MaxAttempts transient failures; Reason is the last one.
	OutcomeRetriesExhausted OutcomeStatus = "retries_exhausted"
	// OutcomeCanceled: the pool stopped before the message was delivered. If
	// Attempts > 0 the last attempt was interrupted and delivery is in doubt.
	OutcomeCanceled OutcomeStatus = "canceled"
)

// Outcome is the final word on one submitted message.
type Outcome struct {
	Message *Message
	Lane    Lane
	Status  OutcomeStatus
	// Reason is empty when accepted; otherwise the reason of the last error
	// (for OutcomeRetriesExhausted the last transient reason).
	Reason Reason
	// Code is the provider's code of the last error ("BadDeviceToken", "21211", "550").
	Code string
	// ProviderID is the provider's id for an accepted message, when it gives one.
	ProviderID string
	// Attempts counts the Send calls that carried the message.
	Attempts int
	// Latency is from Submit to this outcome.
	Latency time.Duration
	// At is when the outcome was decided (Submit was At - Latency). A sink
	// reads it instead of its own clock, which runs later by however long the
	// outcome waited for it.
	At time.Time
	// SentAt is when the last Send carrying the message started (zero if
	// it was never handed to the provider).
	SentAt time.Time
	// Err is the last error (nil when accepted).
	Err error
}

// OutcomeSink receives outcomes, a batch at a time, from several workers at
// once. It must be safe for concurrent use, must not block for long (it holds
// a worker) and must not keep the slice after returning (copy what it needs).
type OutcomeSink interface {
	Outcomes(ctx context.Context, outs []Outcome)
}

// OutcomeFunc adapts a function to an OutcomeSink.
type OutcomeFunc func(ctx context.Context, outs []Outcome)

// Outcomes calls f.
func (f OutcomeFunc) Outcomes(ctx context.Context, outs []Outcome) { f(ctx, outs) }
