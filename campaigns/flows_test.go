package campaigns_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/store/memstate"
)

type flowRig struct {
	*rig
	state *memstate.Store
	dedup campaigns.DedupLog
	flows *campaigns.FlowEngine
	// highDispatched is closed once a triggered message was handed to a pool.
	highDispatched chan struct{}

	mu     sync.Mutex
	bodies map[string][]string // channel → rendered SMS bodies / email subjects, in send order
}

func newFlowRig(t *testing.T, dedup campaigns.DedupLog, members ...int) *flowRig {
	t.Helper()
	o := flowRigOpts{dedup: dedup}
	if len(members) > 0 {
		o.members = members[0]
	}
	return newFlowRigOpts(t, o)
}

type flowRigOpts struct {
	dedup   campaigns.DedupLog
	delays  func(state *memstate.Store) campaigns.DelayQueue // state.Delays() when nil
	cfg     campaigns.FlowConfig
	members int // 50 when zero
}

func newFlowRigOpts(t *testing.T, o flowRigOpts) *flowRig {
	t.Helper()
	state := memstate.New()
	n := o.members
	if n == 0 {
		n = 50
	}
	r := newRig(t, state, newSource(n), campaigns.EngineConfig{})
	fr := &flowRig{rig: r, state: state, bodies: map[string][]string{}, highDispatched: make(chan struct{})}
	r.chans[channels.SMS].OnSend(func(batch []*channels.Message) {
		fr.mu.Lock()
		defer fr.mu.Unlock()
		for _, m := range batch {
			fr.bodies[channels.SMS] = append(fr.bodies[channels.SMS], m.To+"|"+m.Text.Body)
		}
	})
	fr.dedup = o.dedup
	if fr.dedup == nil {
		fr.dedup = state.Dedup("test")
	}
	fr.flows = fr.newEngine(t, o.delays, o.cfg)
	return fr
}

// newEngine starts another flow engine on the rig's state and pools, as a
// restarted daemon would: it loads the stored flows.
func (fr *flowRig) newEngine(t *testing.T, delays func(*memstate.Store) campaigns.DelayQueue, cfg campaigns.FlowConfig) *campaigns.FlowEngine {
	t.Helper()
	var q campaigns.DelayQueue = fr.state.Delays()
	if delays != nil {
		q = delays(fr.state)
	}
	fe := campaigns.NewFlowEngine(fr.state.Flows(), fr.dedup, q, fr.src, &signalDispatcher{Dispatcher: campaigns.NewPoolDispatcher(fr.pools), high: fr.highDispatched}, cfg)
	if err := fe.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	fe.Start(context.Background())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = fe.Close(ctx)
	})
	return fe
}

func (fr *flowRig) sms() []string {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return append([]string(nil), fr.bodies[channels.SMS]...)
}

func (fr *flowRig) waitCount(t *testing.T, flow, ch, reason string, n int64) campaigns.FlowStatus {
	t.Helper()
	var st campaigns.FlowStatus
	channelstest.Eventually(t, 30*time.Second, func() bool {
		var err error
		st, err = fr.flows.GetFlow(context.Background(), flow)
		return err == nil && st.Counts[ch][reason] >= n
	}, "flow %s never counted %d %s/%s (last %+v)", flow, n, ch, reason, &st)
	return st
}

const welcomeFlow = `{"id":"welcome","trigger":{"segment":"new_signups"},"channels":["sms"],
  "content":{"sms":{"body":"Welcome {{ profile.first_name }}! Code {{ event.code | default: 'NONE' }}"}}}`

