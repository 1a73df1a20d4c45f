package channels

import (
	"context"
	"errors"
	"time"
)

// Reason classifies why a provider did not accept a message. Reasons are
// metric label values: keep the set small and stable.
type Reason string

const (
	// Permanent for the address: it must be pruned, never retried.
	ReasonDeadAddress  Reason = "dead_address" // APNs 410/BadDeviceToken, FCM UNREGISTERED, Twilio 21211/21614, SMTP 5xx RCPT, web push 404/410
	ReasonUnsubscribed Reason = "unsubscribed" // the recipient opted out at the provider (Twilio 21610)
	ReasonInvalid      Reason = "invalid"      // the message itself is malformed for this provider (payload too large, bad topic, ...)
	ReasonRejected     Reason = "rejected"     // the provider refused it for another permanent reason
	ReasonAuth         Reason = "auth"         // our credentials were refused; retrying the same message will not help
	ReasonExpired      Reason = "expired"      // the message's deadline passed before a provider accepted it

	// Transient: worth retrying.
	ReasonRateLimited Reason = "rate_limited" // 429, QUOTA_EXCEEDED, Twilio 20429, SMTP 421/450/451/452
	ReasonUnavailable Reason = "unavailable"  // 5xx, UNAVAILABLE, INTERNAL
	ReasonNetwork     Reason = "network"      // connection refused/reset, TLS failure, timeout
	ReasonUnknown     Reason = "unknown"      // an error the channel did not classify

	// Set by the pool, never by a channel.
	ReasonRetriesExhausted Reason = "retries_exhausted"
	ReasonCanceled         Reason = "canceled"
)

// Error is a channel's classified answer for one message. Read it with errors.As.
type Error struct {
	Reason Reason
	// Permanent means retrying the same message cannot succeed.
	Permanent bool
	// RetryAfter is the provider's hint (Retry-After header or equivalent); zero if none.
	RetryAfter time.Duration
	// Code is the provider's own code ("BadDeviceToken", "UNREGISTERED", "21211", "550"), for logs and the delivery log.
	Code string
	// Err is the underlying cause. It must not carry secrets.
	Err error
}

func (e *Error) Error() string {
	s := string(e.Reason)
	if e.Code != "" {
		s += " (" + e.Code + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Transient returns a retryable *Error.
func Transient(reason Reason, code string, retryAfter time.Duration, err error) *Error {
	return &Error{Reason: reason, Code: code, RetryAfter: retryAfter, Err: err}
}

// Permanent returns a non-retryable *Error.
func Permanent(reason Reason, code string, err error) *Error {
	return &Error{Reason: reason, Permanent: true, Code: code, Err: err}
}

// Classify reads err as an *Error. Context errors become canceled/expired,
// anything else unclassified is a transient ReasonUnknown. nil stays nil.
func Classify(err error) *Error {
	if err == nil {
		return nil
	}
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Reason: ReasonExpired, Permanent: true, Err: err}
	case errors.Is(err, context.Canceled):
		return &Error{Reason: ReasonCanceled, Err: err}
	}
	return &Error{Reason: ReasonUnknown, Err: err}
}

// IsDeadAddress reports whether err says the address should be pruned.
func IsDeadAddress(err error) bool {
	var ce *Error
	return errors.As(err, &ce) && (ce.Reason == ReasonDeadAddress || ce.Reason == ReasonUnsubscribed)
}
