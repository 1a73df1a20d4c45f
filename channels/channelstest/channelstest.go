package channelstest

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
)

// LogBuffer is a concurrency-safe buffer behind a slog.Logger, for asserting
// what a channel logged.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// NewLogger returns a debug-level text logger writing into a LogBuffer.
func NewLogger() (*slog.Logger, *LogBuffer) {
	lb := &LogBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// AssertNoSecret fails the test if any secret appears in any text. Empty
// secrets are ignored. Call it with every error string and the captured log
// of a channel that was driven through success and failure paths.
func AssertNoSecret(t testing.TB, secrets []string, texts ...string) {
	t.Helper()
	for _, s := range secrets {
		if len(s) < 4 {
			continue
		}
		for i, txt := range texts {
			if strings.Contains(txt, s) {
				t.Errorf("secret %q... leaked in text %d: %q", s[:4], i, truncate(txt))
			}
		}
	}
}

// ErrorTexts returns the Error() strings of every failed result.
func ErrorTexts(results []channels.Result) []string {
	var out []string
	for _, r := range results {
		if r.Err != nil {
			out = append(out, r.Err.Error())
		}
	}
	return out
}

// RequireReason fails unless err is a *channels.Error with the given reason and permanence.
func RequireReason(t testing.TB, err error, reason channels.Reason, permanent bool) *channels.Error {
	t.Helper()
	var ce *channels.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *channels.Error", err)
	}
	if ce.Reason != reason || ce.Permanent != permanent {
		t.Fatalf("got reason=%s permanent=%v (%v), want reason=%s permanent=%v", ce.Reason, ce.Permanent, ce, reason, permanent)
	}
	return ce
}

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// RequireRetryAfter fails unless err is a transient *channels.Error with the
// given reason whose RetryAfter is want: what every provider must surface
// from a 429/503 with a Retry-After header (or its protocol's equivalent).
func RequireRetryAfter(t testing.TB, err error, reason channels.Reason, want time.Duration) *channels.Error {
	t.Helper()
	ce := RequireReason(t, err, reason, false)
	if ce.RetryAfter != want {
		t.Fatalf("RetryAfter = %v, want %v (%v)", ce.RetryAfter, want, ce)
	}
	return ce
}

// RequireResults fails unless a Send answered one result per message.
func RequireResults(t testing.TB, batch []*channels.Message, results []channels.Result) {
	t.Helper()
	if len(results) != len(batch) {
		t.Fatalf("Send returned %d results for %d messages", len(results), len(batch))
	}
}