func TestFlowSendsOnTriggerWithEventBindings(t *testing.T) {
	fr := newFlowRig(t, nil)
	ctx := context.Background()
	st, created, err := fr.flows.CreateFlow(ctx, []byte(welcomeFlow))
	if err != nil || !created || st.Status != campaigns.StatusRunning {
		t.Fatalf("create flow: %+v %v %v", st, created, err)
	}
	if _, created, err := fr.flows.CreateFlow(ctx, []byte(welcomeFlow)); err != nil || created {
		t.Fatalf("re-create: created=%v err=%v", created, err)
	}
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(strings.Replace(welcomeFlow, "Welcome", "Hello", 1))); !errors.Is(err, campaigns.ErrConflict) {
		t.Fatalf("conflicting flow: %v", err)
	}
	// Flows do not show up as campaigns, and are not started as campaigns.
	if list, err := fr.engine.List(ctx, "", 10); err != nil || len(list) != 0 {
		t.Fatalf("campaign list shows flows: %v %v", list, err)
	}

	u := fr.src.members[1]
	res, err := fr.flows.Fire(ctx, []campaigns.Trigger{
		{Segment: "new_signups", UserID: u.ID, Properties: map[string]any{"code": "WELCOME10"}},
		{Segment: "new_signups", UserID: "no-such-user"},
		{Flow: "nope", UserID: u.ID},
		{Segment: "nobody_listens", UserID: u.ID},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"accepted", campaigns.ReasonUnknownUser, "unknown_flow", "no_flow"}
	for i, w := range want {
		if res[i].Status != w {
			t.Errorf("trigger %d: %s, want %s", i, res[i].Status, w)
		}
	}
	st = fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 1)
	if st.Counts[channels.SMS][campaigns.ReasonUnknownUser] != 1 {
		t.Errorf("unknown user not counted: %v", st.Counts)
	}
	got := fr.sms()
	if len(got) != 1 || got[0] != u.Phone+"|Welcome Ann1! Code WELCOME10" {
		t.Fatalf("sent %q", got)
	}

	// Re-entry: the same user again within 24h gets nothing.
	if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: u.ID}}); err != nil {
		t.Fatal(err)
	}
	fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonDuplicate, 1)
	if n := len(fr.sms()); n != 1 {
		t.Fatalf("re-entry sent again: %d messages", n)
	}

	// Paused flows take no triggers; deleted ones are gone.
	if _, err := fr.flows.SetFlowStatus(ctx, "welcome", campaigns.StatusPaused); err != nil {
		t.Fatal(err)
	}
	res, _ = fr.flows.Fire(ctx, []campaigns.Trigger{{Segment: "new_signups", UserID: fr.src.members[2].ID}})
	if res[0].Status != "no_flow" {
		t.Fatalf("paused flow took a trigger: %+v", res[0])
	}
	if _, err := fr.flows.SetFlowStatus(ctx, "welcome", campaigns.StatusCancelled); err != nil {
		t.Fatal(err)
	}
	if _, err := fr.flows.GetFlow(ctx, "welcome"); !errors.Is(err, campaigns.ErrNotFound) {
		t.Fatalf("deleted flow still there: %v", err)
	}
}

func TestFlowIdempotencyKeyWithoutReEntry(t *testing.T) {
	fr := newFlowRig(t, nil)
	ctx := context.Background()
	f := strings.Replace(welcomeFlow, `"channels"`, `"reentry":"0s","channels"`, 1)
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(f)); err != nil {
		t.Fatal(err)
	}
	u := fr.src.members[1].ID
	fire := func(key string) {
		if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: u, IdempotencyKey: key}}); err != nil {
			t.Fatal(err)
		}
	}
	fire("order-1")
	fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 1)
	fire("order-1") // a re-delivered trigger
	fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonDuplicate, 1)
	fire("order-2") // a new event: no re-entry limit
	fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 2)
	if n := len(fr.sms()); n != 2 {
		t.Fatalf("sent %d, want 2", n)
	}
}

// brokenDedup is a dedup store that is down.
type brokenDedup struct{}

func (brokenDedup) Claim(context.Context, []campaigns.DedupKey, time.Duration, time.Duration) ([]campaigns.ClaimState, error) {
	return nil, errors.New("dial tcp 127.0.0.1:6379: connection refused")
}
func (brokenDedup) Confirm(context.Context, []campaigns.DedupKey, time.Duration) error { return nil }
func (brokenDedup) Release(context.Context, []campaigns.DedupKey) error                { return nil }

// flakyDedup is a dedup store that is down while down is set.
type flakyDedup struct {
	campaigns.DedupLog
	down   atomic.Bool
	claims atomic.Int64
}

func (d *flakyDedup) Claim(ctx context.Context, keys []campaigns.DedupKey, lease, window time.Duration) ([]campaigns.ClaimState, error) {
	d.claims.Add(1)
	if d.down.Load() {
		return brokenDedup{}.Claim(ctx, keys, lease, window)
	}
	return d.DedupLog.Claim(ctx, keys, lease, window)
}

