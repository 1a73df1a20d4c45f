package channels_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
)

// TestPoolExactlyOneOutcome drives many submitters, workers, retries and
// faults through the real clock, then checks every message left exactly once
// and in the right state.
func TestPoolExactlyOneOutcome(t *testing.T) {
	transient := channels.Transient(channels.ReasonUnavailable, "503", 0, errors.New("unavailable"))
	classes := []struct {
		answers []channelstest.Answer
		want    channels.OutcomeStatus
	}{
		{nil, channels.OutcomeAccepted},
		{[]channelstest.Answer{{Err: transient}, {}}, channels.OutcomeAccepted},
		{[]channelstest.Answer{{Err: channels.Permanent(channels.ReasonInvalid, "400", errors.New("bad"))}}, channels.OutcomeFailed},
		{[]channelstest.Answer{{Err: channels.Permanent(channels.ReasonDeadAddress, "410", errors.New("gone"))}}, channels.OutcomeDeadAddress},
		{[]channelstest.Answer{{Err: transient}}, channels.OutcomeRetriesExhausted},
	}
	tests := []struct {
		name  string
		abort bool // stop half way instead of draining
	}{
		{name: "drain"},
		{name: "abort half way", abort: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const submitters, perSubmitter = 4, 400
			ch := channelstest.NewScripted("stress")
			outs := &channelstest.Outcomes{}
			fb := &channels.MemoryFeedback{}
			p, err := channels.NewWorkerPool(ch, channels.PoolConfig{
				Workers: 4, BatchSize: 3, QueueSize: 64, MaxAttempts: 3,
				BackoffBase: time.Microsecond, BackoffMax: 10 * time.Microsecond, Outcomes: outs,
			}, channels.WithFeedbackSink(fb), channels.WithLogger(quiet()))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]channels.OutcomeStatus{}
			var msgs [submitters][]*channels.Message
			for s := range submitters {
				for i := range perSubmitter {
					id := fmt.Sprintf("s%d-%d", s, i)
					c := classes[(s+i)%len(classes)]
					to := "addr-" + id
					if c.answers != nil {
						ch.Script(to, c.answers...)
					}
					want[id] = c.want
					m := msg(id, to, fmt.Sprintf("camp%d", i%3))
					msgs[s] = append(msgs[s], m)
				}
			}
			if err := p.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			taken := make([]int, submitters)
			for s := range submitters {
				wg.Go(func() {
					lane := channels.Lane(s % 2)
					for i := 0; i < perSubmitter; i += 10 {
						n, err := p.Submit(context.Background(), lane, msgs[s][i:i+10]...)
						taken[s] += n
						if err != nil {
							if !tc.abort || !errors.Is(err, channels.ErrPoolClosed) {
								t.Errorf("Submit: %v", err)
							}
							return
						}
					}
				})
			}
			if tc.abort {
				channelstest.Eventually(t, waitFor, func() bool { return outs.Len() > submitters*perSubmitter/2 }, "half the outcomes")
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				_ = p.Close(ctx)
				wg.Wait()
			} else {
				wg.Wait()
				if err := p.Close(context.Background()); err != nil {
					t.Fatalf("Close: %v", err)
				}
			}
			submitted := map[string]bool{}
			for s := range submitters {
				for _, m := range msgs[s][:taken[s]] {
					submitted[m.ID] = true
				}
			}
			byID := outs.ByID()
			if len(byID) != len(submitted) || outs.Len() != len(submitted) {
				t.Fatalf("%d outcomes for %d distinct messages, %d submitted", outs.Len(), len(byID), len(submitted))
			}
			dead := 0
			for id := range submitted {
				got := byID[id]
				if len(got) != 1 {
					t.Fatalf("message %s: %d outcomes", id, len(got))
				}
				if got[0].Status == channels.OutcomeDeadAddress {
					dead++
				}
				if got[0].Status != want[id] && !(tc.abort && got[0].Status == channels.OutcomeCanceled) {
					t.Fatalf("message %s: %s, want %s", id, got[0].Status, want[id])
				}
			}
			if fb.Len() != dead {
				t.Fatalf("%d feedback records for %d dead addresses", fb.Len(), dead)
			}
			if s := p.Stats(); s.InFlight != 0 || s.Retrying != 0 || s.Queued != [2]int{} {
				t.Fatalf("pool not empty after Close: %+v", s)
			}
		})
	}
}
