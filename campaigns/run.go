package campaigns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/templates"
)

// run is one execution of a campaign by this daemon, from Acquire to release.
type run struct {
	c        *Campaign
	set      *templates.Set
	channels []string
	lane     channels.Lane
	started  time.Time
	ttl      time.Duration
	now      func() time.Time
	log      *slog.Logger

	lease    Lease
	progress ProgressStore
	dispatch Dispatcher
	source   MemberSource
	cfg      EngineConfig

	stages MultiStage

	zmu   sync.Mutex
	zones map[string]*time.Location

	renderErrs atomic.Int64
	free       chan *RecipientBatch
}

func (r *run) deadline() time.Time { return r.started.Add(r.ttl) }

// noteRenderError logs the first render error of a run and counts the rest:
// one broken template must not flood the log with a line per recipient.
func (r *run) noteRenderError(re *templates.RenderError) {
	if r.renderErrs.Add(1) == 1 {
		r.log.Warn("render failed; recipients are skipped with render_error", "error", re)
	}
}

func newRun(c *Campaign, set *templates.Set, e *Engine, lease Lease, started time.Time) *run {
	r := newRunFor(c, set, e.now, e.log, e.dispatch, e.source, e.cfg)
	r.lease, r.progress, r.started = lease, e.progress, started
	return r
}

// newRunFor builds the pipeline context of a campaign or of a flow's view.
func newRunFor(c *Campaign, set *templates.Set, now func() time.Time, log *slog.Logger, dispatch Dispatcher, source MemberSource, cfg EngineConfig) *run {
	r := &run{
		c: c, set: set, channels: c.Channels, lane: channels.LaneNormal,
		started: now(), ttl: c.TTLOrDefault(), now: now,
		log:      log.With("campaign", c.ID),
		dispatch: dispatch, source: source, cfg: cfg,
		zones: map[string]*time.Location{},
		free:  make(chan *RecipientBatch, cfg.MaxOpenBatches+1),
	}
	if c.Priority == "high" {
		r.lane = channels.LaneHigh
	}
	r.stages = MultiStage{
		StageFunc(resolveStage),
		StageFunc(policyStage),
		StageFunc(renderStage),
		StageFunc(recordStage),
		StageFunc(dispatchStage),
	}
	return r
}

func (r *run) getBatch(members int) *RecipientBatch {
	var b *RecipientBatch
	select {
	case b = <-r.free:
	default:
		b = &RecipientBatch{}
	}
	if cap(b.Members) < members {
		b.Members = make([]Member, members)
	}
	b.Members = b.Members[:members]
	return b
}

func (r *run) putBatch(b *RecipientBatch) {
	select {
	case r.free <- b:
	default:
	}
}

// errStopped ends a run whose context was canceled (pause, cancel, shutdown).
var errStopped = errors.New("run stopped")

// execute delivers the campaign from where its progress says, and returns nil
// once every member is final. A canceled ctx stops intake of new batches;
// batches already dispatched are waited for (up to DrainTimeout) and recorded.
func (r *run) execute(ctx context.Context, res Resume) error {
	fin := make(chan *RecipientBatch, r.cfg.MaxOpenBatches)
	var finErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range fin {
			if err := r.finish(ctx, b); err != nil && finErr == nil {
				finErr = err
			}
		}
	}()
	err := r.produce(ctx, res, fin)
	close(fin)
	wg.Wait()
	if err == nil {
		err = finErr
	}
	if err == nil && ctx.Err() != nil {
		err = errStopped
	}
	return err
}

// drainContext outlives ctx by d: a batch whose stages began finishes
// recording and dispatching after a pause or shutdown, so positions are not
// left "dispatched" in the progress record without being handed to a
// channel (which a later run would have to treat as in doubt).
func drainContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(d, cancel)
		<-dctx.Done()
		t.Stop()
	})
	return dctx, func() { stop(); cancel() }
}

