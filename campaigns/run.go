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
	ab       *abPlan // the campaign's A/B test; nil without one
	channels []string
	lane     channels.Lane
	started  time.Time
	ttl      time.Duration
	now      func() time.Time
	log      *slog.Logger

	lease    Lease
	progress ProgressStore
	led      *ledger
	ring     string // the ring the run's part belongs to, "<version>:<shards>"

	// What the run claimed last, for a state store that lost it.
	claimMu     sync.Mutex
	lastSeq     int64
	lastClaimed uint64
	hasClaimed  bool
	dispatch    Dispatcher
	source      MemberSource
	cfg         EngineConfig

	stages MultiStage

	zmu   sync.Mutex
	zones map[string]*time.Location

	renderErrs atomic.Int64
	// dry is set on a dry run's pipeline: render errors are collected for
	// the report instead of logged.
	dry *dryState
	// caps enforces capRules, the campaign's effective frequency caps (none: nil).
	caps     CapStore
	capRules []CapRule
	free     chan *RecipientBatch
	// fb is the campaign's fallback plan (nil: not a fallback campaign);
	// fbq carries the fallback sends a campaign run decides.
	fb  *fallbackPlan
	fbq *fallbackQueue

	// A pass of a deferred campaign (localtime.go): plan gives members' due
	// times, keep filters the segment to the pass's members (nil: all).
	plan *planner
	keep func(*Member) bool
	// auto: the engine started the run by itself (crash-loop quarantine
	// applies); crashes is the part's crash count at Acquire.
	auto    bool
	crashes int
}

func (r *run) deadline() time.Time { return r.started.Add(r.ttl) }

// noteRenderError logs the first render error of a run and counts the rest:
// one broken template must not flood the log with a line per recipient.
func (r *run) noteRenderError(re *templates.RenderError, user string, variant int8) {
	if r.dry != nil {
		r.dry.renderError(re, user, r.variantField(variant))
		return
	}
	if r.renderErrs.Add(1) == 1 {
		r.log.Warn("render failed; recipients are skipped with render_error", "error", re)
	}
}

func newRun(c *Campaign, set *templates.Set, e *Engine, rp RingPart, res Resume, counts []Count, started time.Time) *run {
	r := newRunFor(c, set, e.now, e.log, e.dispatch, rp.Source, e.cfg)
	r.ring = rp.ring()
	r.lease, r.progress, r.started = res.Lease, e.progress, started
	r.led = newLedger(e.progress, res.Lease, r.log, e.cfg, res, counts)
	// A write refused for a lost lease is retried when the store lost its
	// data (the engine writes it back) or the lease merely ran out while the
	// store was away, with nobody taking over (Renew takes it back).
	r.led.lost = func(ctx context.Context) bool {
		return e.stateLost(ctx) || e.progress.Renew(ctx, res.Lease, e.cfg.LeaseTTL) == nil
	}
	// Resolve and layout run before the batch is claimed (produce).
	r.caps, r.capRules = e.caps, c.FrequencyCap.rules(e.capRules)
	r.stages = MultiStage{
		StageFunc(policyStage),
		StageFunc(capRenderStage),
		StageFunc(startStage),
		StageFunc(dispatchStage),
	}
	return r
}

