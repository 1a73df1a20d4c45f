package campaigns

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/notifyd/notifyd/templates"
)

// A deferred campaign's part (the campaign, or its shard's part in a fleet)
// runs its passes one after the other. Each pass is a progress part of its
// own, "<part>/t<unix seconds>", with its own lease, checkpoint, ledger and
// counts, so a pass resumes after a crash exactly like a campaign does. The
// campaign's part keeps the plan and the passes' results as one-slot
// batches of its own ledger: the plan at key 0, then each finished pass at
// key <unix seconds>, its counts (and failures, for "retry failed") folded
// in by the report that makes that batch final. The part's checkpoint is
// thus the last pass folded, and a fold is applied exactly once.

// errWaiting ends a run whose next pass is not due yet: the lease is
// released and Tick starts the campaign again when the pass is due.
var errWaiting = errors.New("waiting for the next pass")

// errQuarantined ends a run whose pass kept killing its daemon: the
// campaign is failed with reason crash_loop.
var errQuarantined = errors.New("campaign quarantined")

// passPart is the progress id of the pass at unix seconds of part.
func passPart(part string, unix int64) string { return part + "/t" + strconv.FormatInt(unix, 10) }

// foldState is where the campaign part's own ledger stands.
type foldState struct {
	cp   Checkpoint
	last uint64
	has  bool
	open []Batch
}

func (f *foldState) folded(key uint64) bool { return f.cp.Valid && f.cp.Key >= key }

// executePasses runs a deferred campaign's part: it records the plan, then
// runs each due pass and folds its results in, and returns errWaiting when
// the next pass lies in the future.
func (e *Engine) executePasses(ctx context.Context, r *run, res Resume, h *runHandle) error {
	cc, err := e.load(ctx, r.c.ID)
	if err != nil {
		return err
	}
	pl := newPlanner(r.c, anchorOf(cc))
	p, err := pl.scan(r.source, r.c.Segment, r.cfg.BatchSize)
	if err != nil {
		return err
	}
	fs := &foldState{cp: res.Checkpoint, last: res.LastClaimed, has: res.HasClaimed, open: res.Open}
	if err := e.fold(ctx, r, fs, 0, p.planCounts(), ""); err != nil {
		return fmt.Errorf("record the plan: %w", err)
	}
	for _, at := range p.passes {
		key := uint64(at.Unix())
		if fs.folded(key) {
			continue
		}
		if ctx.Err() != nil {
			return errStopped
		}
		if r.now().Before(at) {
			e.setWaiting(r.c.ID, at, e.waitingSnapshot(ctx, r, cc, fs))
			r.log.Info("campaign waits for its next pass", "due", at)
			return errWaiting
		}
		part := passPart(r.lease.Campaign, at.Unix())
		counts, err := e.runPass(ctx, r, pl, at, part, h)
		if err != nil {
			return err
		}
		if err := e.fold(ctx, r, fs, key, counts, part); err != nil {
			return fmt.Errorf("fold pass %s: %w", part, err)
		}
	}
	return nil
}

// anchorOf is the instant a deferred campaign's due times count from:
// send_at, else its creation. Both are stored, so every run agrees.
func anchorOf(cc *compiled) time.Time {
	if cc.c.SendAt != nil {
		return *cc.c.SendAt
	}
	return cc.created
}