func (r *run) produce(ctx context.Context, res Resume, fin chan<- *RecipientBatch) error {
	sctx, cancel := drainContext(ctx, r.cfg.DrainTimeout)
	defer cancel()
	// First the batches an earlier owner left open: their positions are
	// settled, in doubt, or never sent.
	for _, ob := range res.Open {
		if ob.Final {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		b, err := r.redrive(ctx, ob)
		if err != nil {
			return err
		}
		if err := r.stages.Exec(sctx, b); err != nil {
			b.abort()
			fin <- b
			return err
		}
		fin <- b
	}

	it, err := r.source.Members(r.c.Segment, res.LastClaimed, res.HasClaimed)
	if err != nil {
		return fmt.Errorf("open segment %q: %w", r.c.Segment, err)
	}
	defer it.Close()
	for ctx.Err() == nil {
		b := r.getBatch(r.cfg.BatchSize)
		n, err := it.Next(b.Members)
		if err != nil {
			return fmt.Errorf("read segment %q: %w", r.c.Segment, err)
		}
		if n == 0 {
			return nil
		}
		b.Members = b.Members[:n]
		b.reset(r, n)
		b.First, b.Last = b.Members[0].Key, b.Members[n-1].Key
		seq, err := r.progress.ClaimBatch(ctx, r.lease, b.First, b.Last, b.Slots())
		if err != nil {
			return fmt.Errorf("claim batch: %w", err)
		}
		b.Seq = seq
		if err := r.stages.Exec(sctx, b); err != nil {
			b.abort()
			fin <- b
			return err
		}
		fin <- b // blocks while MaxOpenBatches are unfinished: backpressure
	}
	return nil
}

// redrive rebuilds an open batch of an earlier owner from the shard.
func (r *run) redrive(ctx context.Context, ob Batch) (*RecipientBatch, error) {
	it, err := r.source.Members(r.c.Segment, ob.First-1, ob.First > 0)
	if err != nil {
		return nil, fmt.Errorf("open segment %q: %w", r.c.Segment, err)
	}
	defer it.Close()
	b := r.getBatch(r.cfg.BatchSize)
	var members []Member
	buf := b.Members
	for {
		n, err := it.Next(buf)
		if err != nil {
			return nil, fmt.Errorf("read segment %q: %w", r.c.Segment, err)
		}
		stop := n == 0
		for i := range n {
			if buf[i].Key > ob.Last {
				stop = true
				break
			}
			members = append(members, buf[i])
		}
		if stop {
			break
		}
		buf = make([]Member, r.cfg.BatchSize) // members keep pointing into the old one
	}
	b.Members = members
	b.reset(r, len(members))
	b.Seq, b.First, b.Last = ob.Seq, ob.First, ob.Last
	// Positions map to the old run's only if the segment still has the same
	// members in the range; otherwise every position is treated as in doubt.
	same := ob.Slots == b.Slots()
	nch := b.nch()
	inDoubt := 0
	for p := range b.pos {
		switch {
		case same && ob.Done.Has(p):
			b.pos[p].settled = true
			b.open--
		case !same || ob.InDoubt(p):
			inDoubt++
			if r.channels[p%nch] == channels.SMS {
				// No provider-side idempotency handle: re-sending could text twice.
				b.skip(p, ReasonInDoubt)
			} else {
				b.pos[p].inDoubt = true // re-sent with the same idempotency key
			}
		}
	}
	b.remaining = b.open
	r.log.Info("resuming open batch", "seq", ob.Seq, "members", len(members), "in_doubt", inDoubt, "same_members", same)
	return b, nil
}

// finish waits for a dispatched batch's outcomes and records them. When the
// run is stopping it waits at most DrainTimeout; what is unsettled by then is
// left open for the next owner.
func (r *run) finish(ctx context.Context, b *RecipientBatch) error {
	if !b.finalReported {
		select {
		case <-b.done:
		case <-ctx.Done():
			t := time.NewTimer(r.cfg.DrainTimeout)
			select {
			case <-b.done:
			case <-t.C:
			}
			t.Stop()
		}
	}
	if b.finalReported {
		r.putBatch(b)
		return nil
	}
	b.mu.Lock()
	if b.remaining == 0 {
		// Nothing can touch it any more: reuse it. Otherwise late outcomes
		// still write into it, and it is left to the garbage collector.
		defer r.putBatch(b)
	}
	rep := BatchReport{
		Seq:       b.Seq,
		Confirmed: NewBitmap(len(b.pos)),
		Done:      NewBitmap(len(b.pos)),
		Counts:    b.takeCounts(),
		Failures:  append([]Failure(nil), b.failures...),
		Final:     true,
	}
	for p := range b.pos {
		ps := &b.pos[p]
		if ps.accepted {
			rep.Confirmed.Set(p)
		}
		if ps.settled && ps.reason != ReasonCanceled {
			rep.Done.Set(p)
		} else {
			rep.Final = false
		}
	}
	b.failures = b.failures[:0]
	b.mu.Unlock()
	// The report must land even while the run is being stopped.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := r.progress.ReportBatch(wctx, r.lease, rep); err != nil {
		return fmt.Errorf("report batch %d: %w", b.Seq, err)
	}
	if !rep.Final {
		return errStopped
	}
	return nil
}
