package campaigns

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/templates"
)

// Channel fallback (docs/policies.md, "Channel fallback"): a campaign in
// delivery mode "fallback" reaches each member on one step of an ordered
// list (push → email → sms), the next step being used only when the
// earlier one has no address or consent, or failed permanently within the
// wait. The batch keeps its usual layout (one ledger slot per member ×
// channel × address), so the ledger, counts and redrive work unchanged:
// the steps not yet needed are "standby" positions — resolved and given
// slots, not rendered, capped or dispatched. A standby slot stays undone
// until it is sent or is known to be unneeded, and that decision is written
// in the same ledger flush as the outcome that caused it. After a crash the
// active step is therefore the first step with an undone slot: a permanent
// failure recorded done with the next step still undone means "fall back",
// whatever the run that recorded it did next.

// Delivery modes.
const (
	// DeliveryAll sends on every listed channel the member has an address
	// and consent for (the default).
	DeliveryAll = "all"
	// DeliveryFallback sends on the first usable step of Delivery.Order.
	DeliveryFallback = "fallback"
	// StepPush is an order step meaning the campaign's apns and fcm channels
	// together: a member's devices, whichever platform.
	StepPush = "push"
)

const (
	// ReasonFallbackUnused: an earlier step of the fallback order reached the
	// member (or ended without a reason to fall back), so this channel was not used.
	ReasonFallbackUnused = "fallback_unused"
	// ReasonFallbackLate: the earlier step failed permanently, but after the
	// campaign's fallback wait; the member got no message.
	ReasonFallbackLate = "fallback_late"
	// FallbackCounts is the pseudo-channel under which a campaign's counts
	// hold its fallbacks, with reason "<step>:<cause>" (the step fallen back
	// from and why). Status shows them as "fallback", not among the channels.
	FallbackCounts = "fallback"
)

// MaxFallbackWait bounds Delivery.Wait (as frequency cap windows are bounded).
const MaxFallbackWait = 31 * 24 * time.Hour

// Delivery says how a campaign chooses among its channels per member.
type Delivery struct {
	// Mode is "all" (default) or "fallback".
	Mode string `json:"mode,omitempty"`
	// Order lists the fallback steps, each a channel of the campaign or
	// "push" (apns and fcm together). Default: the channels in their order,
	// apns and fcm forming one push step.
	Order []string `json:"order,omitempty"`
	// Wait bounds how long after a step was handed to the providers its
	// permanent failure still triggers the next step (0: until the TTL).
	Wait Duration `json:"wait,omitempty"`
}

func (d *Delivery) validate(chans []string) error {
	if d == nil {
		return nil
	}
	switch d.Mode {
	case "", DeliveryAll:
		if len(d.Order) > 0 {
			return &FieldError{Field: "delivery.order", Msg: `only with mode "fallback"`}
		}
		if d.Wait != 0 {
			return &FieldError{Field: "delivery.wait", Msg: `only with mode "fallback"`}
		}
		return nil
	case DeliveryFallback:
	default:
		return &FieldError{Field: "delivery.mode", Msg: `want "all" or "fallback"`}
	}
	if d.Wait < 0 || time.Duration(d.Wait) > MaxFallbackWait {
		return &FieldError{Field: "delivery.wait", Msg: "want a duration from 0 (until the TTL) to 744h (31 days)"}
	}
	if len(d.Order) == 0 {
		return nil
	}
	covered := map[string]string{}
	for i, step := range d.Order {
		f := fmt.Sprintf("delivery.order[%d]", i)
		members := []string{step}
		if step == StepPush {
			members = nil
			for _, ch := range chans {
				if ch == channels.APNs || ch == channels.FCM {
					members = append(members, ch)
				}
			}
			if len(members) == 0 {
				return &FieldError{Field: f, Msg: `"push" needs apns or fcm in channels`}
			}
		} else if _, ok := knownChannels[step]; !ok {
			return &FieldError{Field: f, Msg: fmt.Sprintf("unknown step %q (want a channel or \"push\")", step)}
		} else if !slices.Contains(chans, step) {
			return &FieldError{Field: f, Msg: fmt.Sprintf("channel %q is not in channels", step)}
		}
		for _, ch := range members {
			if prev, ok := covered[ch]; ok {
				return &FieldError{Field: f, Msg: fmt.Sprintf("channel %q is already in step %q", ch, prev)}
			}
			covered[ch] = step
		}
	}
	for _, ch := range chans {
		if _, ok := covered[ch]; !ok {
			return &FieldError{Field: "delivery.order", Msg: fmt.Sprintf("channel %q of channels is in no step", ch)}
		}
	}
	return nil
}

