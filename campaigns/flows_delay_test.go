package campaigns_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/store/memstate"
)

// delayedFlow sends its SMS 300ms after the trigger, on every trigger (no
// re-entry window), so only the delay queue and idempotency keys stand
// between a re-delivery and a second message.
var delayedFlow = strings.Replace(welcomeFlow, `"channels"`, `"delay":"300ms","reentry":"0s","channels"`, 1)

func (fr *flowRig) waitSMS(t *testing.T, n int) {
	t.Helper()
	channelstest.Eventually(t, 30*time.Second, func() bool { return len(fr.sms()) >= n }, "fewer than %d SMS sent: %q", n, fr.sms())
}

func delayLen(t *testing.T, q campaigns.DelayQueue) int64 {
	t.Helper()
	n, err := q.Len(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDelayedTriggerWaitsThenSendsOnce(t *testing.T) {
	fr := newFlowRig(t, nil)
	ctx := context.Background()
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(delayedFlow)); err != nil {
		t.Fatal(err)
	}
	u := fr.src.members[1]
	fired := time.Now()
	res, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: u.ID, Properties: map[string]any{"code": "LATER"}}})
	if err != nil || res[0].Status != "accepted" || len(res[0].Flows) != 1 {
		t.Fatalf("fire: %+v %v", res, err)
	}
	if n := delayLen(t, fr.state.Delays()); n != 1 {
		t.Fatalf("delay queue holds %d, want 1", n)
	}
	fr.waitSMS(t, 1)
	if waited := time.Since(fired); waited < 300*time.Millisecond {
		t.Fatalf("sent after %v, before the 300ms delay", waited)
	}
	if got := fr.sms(); got[0] != u.Phone+"|Welcome Ann1! Code LATER" {
		t.Fatalf("sent %q", got)
	}
	channelstest.Eventually(t, 10*time.Second, func() bool { return delayLen(t, fr.state.Delays()) == 0 },
		"delay queue still holds the sent trigger")
}

func TestDelayedTriggersSurviveARestart(t *testing.T) {
	fr := newFlowRig(t, nil)
	ctx := context.Background()
	slow := strings.Replace(delayedFlow, `"300ms"`, `"1s"`, 1)
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(slow)); err != nil {
		t.Fatal(err)
	}
	for _, m := range fr.src.members[1:4] {
		if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: m.ID}}); err != nil {
			t.Fatal(err)
		}
	}
	// A graceful stop before they are due: nothing is sent, nothing dropped.
	stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := fr.flows.Close(stopCtx); err != nil {
		t.Fatal(err)
	}
	if n := len(fr.sms()); n != 0 {
		t.Fatalf("sent %d before the delay", n)
	}
	if n := delayLen(t, fr.state.Delays()); n != 3 {
		t.Fatalf("delay queue holds %d after the stop, want 3", n)
	}
	// The next incarnation sends them, each once.
	fr.flows = fr.newEngine(t, nil, campaigns.FlowConfig{})
	fr.waitSMS(t, 3)
	channelstest.Eventually(t, 10*time.Second, func() bool { return delayLen(t, fr.state.Delays()) == 0 }, "delay queue not emptied")
	if got := fr.sms(); len(got) != 3 {
		t.Fatalf("sent %q, want 3 messages", got)
	}
}

// forgetfulDone is a delay queue whose Done is lost, as when a daemon dies
// after sending but before forgetting the item.
type forgetfulDone struct{ campaigns.DelayQueue }

func (forgetfulDone) Done(context.Context, []string) error { return nil }

func TestRedeliveredDelayedTriggerIsNotSentTwice(t *testing.T) {
	fr := newFlowRigOpts(t, flowRigOpts{
		delays: func(s *memstate.Store) campaigns.DelayQueue { return forgetfulDone{s.Delays()} },
		// A short lease hands the un-forgotten item out again quickly.
		cfg: campaigns.FlowConfig{Lease: 200 * time.Millisecond},
	})
	ctx := context.Background()
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(delayedFlow)); err != nil {
		t.Fatal(err)
	}
	if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: fr.src.members[1].ID}}); err != nil {
		t.Fatal(err)
	}
	fr.waitSMS(t, 1)
	// Every lease the item comes back; the dedup key derived from its ID
	// answers "duplicate" each time.
	st := fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonDuplicate, 2)
	if n := len(fr.sms()); n != 1 {
		t.Fatalf("sent %d messages for one delayed trigger (counts %v)", n, st.Counts)
	}
}

func TestDelayedTriggerWithIdempotencyKeyIsScheduledOnce(t *testing.T) {
	fr := newFlowRig(t, nil)
	ctx := context.Background()
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(delayedFlow)); err != nil {
		t.Fatal(err)
	}
	trig := campaigns.Trigger{Flow: "welcome", UserID: fr.src.members[1].ID, IdempotencyKey: "order-7"}
	for range 3 { // a client retrying its request
		if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{trig}); err != nil {
			t.Fatal(err)
		}
	}
	if n := delayLen(t, fr.state.Delays()); n != 1 {
		t.Fatalf("delay queue holds %d, want 1", n)
	}
	fr.waitSMS(t, 1)
	channelstest.Eventually(t, 10*time.Second, func() bool { return delayLen(t, fr.state.Delays()) == 0 }, "delay queue not emptied")
	if n := len(fr.sms()); n != 1 {
		t.Fatalf("sent %d, want 1", n)
	}
}

// brokenDelays is a delay store that is down.
type brokenDelays struct{ campaigns.DelayQueue }

func (brokenDelays) Schedule(context.Context, []campaigns.Delayed) error {
	return errors.New("dial tcp 127.0.0.1:6379: connection refused")
}

func TestFireWithDelayStoreDownTakesNothing(t *testing.T) {
	fr := newFlowRigOpts(t, flowRigOpts{delays: func(s *memstate.Store) campaigns.DelayQueue { return brokenDelays{s.Delays()} }})
	ctx := context.Background()
	immediate := strings.Replace(strings.Replace(welcomeFlow, `"id":"welcome"`, `"id":"now"`, 1), `"channels"`, `"reentry":"0s","channels"`, 1)
	for _, f := range []string{delayedFlow, immediate} {
		if _, _, err := fr.flows.CreateFlow(ctx, []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	u := fr.src.members[1].ID
	_, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "now", UserID: u}, {Flow: "welcome", UserID: u}})
	if err == nil || !strings.Contains(err.Error(), "store delayed triggers") {
		t.Fatalf("Fire = %v, want the delay store's error", err)
	}
	// The request was not taken at all, so the caller's retry cannot
	// duplicate the immediate trigger. A later trigger going through shows
	// the engine had its chance to send the first one.
	other := fr.src.members[2]
	if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "now", UserID: other.ID}}); err != nil {
		t.Fatal(err)
	}
	fr.waitSMS(t, 1)
	fr.waitCount(t, "now", channels.SMS, campaigns.ReasonSent, 1)
	if got := fr.sms(); len(got) != 1 || !strings.HasPrefix(got[0], other.Phone+"|") {
		t.Fatalf("sent %q, want only the later trigger's message", got)
	}
}
