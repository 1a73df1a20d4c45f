package campaigns

import (
	"context"
	"fmt"
	"time"
)

// A Redis that comes back empty (restarted without persistence, a failover
// to a replica that lagged) has forgotten every campaign, lease, checkpoint
// and ledger entry. The runs of this daemon notice it as a lost lease; the
// engine tells a real loss (another owner took over) from an empty store by
// the store's epoch marker, and writes back what its runs know: each
// campaign's definition, lease, checkpoint, open batches with their ledger
// bitmaps as last recorded, counts, and the failures its runs recorded. Then
// the runs retry what failed and go on; nothing they had confirmed is sent
// again. What no daemon can know (another daemon's flows' per-message dedup
// keys, failures recorded by earlier runs) is lost with the store: the
// observer counts the reset and the log says so.

// stateLost reports whether the state store lost its data (and, if so,
// restores what the engine knows before answering true). Runs call it when
// a write says their lease is lost.
func (e *Engine) stateLost(ctx context.Context) bool {
	reset, err := e.CheckState(ctx)
	if err != nil {
		e.log.Warn("check the state store's epoch", "error", err)
		return false
	}
	return reset
}

// Ready reports false while the engine is writing its campaigns back to a
// state store that lost them.
func (e *Engine) Ready() bool { return !e.restoring.Load() }

// WatchState checks the state store's epoch every interval until ctx ends,
// so a store that lost its data is noticed (and refilled) even when no
// campaign is writing.
func (e *Engine) WatchState(ctx context.Context, interval time.Duration) {
	if _, ok := e.progress.(StateRestorer); !ok {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := e.CheckState(ctx); err != nil && ctx.Err() == nil {
			e.log.Debug("check the state store's epoch", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CheckState compares the store's epoch with the one this engine saw first;
// if the store lost it, the engine's campaigns are written back and reset
// is true. Concurrent callers wait for one restore.
func (e *Engine) CheckState(ctx context.Context) (reset bool, err error) {
	rs, ok := e.progress.(StateRestorer)
	if !ok {
		return false, nil
	}
	e.emu.Lock()
	defer e.emu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ep, created, err := rs.Epoch(cctx)
	if err != nil {
		return false, err
	}
	if e.epoch == "" {
		// Our first look: whatever the store holds is what we start from.
		e.epoch = ep
		return false, nil
	}
	if ep == e.epoch && !created {
		return false, nil
	}
	e.restoring.Store(true)
	defer e.restoring.Store(false)
	e.log.Error("the state store lost its data (epoch marker gone): writing back the campaigns this daemon runs",
		"old_epoch", e.epoch, "new_epoch", ep)
	e.epoch = ep
	restored, lost := e.restoreAll(ctx, rs)
	if e.onReset != nil {
		e.onReset(restored, lost)
	}
	e.log.Warn("state written back after the store lost its data; per-message dedup keys of flows and failures recorded by earlier runs are gone",
		"restored_campaigns", restored, "not_restored", lost)
	return true, nil
}

// restoreAll writes back every running campaign's state and the records of
// scheduled ones this engine knows.
func (e *Engine) restoreAll(ctx context.Context, rs StateRestorer) (restored, lost int) {
	e.mu.Lock()
	var runs []*run
	for _, h := range e.runs {
		if h.run != nil {
			runs = append(runs, h.run)
		}
	}
	known := make(map[string]*compiled, len(e.compiled))
	for id, cc := range e.compiled {
		known[id] = cc
	}
	finished := make([]CampaignSnapshot, 0, len(e.finished))
	for _, snap := range e.finished {
		finished = append(finished, snap)
	}
	waiting := make([]CampaignSnapshot, 0, len(e.waitSnaps))
	for _, snap := range e.waitSnaps {
		waiting = append(waiting, snap)
	}
	e.mu.Unlock()
	running := map[string]bool{}
	for _, r := range runs {
		running[r.c.ID] = true
		cc := known[r.c.ID]
		if cc == nil {
			lost++
			continue
		}
		snap := r.snapshot(cc)
		snap.Record.Ring = r.ring
		err := retryState(ctx, e.log, fmt.Sprintf("restore campaign %s", r.c.ID), nil, func(ctx context.Context) error {
			_, err := rs.Restore(ctx, snap, e.cfg.LeaseTTL)
			return err
		})
		if err != nil {
			e.log.Error("restore campaign", "campaign", r.c.ID, "error", err)
			lost++
			continue
		}
		restored++
	}
	// Parts completed here of campaigns other shards still run: written
	// back as done, or this daemon (or its standby) would run them again.
	for _, snap := range finished {
		if running[snap.Record.ID] {
			continue // a retry pass runs it again now; its run was restored above
		}
		running[snap.Record.ID] = true
		if _, err := rs.Restore(ctx, snap, 0); err != nil {
			e.log.Error("restore completed campaign part", "campaign", snap.Record.ID, "error", err)
			lost++
			continue
		}
		restored++
	}
	// Campaigns that wait here for their next pass (localtime.go): the part
	// as it waits, under a lease of this daemon's that its next run takes over.
	for _, snap := range waiting {
		if running[snap.Record.ID] {
			continue
		}
		running[snap.Record.ID] = true
		if _, err := rs.Restore(ctx, snap, e.cfg.LeaseTTL); err != nil {
			e.log.Error("restore waiting campaign", "campaign", snap.Record.ID, "error", err)
			lost++
			continue
		}
		restored++
	}
	// Scheduled campaigns have no progress yet: their record is all there is.
	for id, cc := range known {
		if running[id] || cc.c.SendAt == nil || !cc.c.SendAt.After(e.now()) {
			continue
		}
		snap := CampaignSnapshot{Record: CampaignRecord{ID: id, Definition: cc.def, Status: StatusScheduled, Created: cc.created, Updated: e.now()}}
		if _, err := rs.Restore(ctx, snap, 0); err != nil {
			lost++
			continue
		}
		restored++
	}
	return restored, lost
}

// snapshot is what the run knows of its campaign's durable state.
func (r *run) snapshot(cc *compiled) CampaignSnapshot {
	flush, cp, open, counts, fails := r.led.snapshot()
	r.claimMu.Lock()
	seq, hi, has := r.lastSeq, r.lastClaimed, r.hasClaimed
	r.claimMu.Unlock()
	return CampaignSnapshot{
		Record: CampaignRecord{ID: r.c.ID, Definition: cc.def, Status: StatusRunning, Created: cc.created, Updated: r.now()},
		Lease:  r.lease, Flush: flush, Checkpoint: cp,
		LastClaimed: hi, HasClaimed: has, Seq: seq,
		Open: open, Counts: counts, Failures: fails,
	}
}