// fallbackPlan is a fallback campaign's steps over its channel columns.
type fallbackPlan struct {
	wait   time.Duration // 0: no limit
	names  []string      // per step
	steps  [][]int       // per step: its channel columns, in channel order
	stepOf []int         // per column: its step
	// causes holds the counted reason "<step>:<cause>" per step and cause,
	// built once: the hot path allocates no strings.
	causes []map[string]string
}

// fallbackCauses are the reasons a step is fallen back from.
var fallbackCauses = []string{
	ReasonNoAddress, ReasonNoConsent, ReasonDeadAddress, ReasonProviderRejected, ReasonBlockedDestination,
}

// newFallbackPlan is nil unless c delivers in fallback mode.
func newFallbackPlan(c *Campaign) *fallbackPlan {
	d := c.Delivery
	if d == nil || d.Mode != DeliveryFallback {
		return nil
	}
	col := map[string]int{}
	for i, ch := range c.Channels {
		col[ch] = i
	}
	order := d.Order
	if len(order) == 0 {
		push := false
		for _, ch := range c.Channels {
			switch ch {
			case channels.APNs, channels.FCM:
				if !push {
					order = append(order, StepPush)
				}
				push = true
			default:
				order = append(order, ch)
			}
		}
	}
	p := &fallbackPlan{wait: time.Duration(d.Wait), stepOf: make([]int, len(c.Channels))}
	for k, step := range order {
		var cols []int
		if step == StepPush {
			for i, ch := range c.Channels {
				if ch == channels.APNs || ch == channels.FCM {
					cols = append(cols, i)
				}
			}
		} else {
			cols = []int{col[step]}
		}
		for _, c := range cols {
			p.stepOf[c] = k
		}
		causes := map[string]string{}
		for _, cause := range fallbackCauses {
			causes[cause] = step + ":" + cause
		}
		p.names = append(p.names, step)
		p.steps = append(p.steps, cols)
		p.causes = append(p.causes, causes)
	}
	return p
}

// isFallbackCause reports whether a message's outcome lets its member fall
// back to the next step: the address is dead or refused, never a transient
// failure that ran out, an expiry, or our own credentials being refused.
func isFallbackCause(reason string, out *channels.Outcome) bool {
	switch reason {
	case ReasonDeadAddress, ReasonBlockedDestination:
		return true
	case ReasonProviderRejected:
		return out == nil || out.Reason != channels.ReasonAuth
	}
	return false
}

// fbChoose makes member m's first step with an address and consent its
// active one, and the later usable positions standby. Called by resolve.
func (b *RecipientBatch) fbChoose(m int) {
	nch := b.nch()
	active := false
	for _, cols := range b.fb.steps {
		usable := false
		for _, c := range cols {
			ps := &b.pos[m*nch+c]
			if ps.settled || ps.first < 0 {
				continue
			}
			usable = true
			ps.standby = active
		}
		active = active || usable
	}
}

// fbCountResolved counts, per member, the steps resolve passed over for
// lack of an address or consent, when a later step is usable. A count goes
// with its step's first slot: a redriven batch (done non-nil) whose slot is
// final counted it already.
func (b *RecipientBatch) fbCountResolved(done Bitmap) {
	nch := b.nch()
	for m := range b.Members {
		first := -1 // first step with an address
		for k, cols := range b.fb.steps {
			for _, c := range cols {
				if b.pos[m*nch+c].first >= 0 {
					first = k
					break
				}
			}
			if first >= 0 {
				break
			}
		}
		for k := 0; k < first; k++ {
			ps := &b.pos[m*nch+b.fb.steps[k][0]]
			if done != nil && done.Has(int(ps.slot)) {
				continue
			}
			if reason, ok := b.fb.causes[k][ps.reason]; ok {
				b.counts[countKey{ch: -1, reason: reason}]++
			}
		}
	}
}