// newRunFor builds the pipeline context of a campaign or of a flow's view.
func newRunFor(c *Campaign, set *templates.Set, now func() time.Time, log *slog.Logger, dispatch Dispatcher, source MemberSource, cfg EngineConfig) *run {
	r := &run{
		c: c, set: set, ab: c.ab, channels: c.Channels, lane: channels.LaneNormal,
		started: now(), ttl: c.TTLOrDefault(), now: now,
		log:      log.With("campaign", c.ID),
		dispatch: dispatch, source: source, cfg: cfg,
		zones: map[string]*time.Location{},
		free:  make(chan *RecipientBatch, cfg.MaxOpenBatches+1),
		fb:    newFallbackPlan(c),
	}
	if r.fb != nil {
		r.fbq = newFallbackQueue()
	}
	if c.Priority == "high" {
		r.lane = channels.LaneHigh
	}
	if keep := c.phaseFilter(); keep != nil && source != nil {
		r.source = filterSource{MemberSource: source, keep: keep}
	}
	r.stages = MultiStage{
		StageFunc(resolveStage),
		StageFunc(layoutStage),
		StageFunc(policyStage),
		StageFunc(renderStage),
		StageFunc(startStage),
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
	// The ledger keeps flushing for DrainTimeout after a stop, so outcomes
	// that arrive while the run drains are recorded.
	lctx, lcancel := drainContext(ctx, r.cfg.DrainTimeout)
	defer lcancel()
	var lwg sync.WaitGroup
	lwg.Add(1)
	go func() { defer lwg.Done(); r.led.run(lctx) }()

	// window holds a token per batch between its claim and its final
	// record: MaxOpenBatches means what it says.
	window := make(chan struct{}, r.cfg.MaxOpenBatches)
	fin := make(chan *RecipientBatch, r.cfg.MaxOpenBatches)
	var finErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range fin {
			if err := r.finish(ctx, lctx, b); err != nil && finErr == nil {
				finErr = err
			}
			<-window
		}
	}()
	// Fallback sends run until every batch is finished: a batch waits for them.
	fbStop := make(chan struct{})
	var fbwg sync.WaitGroup
	if r.fb != nil {
		fbwg.Add(1)
		go func() { defer fbwg.Done(); r.sendFallbacks(lctx, fbStop) }()
	}
	err := r.produce(ctx, res, fin, window)
	close(fin)
	wg.Wait()
	close(fbStop)
	fbwg.Wait()
	r.led.close()
	lwg.Wait()
	if err == nil {
		err = finErr
	}
	if err == nil && ctx.Err() != nil {
		err = errStopped
	}
	return err
}

// drainContext outlives ctx by d: a batch whose stages began finishes
// dispatching after a pause or shutdown, and its outcomes are recorded.
func drainContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(d, cancel)
		<-dctx.Done()
		t.Stop()
	})
	return dctx, func() { stop(); cancel() }
}

func (r *run) produce(ctx context.Context, res Resume, fin chan<- *RecipientBatch, window chan struct{}) error {
	sctx, cancel := drainContext(ctx, r.cfg.DrainTimeout)
	defer cancel()
	enter := func() bool {
		select {
		case window <- struct{}{}:
			return true
		case <-ctx.Done():
			return false
		}
	}
	run := func(b *RecipientBatch) error {
		if err := r.stages.Exec(sctx, b); err != nil {
			b.abort()
			fin <- b
			return err
		}
		fin <- b
		return nil
	}
	r.claimMu.Lock()
	r.lastClaimed, r.hasClaimed = res.LastClaimed, res.HasClaimed
	for _, ob := range res.Open {
		r.lastSeq = max(r.lastSeq, ob.Seq)
	}
	if r.lastSeq == 0 && res.Checkpoint.Valid {
		r.lastSeq = res.Checkpoint.Seq
	}
	r.claimMu.Unlock()
	// A claimed batch's stages run beside the claim of the next one: the
	// batch's Redis waits (its frequency-cap check) overlap the producer's
	// reading, claiming and the other batches' rendering instead of adding
	// up. The window bounds how many are in flight; all have handed their
	// batch to fin before produce returns (fin closes after).
	var (
		swg      sync.WaitGroup
		stageMu  sync.Mutex
		stageErr error
	)
	defer swg.Wait()
	failed := func() error {
		stageMu.Lock()
		defer stageMu.Unlock()
		return stageErr
	}
	runAsync := func(b *RecipientBatch) {
		swg.Add(1)
		go func() {
			defer swg.Done()
			if err := run(b); err != nil {
				stageMu.Lock()
				if stageErr == nil {
					stageErr = err
				}
				stageMu.Unlock()
			}
		}()
	}
	// First the batches an earlier run left open: their slots are final,
	// in doubt (handed, unanswered) or never handed.
	for _, ob := range res.Open {
		if ob.Final {
			continue
		}
		if !enter() {
			return nil
		}
		b, err := r.redrive(ctx, ob)
		if err != nil {
			<-window
			return err
		}
		if err := run(b); err != nil {
			return err
		}
	}

	it, err := r.source.Members(r.c.Segment, res.LastClaimed, res.HasClaimed)
	if err != nil {
		return fmt.Errorf("open segment %q: %w", r.c.Segment, err)
	}
	defer it.Close()
	defer swg.Wait() // before Close: the stages read members from the pinned generation
	for ctx.Err() == nil {
		if err := r.led.err(); err != nil {
			return err
		}
		if err := failed(); err != nil {
			return err
		}
		if !enter() {
			swg.Wait()
			return failed()
		}
		b := r.getBatch(r.cfg.BatchSize)
		n, err := r.next(it, b.Members)
		if err != nil || n == 0 {
			<-window
			if err != nil {
				return fmt.Errorf("read segment %q: %w", r.c.Segment, err)
			}
			swg.Wait()
			return failed()
		}
		b.Members = b.Members[:n]
		b.reset(r, n)
		b.led = r.led
		b.First, b.Last = b.Members[0].Key, b.Members[n-1].Key
		// Resolve and lay out before the claim: the claim records the slots.
		_ = resolveStage(sctx, b)
		b.layout(nil)
		seq, err := r.claim(ctx, b)
		if err != nil {
			<-window
			return fmt.Errorf("claim batch: %w", err)
		}
		b.Seq = seq
		r.led.claimed(seq, b.First, b.Last, b.nslots)
		r.claimMu.Lock()
		r.lastSeq, r.lastClaimed, r.hasClaimed = seq, b.Last, true
		r.claimMu.Unlock()
		runAsync(b)
	}
	swg.Wait()
	return failed()
}