// TestFlowHoldsTriggersWhileDedupIsDown: a trigger accepted just before the
// dedup store dropped is neither sent without a claim nor dropped as
// dedup_unavailable: it waits, and is sent once the store answers again.
func TestFlowHoldsTriggersWhileDedupIsDown(t *testing.T) {
	state := memstate.New()
	dedup := &flakyDedup{DedupLog: state.Dedup("test")}
	dedup.down.Store(true)
	fr := newFlowRig(t, dedup)
	ctx := context.Background()
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(welcomeFlow)); err != nil {
		t.Fatal(err)
	}
	if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: fr.src.members[1].ID}}); err != nil {
		t.Fatal(err)
	}
	channelstest.Eventually(t, 10*time.Second, func() bool { return dedup.claims.Load() >= 3 }, "claim never retried")
	if n := len(fr.sms()); n != 0 {
		t.Fatalf("sent %d messages without a dedup record", n)
	}
	dedup.down.Store(false)
	st := fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 1)
	if n := len(fr.sms()); n != 1 || st.Counts[channels.SMS][campaigns.ReasonDedupUnavailable] != 0 {
		t.Fatalf("sent %d, counts %v: want the held trigger sent once, nothing dropped", n, st.Counts)
	}
}

// TestFlowDedupDownAtCloseKeepsTriggersDurably: an engine that closes while
// the dedup store is still away moves the held trigger into the delay queue;
// the next engine sends it. With the delay queue away too, the loss is
// counted dedup_unavailable, not hidden.
func TestFlowDedupDownAtCloseKeepsTriggersDurably(t *testing.T) {
	t.Run("delay queue answers", func(t *testing.T) {
		fr := newFlowRig(t, brokenDedup{})
		ctx := context.Background()
		if _, _, err := fr.flows.CreateFlow(ctx, []byte(welcomeFlow)); err != nil {
			t.Fatal(err)
		}
		if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: fr.src.members[1].ID}}); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := fr.flows.Close(cctx); err != nil {
			t.Fatal(err)
		}
		if n := delayLen(t, fr.state.Delays()); n != 1 {
			t.Fatalf("delay queue holds %d items after close, want the held trigger", n)
		}
		st, _ := fr.flows.GetFlow(ctx, "welcome")
		if len(fr.sms()) != 0 || st.Counts[channels.SMS][campaigns.ReasonDedupUnavailable] != 0 {
			t.Fatalf("sms %q counts %v: want nothing sent and nothing dropped", fr.sms(), st.Counts)
		}
		fr.dedup = fr.state.Dedup("test") // the store is back; a new daemon starts
		fr.flows = fr.newEngine(t, nil, campaigns.FlowConfig{})
		fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 1)
		if n := len(fr.sms()); n != 1 {
			t.Fatalf("sent %d, want 1", n)
		}
	})
	t.Run("delay queue away too", func(t *testing.T) {
		fr := newFlowRigOpts(t, flowRigOpts{dedup: brokenDedup{}, delays: func(s *memstate.Store) campaigns.DelayQueue { return brokenDelays{s.Delays()} }})
		ctx := context.Background()
		if _, _, err := fr.flows.CreateFlow(ctx, []byte(welcomeFlow)); err != nil {
			t.Fatal(err)
		}
		if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: fr.src.members[1].ID}}); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := fr.flows.Close(cctx); err != nil {
			t.Fatal(err)
		}
		fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonDedupUnavailable, 1)
		if n := len(fr.sms()); n != 0 {
			t.Fatalf("sent %d messages without a dedup record", n)
		}
	})
}

