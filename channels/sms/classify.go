package sms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	twclient "github.com/twilio/twilio-go/client"

	"github.com/notifyd/notifyd/channels"
)

// Twilio error codes with a meaning for delivery.
const (
	codeInvalidTo      = 21211 // 'To' is not a valid phone number
	codeNotMobile      = 21614 // 'To' is not a mobile number
	codeUnsubscribed   = 21610 // the recipient replied STOP
	codeNotReachable   = 21612 // no route to the 'To' number
	codeGeoPermission  = 21408 // sending to this region is not enabled
	codeAuthenticate   = 20003
	codeTooManyRequest = 20429
)

// classify maps a CreateMessage failure to a *channels.Error.
func (s *Sender) classify(ctx context.Context, m *channels.Message, c *call, err error) error {
	now := s.now()
	if ctx.Err() != nil {
		return ctxError(ctx, m, now)
	}
	retryAfter := parseRetryAfter(c.retryAfter, now)
	wrapped := fmt.Errorf("create message: %w", err)
	var tre *twclient.TwilioRestError
	if !errors.As(err, &tre) {
		switch {
		case c.status == http.StatusTooManyRequests:
			return channels.Transient(channels.ReasonRateLimited, "429", retryAfter, wrapped)
		case c.status >= 500:
			return channels.Transient(channels.ReasonUnavailable, strconv.Itoa(c.status), retryAfter, wrapped)
		case c.status >= 400:
			return channels.Permanent(channels.ReasonRejected, strconv.Itoa(c.status), wrapped)
		case c.status == 0:
			return channels.Transient(channels.ReasonNetwork, "", 0, wrapped)
		}
		// A 2xx whose body did not decode: Twilio may have queued the message.
		return channels.Transient(channels.ReasonUnknown, strconv.Itoa(c.status), 0, wrapped)
	}
	status := tre.Status
	if status == 0 {
		status = c.status
	}
	code := strconv.Itoa(tre.Code)
	if tre.Code == 0 {
		code = strconv.Itoa(status)
	}
	switch tre.Code {
	case codeInvalidTo, codeNotMobile:
		return channels.Permanent(channels.ReasonDeadAddress, code, wrapped)
	case codeUnsubscribed:
		return channels.Permanent(channels.ReasonUnsubscribed, code, wrapped)
	case codeNotReachable, codeGeoPermission:
		return channels.Permanent(channels.ReasonRejected, code, wrapped)
	case codeTooManyRequest:
		return channels.Transient(channels.ReasonRateLimited, code, retryAfter, wrapped)
	case codeAuthenticate:
		return channels.Permanent(channels.ReasonAuth, code, wrapped)
	}
	switch {
	case status == http.StatusTooManyRequests:
		return channels.Transient(channels.ReasonRateLimited, code, retryAfter, wrapped)
	case status >= 500:
		return channels.Transient(channels.ReasonUnavailable, code, retryAfter, wrapped)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return channels.Permanent(channels.ReasonAuth, code, wrapped)
	case status == http.StatusBadRequest:
		// Twilio's 400s are about the request's parameters (21602 body, 21606 From, ...).
		return channels.Permanent(channels.ReasonInvalid, code, wrapped)
	case status >= 400:
		return channels.Permanent(channels.ReasonRejected, code, wrapped)
	}
	return channels.Transient(channels.ReasonUnknown, code, retryAfter, wrapped)
}

// ctxError answers a message whose Send context ended: expired if its own
// deadline passed, a timeout (transient: it may still be delivered later) if
// only the call's deadline did, canceled otherwise.
func ctxError(ctx context.Context, m *channels.Message, now time.Time) error {
	cause := ctx.Err()
	if cause == nil {
		cause = context.Canceled
	}
	if m != nil && !m.Deadline.IsZero() && !now.Before(m.Deadline) {
		return channels.Permanent(channels.ReasonExpired, "", fmt.Errorf("create message: %w", cause))
	}
	if errors.Is(cause, context.DeadlineExceeded) {
		return channels.Transient(channels.ReasonNetwork, "timeout", 0, fmt.Errorf("create message: %w", cause))
	}
	return channels.Classify(fmt.Errorf("create message: %w", cause))
}

// parseRetryAfter reads Retry-After in seconds or as an HTTP date, capped at a day.
func parseRetryAfter(v string, now time.Time) time.Duration {
	return channels.ParseRetryAfter(v, now, 24*time.Hour)
}