// claim records a new batch, retrying infrastructure errors: the claim is
// idempotent for the same range.
func (r *run) claim(ctx context.Context, b *RecipientBatch) (int64, error) {
	var seq int64
	err := retryState(ctx, r.log, "claim batch", r.led.lost, func(ctx context.Context) error {
		var err error
		seq, err = r.progress.ClaimBatch(ctx, r.lease, b.First, b.Last, b.nslots)
		return err
	})
	return seq, err
}

// redrive rebuilds an open batch of an earlier run from the shard and
// settles it against the ledger: final slots are left alone, slots in
// doubt are re-sent with the same idempotency handle or, where the channel
// has none (SMS, email), reported in_doubt, and the rest is sent.
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
	if r.keep != nil {
		members = members[:keepMembers(members, r.keep)]
	}
	b.Members = members
	b.reset(r, len(members))
	b.led = r.led
	b.Seq, b.First, b.Last = ob.Seq, ob.First, ob.Last
	_ = resolveStage(ctx, b)
	// Slots map to the earlier run's only if the members in the range still
	// have the same addresses; otherwise every handed slot is in doubt.
	slots := 0
	for p := range b.pos {
		slots += int(b.pos[p].slots())
	}
	same := slots == ob.Slots
	if same {
		b.layout(ob.Done)
	} else {
		b.layout(nil)
		r.led.relayout(ob.Seq, b.nslots)
		b.pendAll = true
	}
	if b.fb != nil {
		b.fbRedrive()
	}
	inDoubt, final := 0, 0
	b.mu.Lock()
	for i := range b.envs {
		e := &b.envs[i]
		if e.done {
			final++
			continue
		}
		s := int(b.pos[e.pos].slot + e.n)
		if (same && !ob.InDoubt(s)) || (!same && !anyHanded(ob)) {
			continue
		}
		inDoubt++
		if ch := r.channels[e.ch]; ch == channels.SMS || ch == channels.Email {
			// No provider-side idempotency handle: a re-send could arrive twice.
			b.skipEnvelope(e, ReasonInDoubt)
			continue
		}
		if same {
			e.handed = true // the ledger holds it as handed already
		}
	}
	b.mu.Unlock()
	r.log.Info("resuming open batch", "seq", ob.Seq, "members", len(members), "final", final, "in_doubt", inDoubt, "same_slots", same)
	return b, nil
}

func anyHanded(b Batch) bool {
	for _, v := range b.Dispatched {
		if v != 0 {
			return true
		}
	}
	return false
}

// finish waits for a dispatched batch's outcomes and for the ledger to hold
// them. When the run is stopping it waits at most DrainTimeout; what is
// unsettled by then stays open in the ledger for the next run.
func (r *run) finish(ctx, lctx context.Context, b *RecipientBatch) error {
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
	b.mu.Lock()
	final, idle := b.undone == 0, b.remaining == 0
	b.mu.Unlock()
	if !final {
		return errStopped
	}
	if err := r.led.sync(lctx); err != nil {
		return fmt.Errorf("record batch %d: %w", b.Seq, err)
	}
	if idle {
		// Nothing can touch it any more: reuse it. Otherwise late outcomes
		// still write into it, and it is left to the garbage collector.
		r.putBatch(b)
	}
	return nil
}