func TestTriggersAreNotStuckBehindACampaign(t *testing.T) {
	fr := newFlowRig(t, nil, 2000)
	ctx := context.Background()
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(welcomeFlow)); err != nil {
		t.Fatal(err)
	}
	// Hold the SMS pool's workers while a campaign fills its queue.
	gate := make(chan struct{})
	var openGate sync.Once
	t.Cleanup(func() { openGate.Do(func() { close(gate) }) }) // never leave workers blocked
	var order []string
	var mu sync.Mutex
	fr.chans[channels.SMS].OnSend(func([]*channels.Message) { <-gate })
	record := func(ch string, batch []*channels.Message) {
		if ch != channels.SMS {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, m := range batch {
			order = append(order, m.Campaign)
		}
	}
	fr.onHandoff.Store(&record)
	b := `{"id":"big","segment":"all","channels":["sms"],"content":{"sms":{"body":"sale"}}}`
	if _, _, err := fr.engine.Create(ctx, []byte(b)); err != nil {
		t.Fatal(err)
	}
	// Both workers hold a full batch and a backlog waits behind them: the
	// campaign's whole window (4 open batches of 100 members, 6 in 7 with a
	// phone: ~343 texts) minus the 2×50 the workers hold.
	channelstest.Eventually(t, 30*time.Second, func() bool {
		st := fr.pools[channels.SMS].Stats()
		return st.IdleWorkers == 0 && st.Queued[channels.LaneNormal] > 200
	}, "campaign never filled the pool")
	res, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: fr.src.members[3].ID}})
	if err != nil || res[0].Status != "accepted" {
		t.Fatalf("fire: %+v %v", res, err)
	}
	select {
	case <-fr.highDispatched:
	case <-time.After(30 * time.Second):
		t.Fatal("the trigger's message never reached the pool")
	}
	openGate.Do(func() { close(gate) })
	fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 1)
	waitStatus(t, fr.engine, "big", campaigns.StatusCompleted)
	mu.Lock()
	defer mu.Unlock()
	pos := -1
	for i, c := range order {
		if c == "welcome" {
			pos = i
		}
	}
	// The workers held one batch each (2 × 50) when the trigger arrived; the
	// next batch taken carries it. The other worker may take one more batch
	// between that take and its hand-off being recorded, hence 4 × 50; the
	// campaign's backlog (> 200 more) is what it must not wait behind.
	if pos < 0 || pos > 4*50 {
		t.Fatalf("trigger sent at position %d of %d, behind the campaign's backlog", pos, len(order))
	}
}

// signalDispatcher closes high after the first high-lane dispatch.
type signalDispatcher struct {
	campaigns.Dispatcher
	high chan struct{}
	once sync.Once
}

func (d *signalDispatcher) Dispatch(ctx context.Context, ch string, lane channels.Lane, msgs []*channels.Message) (int, error) {
	n, err := d.Dispatcher.Dispatch(ctx, ch, lane, msgs)
	if lane == channels.LaneHigh && n > 0 {
		d.once.Do(func() { close(d.high) })
	}
	return n, err
}

// TestForwardedTriggerKeepsItsArrival: a trigger forwarded by another
// daemon of the fleet keeps the time it arrived there. Its messages report
// that arrival (the user's latency, not the hop's), and a forwarded entry the
// stream delivers twice carries the same provider idempotency handle both
// times (for a trigger with no key of its own it is made from the arrival).
func TestForwardedTriggerKeepsItsArrival(t *testing.T) {
	fr := newFlowRig(t, nil)
	ctx := context.Background()
	f := strings.Replace(welcomeFlow, `"channels"`, `"reentry":"0s","channels"`, 1)
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(f)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var arrivals []time.Time
	var handles []string
	fr.chans[channels.SMS].OnSend(func(batch []*channels.Message) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range batch {
			arrivals = append(arrivals, m.Arrived)
			handles = append(handles, m.IdempotencyKey)
		}
	})
	first := time.Now().Add(-1500 * time.Millisecond).Round(0)
	body, err := json.Marshal(campaigns.Forwarded{Arrived: first, Triggers: []campaigns.Trigger{{Flow: "welcome", UserID: fr.src.members[1].ID}}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the stream delivers the entry twice
		fwd, err := campaigns.DecodeForwarded(body)
		if err != nil {
			t.Fatal(err)
		}
		if res, err := fr.flows.FireForwarded(ctx, fwd); err != nil || res[0].Status != "accepted" {
			t.Fatalf("fire forwarded: %+v %v", res, err)
		}
		time.Sleep(2 * time.Millisecond) // the second delivery comes later
	}
	fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 2)
	mu.Lock()
	if len(arrivals) != 2 || !arrivals[0].Equal(first) || !arrivals[1].Equal(first) {
		t.Fatalf("arrivals %v, want both %v", arrivals, first)
	}
	if handles[0] == "" || handles[0] != handles[1] {
		t.Fatalf("idempotency handles %q, want one handle for both deliveries", handles)
	}
	mu.Unlock()

	// A sender whose clock runs ahead cannot date a trigger in the future.
	ahead := campaigns.Forwarded{Arrived: time.Now().Add(time.Hour), Triggers: []campaigns.Trigger{{Flow: "welcome", UserID: fr.src.members[2].ID}}}
	if _, err := fr.flows.FireForwarded(ctx, ahead); err != nil {
		t.Fatal(err)
	}
	fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 3)
	mu.Lock()
	defer mu.Unlock()
	if len(arrivals) != 3 || arrivals[2].After(time.Now()) {
		t.Fatalf("arrival of a trigger dated an hour ahead: %v", arrivals)
	}
}

