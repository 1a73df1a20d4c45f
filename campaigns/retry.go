package campaigns

import (
	"context"
	"errors"
	"fmt"
)

// ReasonLeftShard settles a failure being retried whose member is no longer
// in the shard.
const ReasonLeftShard = "left_shard"

// RetryFailed re-runs only the recipients whose messages failed transiently
// (retries exhausted) on a completed or failed campaign. It returns at once;
// the campaign is running until the pass ends, then completed again. In a
// fleet every part is reopened for a retry pass: this daemon runs its own at
// once, the others at their next tick, and the campaign completes when the
// last part has.
func (e *Engine) RetryFailed(ctx context.Context, id string) (CampaignStatus, error) {
	rec, err := e.store.Get(ctx, id)
	if err != nil {
		return CampaignStatus{}, err
	}
	if rec.Status != StatusCompleted && rec.Status != StatusFailed {
		return CampaignStatus{}, fmt.Errorf("retry failed recipients of %s (%s): %w", id, rec.Status, ErrInvalidTransition)
	}
	n := e.ringShards(rec.Ring)
	for k := range n {
		if err := e.progress.Reopen(ctx, partID(id, k, n)); err != nil {
			return CampaignStatus{}, err
		}
	}
	if err := e.startWith(ctx, id, rec.Status, true, false); err != nil {
		return CampaignStatus{}, err
	}
	return e.Get(ctx, id)
}

// retryFailed pages through the campaign's transient failures (the cursor
// moves past each page, so a failure that fails again is not revisited in
// this pass) and re-sends each (member, channel) once.
func (r *run) retryFailed(ctx context.Context) error {
	pin, err := r.source.Pin()
	if err != nil {
		return fmt.Errorf("pin shard generation: %w", err)
	}
	defer pin.Close()
	cursor := ""
	for ctx.Err() == nil {
		page, next, err := r.progress.Failures(ctx, r.lease.Campaign, cursor, r.cfg.BatchSize)
		if err != nil {
			return fmt.Errorf("list failures: %w", err)
		}
		if len(page) == 0 {
			return nil
		}
		if err := r.retryPage(ctx, pin, page); err != nil {
			return err
		}
		if next == "" {
			return nil
		}
		cursor = next
	}
	return errStopped
}

func (r *run) retryPage(ctx context.Context, pin PinnedSource, page []Failure) error {
	// One member per distinct user (failures are sorted by user), and only
	// the failed addresses of the failed channels are sent.
	b := r.getBatch(len(page))
	b.Members = b.Members[:0]
	type want struct{ m, ch, addr int }
	var wants []want
	var gone []Failure
	for _, f := range page {
		chIdx := -1
		for i, ch := range r.channels {
			if ch == f.Channel {
				chIdx = i
			}
		}
		if chIdx < 0 {
			continue
		}
		if n := len(b.Members); n == 0 || b.Members[n-1].Key != f.User {
			b.Members = b.Members[:n+1]
			ok, err := pin.LookupKey(f.User, &b.Members[n])
			if err != nil {
				return fmt.Errorf("look up member %016x: %w", f.User, err)
			}
			if !ok {
				b.Members = b.Members[:n]
				gone = append(gone, f)
				continue
			}
		}
		wants = append(wants, want{len(b.Members) - 1, chIdx, f.Address})
	}
	b.reset(r, len(b.Members))
	b.fb = nil // a retry re-sends the failed message on its own channel
	wanted := make(map[[2]int]bool, len(wants))
	open := make([]bool, len(b.pos))
	for _, w := range wants {
		p := w.m*b.nch() + w.ch
		open[p] = true
		wanted[[2]int{p, w.addr}] = true
	}
	for p := range b.pos {
		if !open[p] {
			b.pos[p].settled = true // not part of this retry: not counted
			b.open--
		}
	}
	if err := (MultiStage{StageFunc(resolveStage), StageFunc(layoutStage)}).Exec(ctx, b); err != nil {
		return err
	}
	// Of an open position, only the addresses that failed are sent again.
	for p := range b.pos {
		ps := &b.pos[p]
		if ps.settled {
			continue
		}
		for j := range ps.nenv {
			if e := &b.envs[ps.first+j]; !wanted[[2]int{p, int(j)}] {
				e.done = true
				ps.undone--
			}
		}
		if ps.undone == 0 {
			// The failed address is no longer the member's (a token was removed).
			ps.settled = true
			b.open--
			gone = append(gone, Failure{User: b.Members[p/b.nch()].Key, Channel: r.channels[p%b.nch()]})
		}
	}
	if err := (MultiStage{StageFunc(policyStage), StageFunc(renderStage)}).Exec(ctx, b); err != nil {
		return err
	}
	b.remaining = b.open
	if b.open == 0 {
		b.closeDone()
	} else if err := dispatchStage(ctx, b); err != nil {
		b.abort()
		<-b.done
		return err
	}
	<-b.done

	b.mu.Lock()
	rep := RetryReport{Retried: page, Failures: append([]Failure(nil), b.failures...), Counts: b.takeCounts()}
	canceled := false
	for p := range b.pos {
		if b.pos[p].reason == ReasonCanceled {
			canceled = true
		}
	}
	b.mu.Unlock()
	if canceled {
		// Keep them all listed: the next "retry failed" sees them again.
		return errStopped
	}
	// A failure's A/B group is recomputed from its user key: the same
	// function placed it there.
	for _, f := range gone {
		rep.Counts = append(rep.Counts, Count{Channel: f.Channel, Reason: ReasonLeftShard, Variant: r.variantOf(f.User), N: 1})
	}
	for _, f := range page {
		rep.Counts = append(rep.Counts, Count{Channel: f.Channel, Reason: f.Reason, Variant: r.variantOf(f.User), N: -1})
	}
	if err := r.progress.MarkRetried(context.WithoutCancel(ctx), r.lease, rep); err != nil {
		if errors.Is(err, ErrLeaseLost) {
			return err
		}
		return fmt.Errorf("record retried failures: %w", err)
	}
	r.putBatch(b)
	return nil
}

// variantOf is the A/B group of the member with user key key ("" without
// an A/B test).
func (r *run) variantOf(key uint64) string {
	if r.ab == nil {
		return ""
	}
	return r.ab.id(r.ab.assign(key))
}
