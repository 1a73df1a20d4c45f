package channelstest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
)

// Outcomes is a channels.OutcomeSink that keeps every outcome.
type Outcomes struct {
	mu   sync.Mutex
	outs []channels.Outcome
}

var _ channels.OutcomeSink = (*Outcomes)(nil)

// Outcomes records outs.
func (o *Outcomes) Outcomes(_ context.Context, outs []channels.Outcome) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.outs = append(o.outs, outs...)
}

// All returns a copy of every outcome, in arrival order.
func (o *Outcomes) All() []channels.Outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]channels.Outcome(nil), o.outs...)
}

// Len is the number of outcomes.
func (o *Outcomes) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.outs)
}

// ByID returns the outcomes by message ID. A correct pool gives one each.
func (o *Outcomes) ByID() map[string][]channels.Outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := make(map[string][]channels.Outcome, len(o.outs))
	for _, out := range o.outs {
		m[out.Message.ID] = append(m[out.Message.ID], out)
	}
	return m
}

// WaitLen polls until at least n outcomes arrived, failing after timeout.
func (o *Outcomes) WaitLen(t testing.TB, n int, timeout time.Duration) []channels.Outcome {
	t.Helper()
	Eventually(t, timeout, func() bool { return o.Len() >= n }, "want %d outcomes", n)
	return o.All()
}

// Eventually polls cond every millisecond until it holds, failing the test
// with msg after timeout. It is the way to wait for a result: never sleep.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: "+msg, append([]any{timeout}, args...)...)
		}
		<-tick.C
	}
}