func TestDecodeForwarded(t *testing.T) {
	for _, tc := range []struct{ name, body, err string }{
		{name: "ok", body: `{"arrived":"2026-12-04T10:00:00Z","triggers":[{"flow":"f","user_id":"u"}]}`},
		{name: "written before arrival was carried", body: `{"triggers":[{"flow":"f","user_id":"u"}]}`},
		{name: "no triggers", body: `{"arrived":"2026-12-04T10:00:00Z","triggers":[]}`, err: "triggers"},
		{name: "no user", body: `{"triggers":[{"flow":"f"}]}`, err: "user_id"},
		{name: "unknown field", body: `{"triggers":[{"flow":"f","user_id":"u"}],"x":1}`, err: "x"},
		{name: "not JSON", body: `{`, err: "body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := campaigns.DecodeForwarded([]byte(tc.body))
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err %v, want containing %q", err, tc.err)
			}
		})
	}
}

// renderSignal is a trigger property whose rendering closes rendered: the
// template engine asks it for its value (ToLiquid on Liquid's path, String
// on the compiled fast path).
type renderSignal struct {
	once     *sync.Once
	rendered chan struct{}
}

func (s renderSignal) ToLiquid() any {
	s.once.Do(func() { close(s.rendered) })
	return "SIGNAL"
}

func (s renderSignal) String() string { return s.ToLiquid().(string) }

// answerAfterRender is a dedup store whose claims answer only once the
// batch's template was rendered (or after 5 s): a flow that waits for the
// claim before rendering takes those 5 s.
type answerAfterRender struct {
	campaigns.DedupLog
	rendered   chan struct{}
	overlapped atomic.Bool
}

func (d *answerAfterRender) Claim(ctx context.Context, keys []campaigns.DedupKey, lease, window time.Duration) ([]campaigns.ClaimState, error) {
	select {
	case <-d.rendered:
		d.overlapped.Store(true)
	case <-time.After(5 * time.Second):
	}
	return d.DedupLog.Claim(ctx, keys, lease, window)
}

// TestFlowRendersWhileClaiming: a trigger's template is rendered while its
// dedup claim is in flight, not after the answer, so the claim's round trip
// is not added to the rendering's time.
func TestFlowRendersWhileClaiming(t *testing.T) {
	state := memstate.New()
	dedup := &answerAfterRender{DedupLog: state.Dedup("test"), rendered: make(chan struct{})}
	fr := newFlowRig(t, dedup)
	ctx := context.Background()
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(welcomeFlow)); err != nil {
		t.Fatal(err)
	}
	u := fr.src.members[1]
	sig := renderSignal{once: new(sync.Once), rendered: dedup.rendered}
	if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: u.ID, Properties: map[string]any{"code": sig}}}); err != nil {
		t.Fatal(err)
	}
	fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 1)
	if !dedup.overlapped.Load() {
		t.Fatal("the claim was answered before the template was rendered: rendering waited for the claim")
	}
	if got := fr.sms(); len(got) != 1 || got[0] != u.Phone+"|Welcome Ann1! Code SIGNAL" {
		t.Fatalf("sent %q", got)
	}
}

// TestFlowClaimAnswerWinsOverRenderError: a re-entry within the window whose
// template fails for this trigger counts as a duplicate (what the claim
// says), as it did when the claim came before the rendering, and is not
// logged or counted as a render error.
func TestFlowClaimAnswerWinsOverRenderError(t *testing.T) {
	fr := newFlowRig(t, nil)
	ctx := context.Background()
	f := strings.Replace(welcomeFlow, `Code {{ event.code | default: 'NONE' }}`, `Share {{ 100 | divided_by: event.d }}`, 1)
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(f)); err != nil {
		t.Fatal(err)
	}
	u := fr.src.members[1]
	fire := func(props map[string]any) {
		t.Helper()
		if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: u.ID, Properties: props}}); err != nil {
			t.Fatal(err)
		}
	}
	fire(map[string]any{"d": 4})
	fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 1)
	fire(map[string]any{"d": 0}) // a duplicate that would not render
	st := fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonDuplicate, 1)
	if n := st.Counts[channels.SMS][campaigns.ReasonRenderError]; n != 0 {
		t.Fatalf("a refused duplicate counted as %d render errors: %v", n, st.Counts)
	}
	// The same template does fail for a new user: the case above is the
	// claim's answer winning, not a template that renders.
	v := fr.src.members[2]
	if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Flow: "welcome", UserID: v.ID, Properties: map[string]any{"d": 0}}}); err != nil {
		t.Fatal(err)
	}
	fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonRenderError, 1)
	if got := fr.sms(); len(got) != 1 || got[0] != u.Phone+"|Welcome Ann1! Share 25" {
		t.Fatalf("sent %q", got)
	}
}

