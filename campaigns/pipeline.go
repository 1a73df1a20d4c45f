package campaigns

import (
	"context"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/notifyd/notifyd/channels"
)

// Reasons a recipient leaves without a message, or how its message ended.
// They are metric label values and the keys of a campaign's counts.
const (
	ReasonSent             = "sent"
	ReasonNoAddress        = "no_address"
	ReasonNoConsent        = "no_consent"
	ReasonQuietHours       = "quiet_hours"
	ReasonExpired          = "expired"
	ReasonRenderError      = "render_error"
	ReasonCorruptRow       = "corrupt_row"
	ReasonInDoubt          = "in_doubt"
	ReasonDeadAddress      = "dead_address"
	ReasonProviderRejected = "provider_rejected"
	// ReasonBlockedDestination: the channel's destination guard refused the
	// address (loopback, private network, a host not allowed): no provider saw it.
	ReasonBlockedDestination = "blocked_destination"
	ReasonRetriesExhausted   = "retries_exhausted"
	ReasonCanceled           = "canceled"
)

// Stage is one step of the delivery pipeline over a batch, like
// Alertmanager's notify.Stage but over typed batches: a stage marks the
// positions it settles (with a reason) and leaves the rest to the next one.
type Stage interface {
	Exec(ctx context.Context, b *RecipientBatch) error
}

// StageFunc adapts a function to a Stage.
type StageFunc func(ctx context.Context, b *RecipientBatch) error

// Exec calls f.
func (f StageFunc) Exec(ctx context.Context, b *RecipientBatch) error { return f(ctx, b) }

// MultiStage runs stages in order and stops at the first error. It runs
// every stage even when nothing is left open: recording the batch is a stage.
type MultiStage []Stage