// runPass runs (or resumes) one pass to completion and returns its counts.
func (e *Engine) runPass(ctx context.Context, r *run, pl *planner, at time.Time, part string, h *runHandle) ([]Count, error) {
	prog, err := e.progress.Progress(ctx, part)
	if err != nil {
		return nil, fmt.Errorf("read progress of pass %s: %w", part, err)
	}
	if prog.Completed {
		return prog.Counts, nil
	}
	res, err := e.progress.Acquire(ctx, part, e.cfg.Owner, e.cfg.LeaseTTL)
	if err != nil {
		return nil, fmt.Errorf("acquire pass %s: %w", part, err)
	}
	bg := context.WithoutCancel(ctx)
	// Crash loops are watched on the pass, which records the progress; the
	// campaign part would count every crash of a long pass, progress or not.
	if r.auto && e.cfg.CrashLoopLimit > 0 && res.Crashes >= e.cfg.CrashLoopLimit {
		if rerr := e.progress.Release(bg, res.Lease); rerr != nil {
			r.log.Warn("release pass lease", "part", part, "error", rerr)
		}
		if _, terr := e.store.TransitionBecause(bg, r.c.ID, StatusRunning, StatusFailed, ReasonCrashLoop); terr != nil {
			return nil, fmt.Errorf("quarantine campaign %s: %w", r.c.ID, terr)
		}
		r.log.Error("campaign quarantined: its daemon died while running a pass, again and again; fix the cause, then resume it",
			"part", part, "crashes", res.Crashes, "limit", e.cfg.CrashLoopLimit)
		if e.onQuarantine != nil {
			e.onQuarantine(r.c.ID)
		}
		return nil, errQuarantined
	}
	if r.crashes > 0 {
		if _, err := e.progress.Record(ctx, r.lease, Flush{Progress: true}); err != nil {
			_ = e.progress.Release(bg, res.Lease)
			return nil, fmt.Errorf("reset the crash count of %s: %w", r.lease.Campaign, err)
		}
		r.crashes = 0
	}
	pr := newRun(r.c, r.set, e, RingPart{Source: r.source}, res, prog.Counts, pl.passStart(at))
	pr.ring = r.ring
	pr.plan, pr.keep = pl, pl.keepPass(at)
	pr.stages = append(MultiStage{StageFunc(deferStage)}, pr.stages...)
	r.log.Info("campaign pass starts", "pass", at, "part", part)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.renew(rctx, pr.lease, h) }()
	err = pr.execute(ctx, res)
	stop()
	<-done
	if err != nil {
		if rerr := e.progress.Release(bg, pr.lease); rerr != nil && !errors.Is(rerr, ErrLeaseLost) {
			r.log.Warn("release pass lease", "part", part, "error", rerr)
		}
		return nil, err
	}
	if err := e.progress.Complete(bg, pr.lease); err != nil {
		return nil, fmt.Errorf("complete pass %s: %w", part, err)
	}
	if prog, err = e.progress.Progress(ctx, part); err != nil {
		return nil, fmt.Errorf("read progress of pass %s: %w", part, err)
	}
	return prog.Counts, nil
}

// fold records counts (and the failures of pass part, if any) as the
// one-slot batch at key of the campaign part, unless it is there already.
// Failures go first, in pages (a failure is a set member: a page written
// twice after a crash is harmless); the counts go with the report that
// makes the batch final, so they are added exactly once.
func (e *Engine) fold(ctx context.Context, r *run, fs *foldState, key uint64, counts []Count, part string) error {
	if fs.folded(key) {
		return nil
	}
	var seq int64
	if fs.has && fs.last >= key {
		for _, b := range fs.open {
			if b.First == key && !b.Final {
				seq = b.Seq
			}
		}
		if seq == 0 {
			return fmt.Errorf("batch at key %d of %s is neither open nor folded", key, r.lease.Campaign)
		}
	} else {
		var err error
		if seq, err = e.progress.ClaimBatch(ctx, r.lease, key, key, 1); err != nil {
			return err
		}
		fs.last, fs.has = key, true
		fs.open = append(fs.open, Batch{Seq: seq, First: key, Last: key, Slots: 1})
	}
	if part != "" {
		cursor := ""
		for {
			page, next, err := e.progress.Failures(ctx, part, cursor, 1000)
			if err != nil {
				return fmt.Errorf("read failures of %s: %w", part, err)
			}
			if len(page) > 0 {
				if _, err := e.progress.Record(ctx, r.lease, Flush{Reports: []BatchReport{{Seq: seq, Failures: page}}}); err != nil {
					return err
				}
			}
			if next == "" {
				break
			}
			cursor = next
		}
	}
	cp, err := e.progress.Record(ctx, r.lease, Flush{Progress: true, Reports: []BatchReport{{
		Seq: seq, Done: Bitmap{0x80}, Counts: counts, Final: true,
	}}})
	if err != nil {
		return err
	}
	fs.cp = cp
	return nil
}