// fbRedrive sets each member's active step from the ledger: the first step
// with an undone slot. The steps before it are final (failed, or skipped);
// a final failure followed by undone slots is a fallback that was decided
// and not yet sent (the decision not to fall back settles the later slots
// in the same flush).
func (b *RecipientBatch) fbRedrive() {
	// The rule is resolve's: the first step with an open position is
	// active. Final slots are settled here, so "open" means undone.
	for m := range b.Members {
		b.fbChoose(m)
	}
}

// fbStart runs as the batch is handed to the pools (startStage, mu held):
// every member's step starts its wait now, and a member whose active step
// the stages settled (capped, quiet hours, render error, in doubt) is
// decided at once.
func (b *RecipientBatch) fbStart() {
	now := b.run.now().UnixNano()
	if cap(b.fbSince) < len(b.Members) {
		b.fbSince = make([]int64, len(b.Members))
	}
	b.fbSince = b.fbSince[:len(b.Members)]
	for m := range b.Members {
		b.fbSince[m] = now
		b.fbDecide(m)
	}
}

// fbDecide looks at member m once its active step has ended (mu held):
// reached, or ended without a cause to fall back, settles the standby
// positions (fallback_unused, or fallback_late past the wait); a
// permanent failure within the wait activates the next usable step, counts
// the fallback and queues its send. Nothing is decided while a position
// of the step is open, or was canceled (the run is stopping: the next run
// decides from the ledger).
func (b *RecipientBatch) fbDecide(m int) {
	nch := b.nch()
	plan := b.fb
	// The active step is the last one taken out of standby (resolve's
	// choice, a redrive's, or an activation); the earlier ones have ended.
	active := -1
	for k, cols := range plan.steps {
		for _, c := range cols {
			if ps := &b.pos[m*nch+c]; ps.first >= 0 && !ps.standby {
				active = k
			}
		}
	}
	if active < 0 {
		return
	}
	next := -1
	for k := active + 1; k < len(plan.steps) && next < 0; k++ {
		for _, c := range plan.steps[k] {
			if ps := &b.pos[m*nch+c]; ps.standby && !ps.settled {
				next = k
				break
			}
		}
	}
	if next < 0 {
		return // nothing to fall back to, nothing to settle
	}
	reached, fall := false, true
	cause := ""
	for _, c := range plan.steps[active] {
		ps := &b.pos[m*nch+c]
		if ps.first < 0 {
			continue
		}
		if !ps.settled || ps.reason == ReasonCanceled {
			return
		}
		reached = reached || ps.accepted
		if ps.nofb || !isFallbackCause(ps.reason, nil) {
			fall = false
		}
		if cause == "" {
			cause = ps.reason
		}
	}
	if reached || !fall {
		b.fbSettleStandby(m, active, ReasonFallbackUnused)
		return
	}
	if plan.wait > 0 && b.run.now().UnixNano()-b.fbSince[m] > int64(plan.wait) {
		b.fbSettleStandby(m, active, ReasonFallbackLate)
		return
	}
	b.counts[countKey{ch: -1, reason: plan.causes[active][cause]}]++
	for k := active + 1; k < next; k++ {
		// Passed over on the way: no address or consent (counted like resolve's).
		if reason, ok := plan.causes[k][b.pos[m*nch+plan.steps[k][0]].reason]; ok {
			b.counts[countKey{ch: -1, reason: reason}]++
		}
	}
	// The step stays standby until activate takes it: dispatchStage may
	// still be reading the batch's positions without the lock.
	b.run.fbq.push(activation{b: b, m: int32(m), step: int8(next)})
}

// fbSettleStandby settles every standby position of member m after step
// active with reason (mu held; the batch is dispatched).
func (b *RecipientBatch) fbSettleStandby(m, active int, reason string) {
	nch := b.nch()
	for k := active + 1; k < len(b.fb.steps); k++ {
		for _, c := range b.fb.steps[k] {
			p := m*nch + c
			ps := &b.pos[p]
			if !ps.standby || ps.settled {
				continue
			}
			b.settleUnsent(p, reason) // still standby: never dispatched

		}
	}
}

