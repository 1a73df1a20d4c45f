package fcm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"

	"github.com/notifyd/notifyd/channels"
)

// classify maps one failed SendResponse to a *channels.Error.
func (s *Sender) classify(ctx context.Context, m *channels.Message, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return ctxError(ctx, m, s.now())
	}
	resp := errorutils.HTTPResponse(err)
	retryAfter := retryAfterOf(resp, s.now())
	wrapped := fmt.Errorf("send message: %w", err)
	if resp != nil {
		switch resp.Header.Get(syntheticHeader) {
		case syntheticNetwork:
			return channels.Transient(channels.ReasonNetwork, "", 0, wrapped)
		case syntheticTokenRefused:
			return channels.Permanent(channels.ReasonAuth, "token", wrapped)
		case syntheticTokenUnavailable:
			return channels.Transient(channels.ReasonUnavailable, "token", retryAfter, wrapped)
		}
	}
	switch {
	case messaging.IsUnregistered(err):
		return channels.Permanent(channels.ReasonDeadAddress, "UNREGISTERED", wrapped)
	case messaging.IsSenderIDMismatch(err):
		// The token belongs to another sender: this project can never reach it.
		return channels.Permanent(channels.ReasonDeadAddress, "SENDER_ID_MISMATCH", wrapped)
	case messaging.IsQuotaExceeded(err):
		return channels.Transient(channels.ReasonRateLimited, "QUOTA_EXCEEDED", retryAfter, wrapped)
	case messaging.IsUnavailable(err):
		return channels.Transient(channels.ReasonUnavailable, "UNAVAILABLE", retryAfter, wrapped)
	case messaging.IsInternal(err):
		return channels.Transient(channels.ReasonUnavailable, "INTERNAL", retryAfter, wrapped)
	case messaging.IsThirdPartyAuthError(err):
		return channels.Permanent(channels.ReasonAuth, "THIRD_PARTY_AUTH_ERROR", wrapped)
	case messaging.IsInvalidArgument(err):
		if badToken(err, resp) {
			return channels.Permanent(channels.ReasonDeadAddress, "INVALID_ARGUMENT", wrapped)
		}
		return channels.Permanent(channels.ReasonInvalid, "INVALID_ARGUMENT", wrapped)
	case errorutils.IsUnauthenticated(err), errorutils.IsPermissionDenied(err):
		return channels.Permanent(channels.ReasonAuth, statusCode(resp), wrapped)
	case errorutils.IsResourceExhausted(err):
		return channels.Transient(channels.ReasonRateLimited, statusCode(resp), retryAfter, wrapped)
	case errorutils.IsUnavailable(err), errorutils.IsInternal(err):
		return channels.Transient(channels.ReasonUnavailable, statusCode(resp), retryAfter, wrapped)
	case errorutils.IsDeadlineExceeded(err):
		return channels.Transient(channels.ReasonNetwork, "DEADLINE_EXCEEDED", 0, wrapped)
	case errorutils.IsNotFound(err):
		// 404 without UNREGISTERED: a wrong project or endpoint, not a dead token.
		return channels.Permanent(channels.ReasonRejected, "NOT_FOUND", wrapped)
	}
	if resp != nil && resp.StatusCode >= 500 {
		return channels.Transient(channels.ReasonUnavailable, statusCode(resp), retryAfter, wrapped)
	}
	if resp != nil && resp.StatusCode >= 400 {
		return channels.Permanent(channels.ReasonRejected, statusCode(resp), wrapped)
	}
	return channels.Transient(channels.ReasonUnknown, "", retryAfter, wrapped)
}

func statusCode(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	return strconv.Itoa(resp.StatusCode)
}

// badToken tells INVALID_ARGUMENT for a malformed registration token (a dead
// address) from INVALID_ARGUMENT for a malformed message (our bug): FCM names
// the field in a BadRequest fieldViolation, and says so in the message.
func badToken(err error, resp *http.Response) bool {
	if strings.Contains(strings.ToLower(err.Error()), "registration token") {
		return true
	}
	if resp == nil || resp.Body == nil {
		return false
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if rerr != nil {
		return false
	}
	var env struct {
		Error struct {
			Details []struct {
				Type            string `json:"@type"`
				FieldViolations []struct {
					Field string `json:"field"`
				} `json:"fieldViolations"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil {
		return false
	}
	for _, d := range env.Error.Details {
		for _, fv := range d.FieldViolations {
			if fv.Field == "message.token" {
				return true
			}
		}
	}
	return false
}

// ctxError answers a message whose Send context ended: expired if its own
// deadline passed, a timeout (transient: the message may still be delivered
// later) if only the call's deadline did, canceled otherwise.
func ctxError(ctx context.Context, m *channels.Message, now time.Time) error {
	cause := ctx.Err()
	if cause == nil {
		cause = context.Canceled
	}
	if m != nil && !m.Deadline.IsZero() && !now.Before(m.Deadline) {
		return channels.Permanent(channels.ReasonExpired, "", fmt.Errorf("send message: %w", cause))
	}
	if errors.Is(cause, context.DeadlineExceeded) {
		return channels.Transient(channels.ReasonNetwork, "timeout", 0, fmt.Errorf("send message: %w", cause))
	}
	return channels.Classify(fmt.Errorf("send message: %w", cause))
}

// retryAfterOf reads Retry-After (seconds or an HTTP date, capped at a day), preferring the
// original value guardTransport moved aside.
func retryAfterOf(resp *http.Response, now time.Time) time.Duration {
	if resp == nil {
		return 0
	}
	v := resp.Header.Get(origRetryAfterHeader)
	if v == "" {
		v = resp.Header.Get("Retry-After")
	}
	return parseRetryAfter(v, now)
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	return channels.ParseRetryAfter(v, now, 24*time.Hour)
}
