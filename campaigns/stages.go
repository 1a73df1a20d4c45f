package campaigns

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/templates"
)

// Dispatcher hands messages to the channel worker pools. Dispatch blocks
// while the channel's queue is full (that is the pipeline's backpressure) and
// returns how many messages it took; the rest were not handed over.
type Dispatcher interface {
	Dispatch(ctx context.Context, channel string, lane channels.Lane, msgs []*channels.Message) (int, error)
	// Throttle caps a campaign's messages per second over every channel (0 removes the cap).
	Throttle(campaign string, perSecond float64)
	// Has reports whether the channel is configured on this daemon.
	Has(channel string) bool
}

// resolveStage turns each open position into one envelope per address, or
// settles it with no_consent / no_address / corrupt_row.
func resolveStage(_ context.Context, b *RecipientBatch) error {
	r := b.run
	nch := b.nch()
	ab := r.ab
	for m := range b.Members {
		mem := &b.Members[m]
		var v int8
		if ab != nil {
			v = ab.assign(mem.Key)
			for c := range nch {
				b.pos[m*nch+c].variant = v
			}
		}
		for c, ch := range r.channels {
			p := m*nch + c
			if b.pos[p].settled {
				continue
			}
			if v != 0 && v == ab.hold {
				b.skip(p, ReasonHoldout)
				continue
			}
			if mem.Err != nil {
				b.skip(p, ReasonCorruptRow)
				continue
			}
			if !r.consents(ch, mem) {
				b.skip(p, ReasonNoConsent)
				continue
			}
			n := 0
			switch ch {
			case channels.APNs:
				for _, t := range mem.APNs {
					b.addEnvelope(p, t, nil)
					n++
				}
			case channels.FCM:
				for _, t := range mem.FCM {
					b.addEnvelope(p, t, nil)
					n++
				}
			case channels.Email:
				if mem.Email != "" {
					b.addEnvelope(p, mem.Email, nil)
					n++
				}
			case channels.SMS:
				if mem.Phone != "" {
					b.addEnvelope(p, mem.Phone, nil)
					n++
				}
			case channels.WebPush:
				for i := range mem.WebSub {
					b.addEnvelope(p, mem.WebSub[i].Endpoint, &mem.WebSub[i])
					n++
				}
			case channels.Webhook:
				b.addEnvelope(p, mem.ID, nil)
				n++
			}
			if n == 0 {
				b.skip(p, ReasonNoAddress)
			}
		}
		if b.fb != nil {
			b.fbChoose(m)
		}
	}
	return nil
}

// consents applies the campaign's consent rule: an explicit "no" always
// skips; with require_consent, so does "nothing recorded".
func (r *run) consents(ch string, m *Member) bool {
	var c Consent
	switch ch {
	case channels.APNs, channels.FCM:
		c = m.PushConsent
	case channels.Email:
		c = m.EmailConsent
	case channels.SMS:
		c = m.SMSConsent
	case channels.WebPush:
		c = m.WebPushConsent
	default:
		return true
	}
	if c == ConsentDenied {
		return false
	}
	return c == ConsentGranted || !r.c.RequireConsent
}

// policyStage settles positions the campaign's policies forbid now: expired
// (past the TTL) and quiet hours in the recipient's zone.
func policyStage(_ context.Context, b *RecipientBatch) error {
	r := b.run
	now := r.now()
	nch := b.nch()
	if now.After(b.deadline) {
		for p := range b.pos {
			b.skip(p, ReasonExpired)
		}
		return nil
	}
	q := r.c.QuietHours
	if q == nil {
		return nil
	}
	for m := range b.Members {
		mem := &b.Members[m]
		var loc *time.Location
		if mem.Profile != nil {
			loc = r.zone(mem.Profile.TimeZone())
		}
		if !q.Quiet(now, loc) {
			continue
		}
		for c := range nch {
			b.skip(m*nch+c, ReasonQuietHours)
		}
	}
	return nil
}

// zone caches time zones by name: LoadLocation reads the zone database.
func (r *run) zone(name string) *time.Location {
	if name == "" {
		return nil
	}
	r.zmu.Lock()
	defer r.zmu.Unlock()
	if loc, ok := r.zones[name]; ok {
		return loc
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		loc = nil
	}
	r.zones[name] = loc
	return loc
}

// renderStage renders each open position's content once (every address of
// the position shares it) and settles render failures with render_error.
func renderStage(_ context.Context, b *RecipientBatch) error {
	failed, err := renderOpen(b, nil)
	if err != nil {
		return err
	}
	settleRenderErrors(b, failed)
	return nil
}

