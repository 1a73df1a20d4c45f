package campaigns

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestAttemptCtx holds the ledger's lazy attempt context to what
// context.WithDeadline answers: deadline (the sooner of its own and the
// parent's), errors after cancel, parent cancel and expiry, with and without
// anyone having asked for Done, and Done closing on each of those.
func TestAttemptCtx(t *testing.T) {
	type key struct{}
	tests := []struct {
		name     string
		parent   func() (context.Context, context.CancelFunc)
		own      time.Duration
		askDone  bool
		act      func(c *attemptCtx, cancelParent context.CancelFunc)
		wantErr  error
		wantSoon bool // deadline is the parent's
	}{
		{name: "live", own: time.Hour, act: func(*attemptCtx, context.CancelFunc) {}},
		{name: "live, Done asked", own: time.Hour, askDone: true, act: func(*attemptCtx, context.CancelFunc) {}},
		{name: "canceled", own: time.Hour, act: func(c *attemptCtx, _ context.CancelFunc) { c.cancel() }, wantErr: context.Canceled},
		{name: "canceled, Done asked", own: time.Hour, askDone: true, act: func(c *attemptCtx, _ context.CancelFunc) { c.cancel() }, wantErr: context.Canceled},
		{name: "parent canceled", own: time.Hour, act: func(_ *attemptCtx, cp context.CancelFunc) { cp() }, wantErr: context.Canceled},
		{name: "parent canceled, Done asked", own: time.Hour, askDone: true, act: func(_ *attemptCtx, cp context.CancelFunc) { cp() }, wantErr: context.Canceled},
		{name: "expired", own: 20 * time.Millisecond, act: func(*attemptCtx, context.CancelFunc) { time.Sleep(40 * time.Millisecond) }, wantErr: context.DeadlineExceeded},
		{name: "expired, Done asked", own: 20 * time.Millisecond, askDone: true, act: func(*attemptCtx, context.CancelFunc) { time.Sleep(40 * time.Millisecond) }, wantErr: context.DeadlineExceeded},
		{name: "parent's deadline sooner", own: time.Hour, parent: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Minute)
		}, act: func(*attemptCtx, context.CancelFunc) {}, wantSoon: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pf := tc.parent
			if pf == nil {
				pf = func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }
			}
			parent, cancelParent := pf()
			defer cancelParent()
			parent = context.WithValue(parent, key{}, "v")
			start := time.Now()
			c := newAttemptCtx(parent, start.Add(tc.own))
			defer c.cancel()
			var done <-chan struct{}
			if tc.askDone {
				done = c.Done()
			}
			tc.act(c, cancelParent)
			if err := c.Err(); !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Err() = %v, want %v", err, tc.wantErr)
			}
			if done == nil {
				done = c.Done() // asked late: must be closed already when Err is set
			}
			select {
			case <-done:
				if tc.wantErr == nil {
					t.Fatal("Done closed on a live context")
				}
			case <-time.After(200 * time.Millisecond):
				if tc.wantErr != nil {
					t.Fatal("Done not closed")
				}
			}
			dl, ok := c.Deadline()
			pdl, _ := parent.Deadline()
			switch {
			case !ok:
				t.Fatal("no deadline")
			case tc.wantSoon && !dl.Equal(pdl):
				t.Fatalf("deadline %v, want the parent's %v", dl, pdl)
			case !tc.wantSoon && !dl.Equal(start.Add(tc.own)):
				t.Fatalf("deadline %v, want %v", dl, start.Add(tc.own))
			}
			if v := c.Value(key{}); v != "v" {
				t.Fatalf("Value = %v, want the parent's", v)
			}
		})
	}
}