// settleUnsent settles an open position of a dispatched batch without a
// message (mu held): it counts, and no longer holds the batch open.
func (b *RecipientBatch) settleUnsent(p int, reason string) {
	ps := &b.pos[p]
	ps.settled = true
	ps.reason = reason
	b.open--
	b.remaining--
	b.countSlots(p, reason)
}

// activation is a fallback step to render and dispatch for one member.
type activation struct {
	b    *RecipientBatch
	m    int32
	step int8
}

// fallbackQueue carries activations from the pool workers (which decide
// them as outcomes arrive and must not block) to the run's fallback sender.
type fallbackQueue struct {
	mu    sync.Mutex
	items []activation
	wake  chan struct{}
}

func newFallbackQueue() *fallbackQueue { return &fallbackQueue{wake: make(chan struct{}, 1)} }

func (q *fallbackQueue) push(a activation) {
	q.mu.Lock()
	q.items = append(q.items, a)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *fallbackQueue) take(buf []activation) []activation {
	q.mu.Lock()
	defer q.mu.Unlock()
	buf = append(buf[:0], q.items...)
	clear(q.items)
	q.items = q.items[:0]
	return buf
}

// sendFallbacks renders and dispatches queued activations until stop is
// closed; after ctx ends, what is left is settled canceled (the batch stays
// open, and the next run sends it from the ledger).
func (r *run) sendFallbacks(ctx context.Context, stop <-chan struct{}) {
	var buf []activation
	for {
		select {
		case <-r.fbq.wake:
		case <-stop:
			for _, a := range r.fbq.take(buf) {
				r.activate(ctx, a)
			}
			return
		}
		buf = r.fbq.take(buf)
		for _, a := range buf {
			r.activate(ctx, a)
		}
	}
}

// activate renders member a.m's positions of step a.step and hands them
// to the pools, as render and dispatch would have.
func (r *run) activate(ctx context.Context, a activation) {
	b := a.b
	nch := b.nch()
	m := int(a.m)
	mem := &b.Members[m]
	// Until dispatchStage is done it reads positions (standby among them)
	// without the lock, and owns the batch's id buffer.
	select {
	case <-b.fbReady:
	case <-ctx.Done():
		return // stopping: the batch stays open, the next run sends it from the ledger
	}
	var todo []int
	b.mu.Lock()
	b.fbSince[m] = r.now().UnixNano()
	for _, c := range b.fb.steps[a.step] {
		p := m*nch + c
		if ps := &b.pos[p]; ps.standby && !ps.settled {
			ps.standby = false
			todo = append(todo, p)
		}
	}
	b.mu.Unlock()
	for _, p := range todo {
		c := p % nch
		ps := &b.pos[p]
		if err := r.renderPosition(b, p); err != nil {
			var re *templates.RenderError
			if errors.As(err, &re) {
				r.noteRenderError(re, mem.ID, ps.variant)
			} else {
				r.log.Error("render fallback message", "error", err, "channel", r.channels[c])
			}
			b.finishUnsent(m, p, ReasonRenderError)
			continue
		}
		msgs := make([]*channels.Message, 0, ps.nenv)
		b.mu.Lock()
		for i := ps.first; i < ps.first+ps.nenv; i++ {
			e := &b.envs[i]
			if e.done {
				continue
			}
			b.fillMessage(e, mem, r.channels[c], int(i-ps.first))
			ps.outstanding++
			msgs = append(msgs, &e.msg)
		}
		b.mu.Unlock()
		if len(msgs) == 0 {
			continue
		}
		n, err := r.dispatch.Dispatch(ctx, r.channels[c], r.lane, msgs)
		if err != nil && !errors.Is(err, context.Canceled) {
			r.log.Warn("dispatch fallback message", "error", err, "channel", r.channels[c])
		}
		cancelOut := channels.Outcome{Status: channels.OutcomeCanceled}
		for _, msg := range msgs[n:] {
			cancelOut.Message = msg
			b.settle(msg.Ref.(*envelope), &cancelOut)
		}
	}
}