// renderFailure is a position whose template failed for its member.
type renderFailure struct {
	p   int
	err *templates.RenderError
}

// renderOpen renders each open position and returns (appended to failed)
// those whose template failed, without settling them: a stage that renders
// while a Redis round trip is in flight settles what the answer refuses
// first, so a refused position counts as refused, as it would have had the
// answer come before the rendering. It settles nothing, so it may run
// beside a goroutine that only waits for Redis.
func renderOpen(b *RecipientBatch, failed []renderFailure) ([]renderFailure, error) {
	r := b.run
	nch := b.nch()
	for p := range b.pos {
		ps := &b.pos[p]
		if ps.standby || ps.settled || ps.first < 0 {
			continue
		}
		if err := r.renderPosition(b, p); err != nil {
			var re *templates.RenderError
			if !errors.As(err, &re) {
				return failed, fmt.Errorf("render %s for %s: %w", r.channels[p%nch], b.Members[p/nch].ID, err)
			}
			failed = append(failed, renderFailure{p: p, err: re})
		}
	}
	return failed, nil
}

// settleRenderErrors settles the failed positions that are still open with
// render_error, and notes each (log and metrics).
func settleRenderErrors(b *RecipientBatch, failed []renderFailure) {
	nch := b.nch()
	for _, f := range failed {
		b.mu.Lock()
		ps := &b.pos[f.p]
		open := !ps.settled
		variant := ps.variant
		b.mu.Unlock()
		if !open {
			continue
		}
		b.run.noteRenderError(f.err, b.Members[f.p/nch].ID, variant)
		b.skip(f.p, ReasonRenderError)
	}
}

// startStage makes a batch ready for outcomes: what the stages settled so
// far goes to the ledger, and a batch with nothing to send is done.
func startStage(_ context.Context, b *RecipientBatch) error {
	b.mu.Lock()
	b.remaining = b.open
	if b.fb != nil {
		b.fbStart()
	}
	b.listLocked(1)
	b.mu.Unlock()
	if b.open == 0 {
		b.closeDone()
	}
	return nil
}

// layoutStage gives the batch's messages their ledger slots and counts
// what resolve skipped (a redriven batch is laid out against its ledger
// before the stages run, and is left alone here).
func layoutStage(_ context.Context, b *RecipientBatch) error {
	if !b.laidOut {
		b.layout(nil)
	}
	return nil
}

// takeCounts returns the counts gathered so far and starts afresh.
func (b *RecipientBatch) takeCounts() []Count {
	out := make([]Count, 0, len(b.counts))
	for k, n := range b.counts {
		if k.ch < 0 {
			out = append(out, Count{Channel: FallbackCounts, Reason: k.reason, N: n})
			continue
		}
		out = append(out, Count{Channel: b.run.channels[k.ch], Variant: b.run.ab.id(k.variant), Reason: k.reason, N: n})
	}
	clear(b.counts)
	return out
}

// dispatchStage hands the batch's messages to the channel pools, channel by
// channel. Messages Dispatch did not take settle as canceled, so the batch
// stays open and a later run re-sends them.
func dispatchStage(ctx context.Context, b *RecipientBatch) error {
	r := b.run
	nch := b.nch()
	if b.fb != nil {
		defer close(b.fbReady)
	}
	msgs := b.msgBuf[:0]
	for c, ch := range r.channels {
		msgs = msgs[:0]
		for p := c; p < len(b.pos); p += nch {
			ps := &b.pos[p]
			// standby first: an outcome may settle a standby position meanwhile.
			if ps.standby || ps.settled || ps.first < 0 {
				continue
			}
			mem := &b.Members[p/nch]
			for i := ps.first; i < ps.first+ps.nenv; i++ {
				e := &b.envs[i]
				if e.done {
					continue // final in the ledger, or settled in doubt
				}
				b.fillMessage(e, mem, ch, int(i-ps.first))
				m := &e.msg
				ps.outstanding++
				msgs = append(msgs, m)
			}
		}
		if len(msgs) == 0 {
			continue
		}
		n, err := r.dispatch.Dispatch(ctx, ch, r.lane, msgs)
		if n < len(msgs) {
			cancelOut := channels.Outcome{Status: channels.OutcomeCanceled}
			for _, m := range msgs[n:] {
				cancelOut.Message = m
				b.settle(m.Ref.(*envelope), &cancelOut) // canceled: nothing for the ledger
			}
		}
		if err != nil {
			b.msgBuf = msgs
			return fmt.Errorf("dispatch %s: %w", ch, err)
		}
	}
	b.msgBuf = msgs
	return nil
}
