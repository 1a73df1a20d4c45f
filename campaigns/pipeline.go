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
	ReasonRetriesExhausted = "retries_exhausted"
	ReasonCanceled         = "canceled"
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
// message sent for it has an outcome, or when a stage skips it.
type position struct {
	reason      string // why it settled without a message; "" while open or when sent
	outstanding int32  // messages handed to a channel and not yet back
	settled     bool
	accepted    bool
	dispatched  bool
	inDoubt     bool  // dispatched by an earlier owner and never settled
	first       int32 // index of its first envelope in Batch.envs, -1 if none
	nenv        int32
}

// envelope is a message plus what routes its outcome back to its batch.
// Envelopes live in a per-batch slab, so a message costs no allocation of
// its own, and its Ref points back into the slab.
type envelope struct {
	msg   channels.Message
	batch *RecipientBatch
	pos   int32
	ch    int8

	push channels.Push
	mail channels.Mail
	text channels.Text
	web  channels.WebPushContent
	hook channels.Hook
}

type countKey struct {
	ch     int8
	reason string
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
	reported  map[countKey]int64
	done      chan struct{}
	keys      []byte // backing store of the batch's message ids

	finalReported bool
	msgBuf        []*channels.Message
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

// Slots is the number of positions (members × channels).
func (b *RecipientBatch) Slots() int { return len(b.Members) * b.nch() }

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
	b.finalReported = false
}

// skip settles position p without a message.
func (b *RecipientBatch) skip(p int, reason string) {
	ps := &b.pos[p]
	if ps.settled {
		return
	}
	ps.settled = true
	ps.reason = reason
	b.open--
	b.counts[countKey{int8(p % b.nch()), reason}]++
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
	if b.keys == nil || cap(b.keys)-len(b.keys) < len(campaign)+len(channel)+32 {
		b.keys = make([]byte, 0, 64*1024)
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

// settle applies one outcome (called by pool workers through RouteOutcomes).
func (b *RecipientBatch) settle(e *envelope, out *channels.Outcome) {
	b.mu.Lock()
	ps := &b.pos[e.pos]
	ps.outstanding--
	switch out.Status {
	case channels.OutcomeAccepted:
		ps.accepted = true
	default:
		if ps.reason == "" || ps.reason == ReasonCanceled {
			ps.reason = outcomeReason(out)
			if ps.reason == ReasonInDoubt && b.run.channels[e.ch] != channels.SMS {
				// Stopped mid-attempt, but the provider collapses a re-send with
				// the same idempotency handle: leave the position open for the
				// next run instead of reporting it in doubt.
				ps.reason = ReasonCanceled
			}
		}
	}
	final := false
	if ps.outstanding == 0 && !ps.settled {
		ps.settled = true
		if ps.accepted {
			ps.reason = ReasonSent
		}
		ch := e.ch
		if ps.reason != ReasonCanceled {
			b.counts[countKey{ch, ps.reason}]++
		}
		if ps.reason == ReasonRetriesExhausted {
			b.failures = append(b.failures, Failure{User: b.Members[int(e.pos)/b.nch()].Key, Channel: b.run.channels[ch], Reason: ps.reason})
		}
		b.remaining--
		final = b.remaining == 0
	}
	b.mu.Unlock()
	if final {
		b.closeDone()
	}
}

// abort settles, as canceled, every position a failed stage left open and
// not handed to a channel, so the batch finishes once what was dispatched
// comes back; canceled positions keep the batch open for the next owner.
func (b *RecipientBatch) abort() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finalReported {
		return
	}
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