// finishUnsent settles position p of member m without a message after the
// batch was dispatched, and decides the member's next step.
func (b *RecipientBatch) finishUnsent(m, p int, reason string) {
	b.mu.Lock()
	b.settleUnsent(p, reason)
	b.fbDecide(m)
	final := b.remaining == 0
	b.listLocked(1)
	b.mu.Unlock()
	if final {
		b.closeDone()
	}
}

// renderPosition renders position p's content into its first envelope and
// shares it with the position's other addresses (renderStage, for one).
func (r *run) renderPosition(b *RecipientBatch, p int) error {
	ps := &b.pos[p]
	mem := &b.Members[p/b.nch()]
	e := &b.envs[ps.first]
	set := r.set
	if ps.variant != 0 {
		set = r.ab.sets[ps.variant]
	}
	var err error
	switch r.channels[p%b.nch()] {
	case channels.APNs, channels.FCM:
		err = set.RenderPush(mem.Profile, mem.Event, &e.push)
		e.msg.Push = &e.push
	case channels.Email:
		err = set.RenderMail(mem.Profile, mem.Event, &e.mail)
		e.msg.Mail = &e.mail
	case channels.SMS:
		err = set.RenderText(mem.Profile, mem.Event, &e.text)
		e.msg.Text = &e.text
	case channels.WebPush:
		err = set.RenderWebPush(mem.Profile, mem.Event, &e.web)
		e.msg.WebPush = &e.web
	case channels.Webhook:
		err = set.RenderHook(mem.Profile, mem.Event, &e.hook)
		e.msg.Hook = &e.hook
	}
	if err != nil {
		return err
	}
	e.msg.Locale = r.set.Locale(mem.Profile)
	for i := ps.first + 1; i < ps.first+ps.nenv; i++ {
		o := &b.envs[i].msg
		o.Push, o.Mail, o.Text, o.WebPush, o.Hook = e.msg.Push, e.msg.Mail, e.msg.Text, e.msg.WebPush, e.msg.Hook
		o.Locale = e.msg.Locale
	}
	return nil
}

// fillMessage sets a message's envelope fields, for the dispatch stage and
// for a fallback step's send alike (a fallback email is tracked and logged
// under its variant like any other): the idempotency handle is per
// (campaign, user, channel, address), so a fallback re-sent after a crash
// collapses at the provider.
func (b *RecipientBatch) fillMessage(e *envelope, mem *Member, ch string, n int) {
	r := b.run
	m := &e.msg
	scope := r.c.ID
	if mem.Scope != "" {
		scope = mem.Scope
	}
	m.ID = b.idempotency(scope, mem.Key, ch, n)
	m.Arrived = mem.Arrived
	m.IdempotencyKey = m.ID
	m.Campaign = r.c.ID
	m.UserID = mem.ID
	m.UserKey = mem.Key
	m.Deadline = b.deadline
	m.High = r.lane == channels.LaneHigh
	m.Track = r.c.Tracking.Track()
	m.Ref = e
	m.Variant = r.ab.id(b.pos[e.pos].variant)
}

// addFallback adds a fallback count ("<step>:<cause>") to the status.
func (st *CampaignStatus) addFallback(cn Count) {
	step, cause, ok := strings.Cut(cn.Reason, ":")
	if !ok || cn.N == 0 {
		return
	}
	if st.Fallback == nil {
		st.Fallback = map[string]map[string]int64{}
	}
	m := st.Fallback[step]
	if m == nil {
		m = map[string]int64{}
		st.Fallback[step] = m
	}
	m[cause] += cn.N
}

// fbFirstStep reports whether position p is in its member's first step
// with an address: the step resolve chooses, the only one caps check.
func (b *RecipientBatch) fbFirstStep(p int) bool {
	nch := b.nch()
	m, step := p/nch, b.fb.stepOf[p%nch]
	for k := range step {
		for _, c := range b.fb.steps[k] {
			if b.pos[m*nch+c].first >= 0 {
				return false
			}
		}
	}
	return true
}