// setWaiting notes that campaign id's next pass is due at `at`: Tick leaves
// it alone until then. snap is its part as it waits, for a state store
// that loses it meanwhile (no run holds it to write it back).
func (e *Engine) setWaiting(id string, at time.Time, snap *CampaignSnapshot) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.waiting == nil {
		e.waiting = map[string]time.Time{}
		e.waitSnaps = map[string]CampaignSnapshot{}
	}
	e.waiting[id] = at
	if snap != nil {
		e.waitSnaps[id] = *snap
	}
}

// waitingSnapshot is a waiting part as the store holds it: record, the
// plan and every folded pass's counts, the checkpoint past the last folded
// pass; nil if the store cannot be read now. Failures are left out (as
// for failures recorded by earlier runs, docs/redis-keys.md).
func (e *Engine) waitingSnapshot(ctx context.Context, r *run, cc *compiled, fs *foldState) *CampaignSnapshot {
	if _, ok := e.progress.(StateRestorer); !ok {
		return nil
	}
	p, err := e.progress.Progress(ctx, r.lease.Campaign)
	if err != nil {
		return nil
	}
	return &CampaignSnapshot{
		Record: CampaignRecord{ID: r.c.ID, Definition: cc.def, Status: StatusRunning, Ring: r.ring, Created: cc.created, Updated: e.now()},
		Lease:  r.lease, Checkpoint: fs.cp, LastClaimed: fs.last, HasClaimed: fs.has, Seq: fs.cp.Seq, Counts: p.Counts,
	}
}

// planStatus adds a deferred campaign part's waiting members to w, and the
// counts of its running pass (not yet folded into the part) to counts; it
// returns the part's counts without the plan.
func (e *Engine) planStatus(ctx context.Context, part string, p Progress, w *Waiting) ([]Count, error) {
	done := int64(-1)
	if p.Checkpoint.Valid {
		done = int64(p.Checkpoint.Key)
	}
	now := e.now()
	out := make([]Count, 0, len(p.Counts))
	current := int64(-1) // the first pass not folded, if due
	for _, c := range p.Counts {
		if c.Channel != planChannel {
			out = append(out, c)
			continue
		}
		w.add(c, done, now)
		_, unix, _ := strings.Cut(c.Reason, ":")
		k, err := strconv.ParseInt(unix, 10, 64)
		if err == nil && k > done && !time.Unix(k, 0).After(now) && (current < 0 || k < current) {
			current = k
		}
	}
	if current >= 0 && !p.Completed {
		pp, err := e.progress.Progress(ctx, passPart(part, current))
		if err != nil {
			return nil, err
		}
		out = append(out, pp.Counts...)
	}
	return out, nil
}

// dryPasses counts a deferred campaign's audience pass by pass, each at its
// own instant (or the dry run's, if later), as the real run would, and
// returns what waits past the dry run's instant.
func (e *Engine) dryPasses(ctx context.Context, c *Campaign, set *templates.Set, dry *dryState, rep *DryRunReport) (*Waiting, error) {
	pl := newPlanner(c, rep.At)
	p, err := pl.scan(e.source, c.Segment, e.cfg.BatchSize)
	if errors.Is(err, ErrUnknownSegment) {
		return nil, &FieldError{Field: "segment", Msg: fmt.Sprintf("no segment %q in the shard", c.Segment)}
	}
	if err != nil {
		return nil, err
	}
	w := &Waiting{}
	for _, pc := range p.planCounts() {
		w.add(pc, -1, rep.At)
	}
	for _, at := range p.passes {
		r, _ := e.dryRun(c, set, maxTime(at, rep.At))
		r.dry, r.started = dry, pl.passStart(at)
		r.plan, r.keep = pl, pl.keepPass(at)
		n, err := r.countAudience(ctx, rep.Audience)
		if err != nil {
			return nil, err
		}
		rep.Members += n
	}
	return w, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