// halfRouter owns the rig's even members and forwards the others; Forward
// waits for the dedup store to see a claim (or 5 s), so that a test can
// tell a local trigger claimed while the forward was in flight, then fails
// while fail is set.
type halfRouter struct {
	members  []string
	claimed  <-chan struct{}
	fail     atomic.Bool
	overlap  atomic.Bool
	forwards atomic.Int64
}

func (r *halfRouter) Owner(userID string) (int, bool) {
	for i, id := range r.members {
		if id == userID {
			return i % 2, i%2 == 0
		}
	}
	return 0, true
}

func (r *halfRouter) Forward(ctx context.Context, byShard map[int]campaigns.Forwarded) error {
	r.forwards.Add(1)
	select {
	case <-r.claimed:
		r.overlap.Store(true)
	case <-time.After(5 * time.Second):
	}
	if r.fail.Load() {
		return errors.New("XADD: connection reset by peer")
	}
	return nil
}

// watchedDedup signals each claim and counts released keys.
type watchedDedup struct {
	campaigns.DedupLog
	claimed  chan struct{}
	released atomic.Int64
}

func (d *watchedDedup) Claim(ctx context.Context, keys []campaigns.DedupKey, lease, window time.Duration) ([]campaigns.ClaimState, error) {
	st, err := d.DedupLog.Claim(ctx, keys, lease, window)
	select {
	case d.claimed <- struct{}{}:
	default:
	}
	return st, err
}

func (d *watchedDedup) Release(ctx context.Context, keys []campaigns.DedupKey) error {
	d.released.Add(int64(len(keys)))
	return d.DedupLog.Release(ctx, keys)
}

// TestLocalTriggerOverlapsItsForwardedPart: a request with triggers for
// this shard's users and another's. The local trigger is claimed while the
// others are being forwarded (it used to wait for the forward first), and
// is sent only when the forward succeeded: when it fails, Fire answers the
// error, nothing of the request is sent or counted, and the local claim is
// released so that the caller's retry sends it, once.
func TestLocalTriggerOverlapsItsForwardedPart(t *testing.T) {
	state := memstate.New()
	dedup := &watchedDedup{DedupLog: state.Dedup("test"), claimed: make(chan struct{}, 1)}
	fr := newFlowRig(t, dedup)
	router := &halfRouter{claimed: dedup.claimed}
	for _, m := range fr.src.members {
		router.members = append(router.members, m.ID)
	}
	fr.flows = fr.newEngine(t, nil, campaigns.FlowConfig{Router: router}) // the rig's own has no router
	ctx := context.Background()
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(welcomeFlow)); err != nil {
		t.Fatal(err)
	}
	local, remote := fr.src.members[2], fr.src.members[3]
	req := []campaigns.Trigger{{Flow: "welcome", UserID: local.ID}, {Flow: "welcome", UserID: remote.ID}}

	router.fail.Store(true)
	if _, err := fr.flows.Fire(ctx, req); err == nil {
		t.Fatal("Fire succeeded although the forward failed")
	}
	if !router.overlap.Load() {
		t.Fatal("the local trigger was not claimed while the forward was in flight")
	}
	channelstest.Eventually(t, 10*time.Second, func() bool { return dedup.released.Load() == 1 }, "the refused trigger's claim was never released (released %d)", dedup.released.Load())
	st, err := fr.flows.GetFlow(ctx, "welcome")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(fr.sms()); n != 0 || len(st.Counts[channels.SMS]) != 0 {
		t.Fatalf("a refused request sent %d messages, counts %v", n, st.Counts)
	}

	router.fail.Store(false)
	res, err := fr.flows.Fire(ctx, req)
	if err != nil || res[0].Status != "accepted" || res[1].Status != "forwarded" {
		t.Fatalf("retry: %+v %v", res, err)
	}
	st = fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 1)
	if got := fr.sms(); len(got) != 1 || !strings.HasPrefix(got[0], local.Phone+"|") || len(st.Counts[channels.SMS]) != 1 {
		t.Fatalf("retry sent %q, counts %v: want the local trigger once", got, st.Counts)
	}
	if n := router.forwards.Load(); n != 2 {
		t.Fatalf("%d forwards, want 2", n)
	}
}