// Exec runs every stage.
func (ms MultiStage) Exec(ctx context.Context, b *RecipientBatch) error {
	for _, s := range ms {
		if err := s.Exec(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// position is one (member, channel) of a batch: it is settled once every
// message sent for it has an outcome, or when a stage skips it. Its messages
// (one per address) each own a ledger slot; a position without a message
// owns one slot of its own, which settles with the reason it was skipped.
type position struct {
	reason      string // why it settled without a message; "" while open or when sent
	outstanding int32  // messages handed to a channel and not yet back
	undone      int32  // its slots not yet done (set by layout)
	settled     bool
	accepted    bool
	variant     int8  // the member's A/B group (abPlan index; 0: no A/B test)
	standby     bool  // a fallback step not (yet) needed: resolved, laid out, not sent (fallback.go)
	nofb        bool  // one of its messages ended in a way that is no cause to fall back
	first       int32 // index of its first envelope in Batch.envs, -1 if none
	nenv        int32
	slot        int32 // its first ledger slot (set by layout)
}

// slots is the number of ledger slots the position owns.
func (ps *position) slots() int32 { return max(1, ps.nenv) }

// envelope is a message plus what routes its outcome back to its batch.
// Envelopes live in a per-batch slab, so a message costs no allocation of
// its own, and its Ref points back into the slab.
type envelope struct {
	msg   channels.Message
	batch *RecipientBatch
	pos   int32
	n     int32 // index of its address among the position's addresses
	ch    int8
	// handed: the ledger holds (or is about to hold) this message as handed
	// to a provider; done: its slot is final (answered, skipped, or already
	// final in the ledger from an earlier run) and it is not to be sent.
	handed bool
	done   bool

	push channels.Push
	mail channels.Mail
	text channels.Text
	web  channels.WebPushContent
	hook channels.Hook
}

type countKey struct {
	ch      int8
	variant int8
	reason  string
}

// RecipientBatch is a run of consecutive segment members (in user-key order) and the
// messages the pipeline makes for them, one position per member × channel.
type RecipientBatch struct {
	run     *run
	Seq     int64
	First   uint64
	Last    uint64
	Members []Member
	// deadline is when the batch's messages expire (campaign start + TTL,
	// or a trigger's processing time + the flow's TTL).
	deadline time.Time

	pos  []position
	envs []envelope
	open int // positions not yet settled

	// Guarded by mu once the batch is dispatched: outcomes arrive from workers.
	mu        sync.Mutex
	counts    map[countKey]int64
	failures  []Failure
	remaining int // positions not settled; 0 → the batch is final
	done      chan struct{}
	keys      []byte // backing store of the batch's message ids

	// The ledger side (campaign runs only; led is nil for flows and retries).
	led     *ledger
	laidOut bool
	nslots  int // ledger slots, set by layout
	undone  int // slots not yet done; 0 → the batch can be reported final
	// pend* are the slots changed since the ledger last took them (guarded by mu).
	pendD, pendC, pendF Bitmap
	pendFinal           bool
	pendAll             bool // write the whole bitmaps and the slot count (relaid out)
	// listed: the batch is on its ledger's list for the next flush (guarded
	// by mu: it is set where the change is made, and cleared when the flush
	// takes the changes, so no one touches the batch after unlocking it —
	// once its last outcome is in, its finisher may reuse it at once).
	listed bool

	msgBuf []*channels.Message
	// fb is the campaign's fallback plan (nil: every channel is sent);
	// fbSince is when each member's current step was handed to the pools,
	// and fbReady closes when dispatchStage is done with the batch.
	fb      *fallbackPlan
	fbSince []int64
	fbReady chan struct{}
	// capReqs and capPos are capStage's buffers (a request per open position).
	capReqs []CapRequest
	capPos  []int
	// doneMu is never reset: a closer from the batch's previous use may
	// still be unlocking it when the batch is reused.
	doneMu     sync.Mutex
	doneClosed bool
}

// closeDone marks the batch settled (once).
func (b *RecipientBatch) closeDone() {
	b.doneMu.Lock()
	defer b.doneMu.Unlock()
	if !b.doneClosed {
		b.doneClosed = true
		close(b.done)
	}
}

// nch is the number of channels of the campaign.
func (b *RecipientBatch) nch() int { return len(b.run.channels) }

func (b *RecipientBatch) reset(r *run, members int) {
	b.run = r
	b.Seq, b.First, b.Last = 0, 0, 0
	b.deadline = r.deadline()
	n := members * len(r.channels)
	if cap(b.pos) < n {
		b.pos = make([]position, n)
	}
	b.pos = b.pos[:n]
	for i := range b.pos {
		b.pos[i] = position{first: -1}
	}
	if cap(b.envs) < n {
		// Most positions take one envelope: grow once, not by doubling,
		// which for a flow's fresh batch allocated each trigger's
		// envelopes several times over.
		b.envs = make([]envelope, 0, n)
	}
	b.envs = b.envs[:0]
	b.open = n
	b.remaining = n
	clear(b.counts)
	if b.counts == nil {
		b.counts = map[countKey]int64{}
	}
	b.failures = b.failures[:0]
	b.done = make(chan struct{})
	b.doneClosed = false
	b.keys = nil
	b.led = nil
	b.nslots, b.undone, b.laidOut = 0, 0, false
	b.pendD, b.pendC, b.pendF = b.pendD[:0], b.pendC[:0], b.pendF[:0]
	b.pendFinal, b.pendAll, b.listed = false, false, false
	b.fb = r.fb
	if b.fb != nil {
		b.fbReady = make(chan struct{})
	}
}

// layout gives every position its ledger slots (in position order: one per
// envelope, or one if it has none) and then counts the positions resolve
// skipped. Slots in done are final from an earlier run: they are neither
// counted nor sent again. done may be nil. Called before the batch is shared.
func (b *RecipientBatch) layout(done Bitmap) {
	slot := int32(0)
	for p := range b.pos {
		ps := &b.pos[p]
		ps.slot = slot
		ps.undone = ps.slots()
		for j := range ps.nenv {
			b.envs[ps.first+j].n = j
		}
		slot += ps.slots()
	}
	b.nslots, b.undone, b.laidOut = int(slot), int(slot), true
	if b.led != nil {
		n := (b.nslots + 7) / 8
		b.pendD, b.pendC, b.pendF = grow(b.pendD, n), grow(b.pendC, n), grow(b.pendF, n)
	}
	for p := range b.pos {
		ps := &b.pos[p]
		if done != nil {
			for k := range ps.slots() {
				s := int(ps.slot + k)
				if !done.Has(s) {
					continue
				}
				if ps.nenv > 0 {
					b.envs[ps.first+k].done = true
				}
				ps.undone--
				b.undone--
			}
			if ps.undone == 0 && !ps.settled {
				ps.settled = true // final in the ledger already: nothing to count
				b.open--
			}
		}
		if ps.settled && ps.reason != "" && ps.undone > 0 {
			b.countSlots(p, ps.reason) // skipped by resolve before the slots existed
		}
	}
	if b.fb != nil {
		b.fbCountResolved(done)
	}
	if b.undone == 0 && b.led != nil {
		b.pendFinal = true
	}
}

func grow(b Bitmap, n int) Bitmap {
	if cap(b) < n {
		return make(Bitmap, n)
	}
	b = b[:n]
	clear(b)
	return b
}

// doneSlotLocked marks slot s done with reason (counted under the
// position's channel and A/B group), feeding the ledger.
func (b *RecipientBatch) doneSlotLocked(s int32, ch, variant int8, reason string) {
	b.counts[countKey{ch, variant, reason}]++
	if b.led == nil {
		return
	}
	b.pendF.Set(int(s))
	if b.undone--; b.undone == 0 {
		b.pendFinal = true
	}
}

// countSlots settles every not-done slot of position p with reason.
func (b *RecipientBatch) countSlots(p int, reason string) {
	ps := &b.pos[p]
	ch := int8(p % b.nch())
	if ps.nenv == 0 {
		if ps.undone > 0 {
			ps.undone--
			b.doneSlotLocked(ps.slot, ch, ps.variant, reason)
		}
		return
	}
	for j := range ps.nenv {
		e := &b.envs[ps.first+j]
		if e.done {
			continue
		}
		e.done = true
		ps.undone--
		b.doneSlotLocked(ps.slot+j, ch, ps.variant, reason)
	}
}

// skip settles position p without a message. In resolve, before layout
// gave the position its slots, the count waits for layout.
func (b *RecipientBatch) skip(p int, reason string) {
	b.mu.Lock()
	ps := &b.pos[p]
	if ps.settled {
		b.mu.Unlock()
		return
	}
	ps.settled = true
	ps.reason = reason
	b.open--
	if b.laidOut {
		b.countSlots(p, reason)
	}
	b.listLocked(1)
	b.mu.Unlock()
}

// skipEnvelope settles one message of a position without sending it (in
// doubt after a crash, on a channel with no idempotency handle). Called
// before dispatch, after layout, with mu held.
func (b *RecipientBatch) skipEnvelope(e *envelope, reason string) {
	if e.done {
		return
	}
	ps := &b.pos[e.pos]
	e.done = true
	ps.undone--
	b.doneSlotLocked(ps.slot+e.n, e.ch, ps.variant, reason)
	if ps.undone == 0 && !ps.settled {
		ps.settled = true
		ps.reason = reason
		b.open--
	}
}

// listLocked puts a claimed batch on its ledger's list for the next flush,
// once per flush, with n changes. Called with mu held.
func (b *RecipientBatch) listLocked(n int) {
	// Not before layout: a redriven batch has its seq from the start, and
	// its bitmaps are made by layout, while the batch is not yet shared.
	if b.led == nil || b.Seq == 0 || !b.laidOut {
		return
	}
	if !b.listed {
		b.listed = true
		b.led.dirty(b, n)
		return
	}
	b.led.count(n)
}

// addEnvelope appends a message for position p and returns it.
func (b *RecipientBatch) addEnvelope(p int, to string, sub *channels.Subscription) *envelope {
	// Stages hold no pointer into the slab until it stops growing (render
	// and dispatch run after resolve), so append may move it.
	b.envs = append(b.envs, envelope{batch: b, pos: int32(p), ch: int8(p % b.nch())})
	e := &b.envs[len(b.envs)-1]
	e.msg.To = to
	e.msg.Subscription = sub
	ps := &b.pos[p]
	if ps.first < 0 {
		ps.first = int32(len(b.envs) - 1)
	}
	ps.nenv++
	return e
}

// idempotency builds the stable per-message key "campaign:userkey:channel:n".
// All keys of a batch share one backing array: one allocation per batch.
func (b *RecipientBatch) idempotency(campaign string, user uint64, channel string, n int) string {
	if need := len(campaign) + len(channel) + 32; b.keys == nil || cap(b.keys)-len(b.keys) < need {
		// Sized to the batch: a flow's batch of a few triggers would
		// otherwise allocate (and the GC scan) 64 KiB for a few keys.
		b.keys = make([]byte, 0, max(need, min(64*1024, len(b.envs)*need)))
	}
	start := len(b.keys)
	b.keys = append(b.keys, campaign...)
	b.keys = append(b.keys, ':')
	b.keys = strconv.AppendUint(b.keys, user, 16)
	b.keys = append(b.keys, ':')
	b.keys = append(b.keys, channel...)
	b.keys = append(b.keys, ':')
	b.keys = strconv.AppendInt(b.keys, int64(n), 10)
	s := b.keys[start:]
	// The bytes are never written again, so the string is immutable.
	return unsafe.String(unsafe.SliceData(s), len(s))
}

// settle applies one outcome (called by pool workers through RouteOutcomes)
// and reports whether it was the batch's last: the batch may then be reused
// at once, so the caller must not touch it again.
func (b *RecipientBatch) settle(e *envelope, out *channels.Outcome) (final bool) {
	b.mu.Lock()
	ps := &b.pos[e.pos]
	ps.outstanding--
	reason := ReasonSent
	switch out.Status {
	case channels.OutcomeAccepted:
		ps.accepted = true
	default:
		reason = outcomeReason(out)
		if reason == ReasonInDoubt && (b.led != nil || b.run.channels[e.ch] != channels.SMS) {
			// Stopped mid-attempt. A campaign's ledger holds the message as
			// handed and unanswered: the next run decides (re-send with the
			// same idempotency handle, or report it in doubt). A flow's
			// provider collapses a re-send with the same handle.
			reason = ReasonCanceled
		}
		if ps.reason == "" || ps.reason == ReasonCanceled {
			ps.reason = reason
		}
		if b.fb != nil && reason != ReasonCanceled && !isFallbackCause(reason, out) {
			ps.nofb = true
		}
	}
	if reason != ReasonCanceled && !e.done {
		e.done = true
		ps.undone--
		if b.led != nil && out.Status == channels.OutcomeAccepted {
			b.pendC.Set(int(ps.slot + e.n))
		}
		b.doneSlotLocked(ps.slot+e.n, e.ch, ps.variant, reason)
		if reason == ReasonRetriesExhausted {
			b.failures = append(b.failures, Failure{User: b.Members[int(e.pos)/b.nch()].Key, Channel: b.run.channels[e.ch], Address: int(e.n), Reason: reason})
		}
	}
	if ps.outstanding == 0 && !ps.settled {
		ps.settled = true
		if ps.accepted {
			ps.reason = ReasonSent
		}
		b.remaining--
		if b.fb != nil {
			b.fbDecide(int(e.pos) / b.nch())
		}
		final = b.remaining == 0
	}
	// On the ledger's list before the lock is released: once the last
	// outcome is in, the finisher waits for a flush that holds it, then may
	// reuse the batch.
	b.listLocked(1)
	b.mu.Unlock()
	if final {
		b.closeDone()
	}
	return final
}

// abort settles, as canceled, every position a failed stage left open and
// not handed to a channel, so the batch finishes once what was dispatched
// comes back; canceled positions keep the batch open for the next owner.
func (b *RecipientBatch) abort() {
	b.mu.Lock()
	defer b.mu.Unlock()
	remaining := 0
	for p := range b.pos {
		ps := &b.pos[p]
		switch {
		case ps.settled:
		case ps.outstanding > 0:
			remaining++
		default:
			ps.settled = true
			ps.reason = ReasonCanceled
		}
	}
	b.remaining = remaining
	if remaining == 0 {
		b.closeDone()
	}
}

func outcomeReason(out *channels.Outcome) string {
	switch out.Status {
	case channels.OutcomeDeadAddress:
		return ReasonDeadAddress
	case channels.OutcomeExpired:
		return ReasonExpired
	case channels.OutcomeRetriesExhausted:
		return ReasonRetriesExhausted
	case channels.OutcomeCanceled:
		if out.Attempts > 0 {
			return ReasonInDoubt
		}
		return ReasonCanceled
	}
	if out.Code == ReasonBlockedDestination {
		return ReasonBlockedDestination
	}
	return ReasonProviderRejected
}

// RouteOutcomes is the OutcomeSink every channel pool that carries campaign
// messages must report to: it routes each outcome back to its batch.
func RouteOutcomes(_ context.Context, outs []channels.Outcome) {
	for i := range outs {
		if e, ok := outs[i].Message.Ref.(*envelope); ok {
			e.batch.settle(e, &outs[i])
		}
	}
}

// Slots is how many counts member m adds to a campaign's status on channel
// ch: one per address it is sent to (device tokens, subscriptions), or one,
// with its reason, when it gets no message (no address, no consent). It is
// the rule resolve and layout follow, for tests and reports that check that
// every member is accounted for.
func Slots(m *Member, ch string, requireConsent bool) int {
	r := run{c: &Campaign{RequireConsent: requireConsent}}
	if m.Err != nil || !r.consents(ch, m) {
		return 1
	}
	n := 0
	switch ch {
	case channels.APNs:
		n = len(m.APNs)
	case channels.FCM:
		n = len(m.FCM)
	case channels.Email:
		n = min(1, len(m.Email))
	case channels.SMS:
		n = min(1, len(m.Phone))
	case channels.WebPush:
		n = len(m.WebSub)
	case channels.Webhook:
		n = 1
	}
	return max(1, n)
}
