package campaigns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/templates"
)

// EngineConfig are the engine's knobs; zero fields take defaults.
type EngineConfig struct {
	// Owner names this daemon in campaign leases (default "notifyd").
	Owner string
	// BatchSize is members per batch (default 1,000).
	BatchSize int
	// MaxOpenBatches bounds the batches of one campaign in flight (default 4):
	// with BatchSize it bounds memory and the in-doubt window after a crash.
	MaxOpenBatches int
	// LeaseTTL is how long a campaign lease lives without renewal (default 30s).
	LeaseTTL time.Duration
	// DrainTimeout is how long a stopping run waits for in-flight outcomes (default 30s).
	DrainTimeout time.Duration
	// FlushInterval is the longest a ledger change waits to be written when
	// no worker is waiting for it (default 2ms).
	FlushInterval time.Duration
	// FlushSlots is how many ledger changes make a flush start at once (default 4,096).
	FlushSlots int
	// Shard and Shards place this daemon in a fleet: it runs part Shard of
	// every campaign (the members of its shard file) of a ring of Shards.
	// Each part has its own lease, checkpoint, ledger and counts; a campaign
	// completes when every part has. Shards ≤ 1: the daemon is the fleet.
	Shard, Shards int
	// RingVersion is the version of the ring this daemon's shard file
	// belongs to. A campaign is pinned to the ring it first ran on: a daemon
	// of another ring version does not run its parts (ErrRingMismatch),
	// unless it still holds its shard of that ring (Retained).
	RingVersion uint64
	// Retained are this daemon's shards of earlier rings, kept through a
	// reshard: campaigns pinned to one of them keep running here over that
	// ring's members, so every member of the old ring is reached once.
	Retained []RingPart
	// TemplateCeilings are the daemon's template limits; a campaign's
	// content.limits may only lower them (zero: the package defaults).
	TemplateCeilings templates.Limits
	// CrashLoopLimit quarantines a campaign (failed, reason crash_loop) when
	// its daemon died this many times in a row while running it, each time
	// before the checkpoint moved or the lease was renewed (default 3; < 0
	// disables it).
	CrashLoopLimit int
}

func (c EngineConfig) withDefaults() EngineConfig {
	if c.Owner == "" {
		c.Owner = "notifyd"
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.MaxOpenBatches <= 0 {
		c.MaxOpenBatches = 4
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 2 * time.Millisecond
	}
	if c.FlushSlots <= 0 {
		c.FlushSlots = 4096
	}
	if c.CrashLoopLimit == 0 {
		c.CrashLoopLimit = 3
	}
	return c
}

// Engine runs campaigns: it creates them (idempotently), schedules, starts,
// pauses, resumes and cancels them, and reports their status.
type Engine struct {
	store    CampaignStore
	progress ProgressStore
	source   MemberSource
	dispatch Dispatcher
	cfg      EngineConfig
	now      func() time.Time
	log      *slog.Logger

	// caps enforces capRules, the daemon's global frequency caps.
	caps     CapStore
	capRules []CapRule

	mu       sync.Mutex
	runs     map[string]*runHandle
	compiled map[string]*compiled
	// finished are the parts this engine completed of campaigns still
	// running on other shards: a store that loses them (emptied, or one
	// Cluster master restarted empty) would otherwise make this daemon run
	// its part again from the start. Forgotten once the campaign is final.
	finished map[string]CampaignSnapshot
	// waiting are deferred campaigns whose next pass is not due yet, and
	// when it is: Tick does not start them before.
	waiting map[string]time.Time
	// waitSnaps are those campaigns' parts as they wait, written back if
	// the state store loses them (no run is there to do it).
	waitSnaps map[string]CampaignSnapshot
	// winners are the tests whose winner campaign exists.
	winners map[string]bool

	// The state store's epoch, to notice a store that lost everything.
	emu          sync.Mutex
	epoch        string
	restoring    atomic.Bool
	onReset      func(restored, lost int)
	onQuarantine func(id string)
	wg           sync.WaitGroup
	baseCtx      context.Context
	closed       bool
	onRun        func(id string, fresh bool)
}

type compiled struct {
	c       *Campaign
	set     *templates.Set
	def     []byte // the stored definition
	created time.Time
}

type runHandle struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
	run    *run
}

// EngineOption sets an optional knob.
type EngineOption func(*Engine)

// WithEngineClock injects the clock.
func WithEngineClock(now func() time.Time) EngineOption { return func(e *Engine) { e.now = now } }

// WithRunObserver is told whenever a campaign run starts here; fresh is
// true when the campaign had never run (its counts start from zero). The
// live view uses it so campaigns started by the intake stream or the
// scheduler show up even if they finish within a second.
func WithRunObserver(f func(id string, fresh bool)) EngineOption {
	return func(e *Engine) { e.onRun = f }
}

// WithStateResetObserver is told when the state store was found empty and
// this engine wrote back what it knew: restored campaigns, and lost = the
// campaigns it knew of that it could not restore (metrics, logs).
func WithStateResetObserver(f func(restored, lost int)) EngineOption {
	return func(e *Engine) { e.onReset = f }
}

// WithQuarantineObserver is told when a campaign is quarantined (crash_loop).
func WithQuarantineObserver(f func(id string)) EngineOption {
	return func(e *Engine) { e.onQuarantine = f }
}

// WithEngineLogger sets the logger.
func WithEngineLogger(l *slog.Logger) EngineOption { return func(e *Engine) { e.log = l } }

// NewEngine wires an engine. Call Start to resume campaigns a previous
// incarnation left running.
func NewEngine(store CampaignStore, progress ProgressStore, source MemberSource, dispatch Dispatcher, cfg EngineConfig, opts ...EngineOption) *Engine {
	e := &Engine{
		store: store, progress: progress, source: source, dispatch: dispatch,
		cfg: cfg.withDefaults(), now: time.Now, log: slog.Default(),
		runs: map[string]*runHandle{}, compiled: map[string]*compiled{}, finished: map[string]CampaignSnapshot{}, winners: map[string]bool{},
		baseCtx: context.Background(),
	}
	for _, o := range opts {
		o(e)
	}
	return e
}

// Errors of the engine's API; the admin API maps them to HTTP statuses.
var (
	// ErrUnknownSegment: the shard has no segment by that name.
	ErrUnknownSegment = errors.New("unknown segment")
	ErrNotRunning     = errors.New("campaign is not running")
	ErrEngineClose    = errors.New("engine is shutting down")
)

// Status is a campaign as the API shows it.
type CampaignStatus struct {
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Status Status `json:"status"`
	// Reason says why a campaign is failed ("crash_loop", ...).
	Reason   string                      `json:"reason,omitempty"`
	Segment  string                      `json:"segment"`
	Channels []string                    `json:"channels"`
	SendAt   *time.Time                  `json:"send_at,omitempty"`
	Created  time.Time                   `json:"created"`
	Updated  time.Time                   `json:"updated"`
	Counts   map[string]map[string]int64 `json:"counts"`
	// Engagement is per channel what came back after sending (tracking):
	// delivered, undelivered, opened, clicked, unsubscribed count messages
	// (each once per event); "<event>_total" counts every event.
	Engagement map[string]map[string]int64 `json:"engagement,omitempty"`
	// Variants splits Counts by A/B group (variant id, or "holdout"), then
	// channel and reason; absent for a campaign without an A/B test.
	Variants map[string]map[string]map[string]int64 `json:"variants,omitempty"`
	// Fallback counts, for a fallback campaign, the members who moved on
	// from a step, by step and cause ("push": {"no_address": 120}).
	Fallback map[string]map[string]int64 `json:"fallback,omitempty"`
	// Checkpoint is the user key below which every member is final (hex), "" before the first batch.
	Checkpoint string `json:"checkpoint,omitempty"`
	Failures   int64  `json:"retryable_failures"`
	Owner      string `json:"owner,omitempty"`
	// Ring is the fleet ring the campaign runs on, "<version>:<shards>".
	Ring string `json:"ring,omitempty"`
	// Winner is the winner phase of an A/B test that has one.
	Winner *WinnerStatus `json:"winner,omitempty"`
	// Shards is each part's progress in a fleet (absent for a single daemon):
	// a shard whose daemon never ran its part shows as "waiting".
	Shards []ShardProgress `json:"shards,omitempty"`
	// Waiting is, for a campaign with local_time or quiet_hours mode
	// "delay", the members whose time has not come yet (every shard).
	Waiting *Waiting `json:"waiting,omitempty"`
}

// addVariantCount adds an A/B group's count to the status's breakdown.
func (st *CampaignStatus) addVariantCount(cn Count) {
	if st.Variants == nil {
		st.Variants = map[string]map[string]map[string]int64{}
	}
	byCh := st.Variants[cn.Variant]
	if byCh == nil {
		byCh = map[string]map[string]int64{}
		st.Variants[cn.Variant] = byCh
	}
	m := byCh[cn.Channel]
	if m == nil {
		m = map[string]int64{}
		byCh[cn.Channel] = m
	}
	m[cn.Reason] += cn.N
}

// ShardProgress is one fleet part of a campaign.
type ShardProgress struct {
	Shard int `json:"shard"`
	// State: "waiting" (never started), "running", "stopped" (started, no live
	// lease: its daemon is down or the campaign is paused) or "completed".
	State      string `json:"state"`
	Owner      string `json:"owner,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"`
	Messages   int64  `json:"messages"` // counted so far, every outcome and reason
}

// Create validates and compiles a campaign and stores it. It is idempotent
// on the campaign id: the same body again returns the stored campaign with
// created=false; a different body under the same id is ErrConflict.
func (e *Engine) Create(ctx context.Context, body []byte) (CampaignStatus, bool, error) {
	c, err := DecodeCampaign(body)
	if err != nil {
		return CampaignStatus{}, false, err
	}
	if err := checkChannels(c.Channels, e.dispatch); err != nil {
		return CampaignStatus{}, false, err
	}
	set, err := c.CompileWithin(e.now, e.cfg.TemplateCeilings)
	if err != nil {
		return CampaignStatus{}, false, err
	}
	it, err := e.source.Members(c.Segment, 0, false)
	if errors.Is(err, ErrUnknownSegment) {
		return CampaignStatus{}, false, &FieldError{Field: "segment", Msg: fmt.Sprintf("no segment %q in the shard", c.Segment)}
	}
	if err != nil {
		return CampaignStatus{}, false, fmt.Errorf("check segment %q: %w", c.Segment, err)
	}
	_ = it.Close()
	if err := e.checkSample(c, set); err != nil {
		return CampaignStatus{}, false, err
	}
	def, err := json.Marshal(c)
	if err != nil {
		return CampaignStatus{}, false, fmt.Errorf("encode campaign: %w", err)
	}
	rec, created, err := e.store.Create(ctx, c.ID, def)
	if err != nil {
		return CampaignStatus{}, false, fmt.Errorf("store campaign %s: %w", c.ID, err)
	}
	e.mu.Lock()
	e.compiled[c.ID] = &compiled{c: c, set: set, def: rec.Definition, created: rec.Created}
	e.mu.Unlock()
	if created && (c.SendAt == nil || !c.SendAt.After(e.now())) {
		if err := e.start(ctx, c.ID, StatusScheduled); err != nil {
			return CampaignStatus{}, true, err
		}
	}
	st, err := e.Get(ctx, rec.ID)
	return st, created, err
}

// Get returns a campaign's status with its counts.
func (e *Engine) Get(ctx context.Context, id string) (CampaignStatus, error) {
	rec, err := e.store.Get(ctx, id)
	if err != nil {
		return CampaignStatus{}, err
	}
	return e.status(ctx, rec)
}

func (e *Engine) status(ctx context.Context, rec CampaignRecord) (CampaignStatus, error) {
	var c Campaign
	if err := json.Unmarshal(rec.Definition, &c); err != nil {
		return CampaignStatus{}, fmt.Errorf("decode stored campaign %s: %w", rec.ID, err)
	}
	st := CampaignStatus{
		ID: rec.ID, Name: c.Name, Status: rec.Status, Reason: rec.Reason, Segment: c.Segment, Channels: c.Channels,
		SendAt: c.SendAt, Created: rec.Created, Updated: rec.Updated, Counts: map[string]map[string]int64{},
	}
	parts, err := e.parts(ctx, rec.ID, e.ringShards(rec.Ring))
	if err != nil {
		return CampaignStatus{}, fmt.Errorf("read progress of %s: %w", rec.ID, err)
	}
	st.Ring = rec.Ring
	deferred := c.LocalTime != "" || (c.QuietHours != nil && c.QuietHours.Mode == QuietDelay)
	if deferred {
		st.Waiting = &Waiting{}
	}
	for k, p := range parts {
		if deferred {
			if p.Counts, err = e.planStatus(ctx, partID(rec.ID, k, len(parts)), p, st.Waiting); err != nil {
				return CampaignStatus{}, fmt.Errorf("read progress of %s: %w", rec.ID, err)
			}
			p.Checkpoint = Checkpoint{} // the part's checkpoint counts passes, not user keys
		}
		var n int64
		for _, cn := range p.Counts {
			if cn.Channel == FallbackCounts {
				st.addFallback(cn)
				continue
			}
			n += cn.N
			if cn.N == 0 {
				continue // a reason whose failures were all retried
			}
			m := st.Counts[cn.Channel]
			if m == nil {
				m = map[string]int64{}
				st.Counts[cn.Channel] = m
			}
			m[cn.Reason] += cn.N
			if cn.Variant != "" {
				st.addVariantCount(cn)
			}
		}
		st.Failures += p.Failures
		if len(parts) == 1 {
			if p.Checkpoint.Valid {
				st.Checkpoint = fmt.Sprintf("%016x", p.Checkpoint.Key)
			}
			st.Owner = p.Owner
			break
		}
		sp := ShardProgress{Shard: k, Owner: p.Owner, Messages: n}
		switch {
		case p.Completed:
			sp.State = "completed"
		case p.Owner != "":
			sp.State = "running"
		case n > 0 || p.Checkpoint.Valid:
			sp.State = "stopped"
		default:
			sp.State = "waiting"
		}
		if p.Checkpoint.Valid {
			sp.Checkpoint = fmt.Sprintf("%016x", p.Checkpoint.Key)
		}
		st.Shards = append(st.Shards, sp)
	}
	if el, ok := e.store.(EngagementLog); ok {
		counts, err := el.EngagementCounts(ctx, rec.ID)
		if err != nil {
			return CampaignStatus{}, err
		}
		for _, cn := range counts {
			if st.Engagement == nil {
				st.Engagement = map[string]map[string]int64{}
			}
			m := st.Engagement[cn.Channel]
			if m == nil {
				m = map[string]int64{}
				st.Engagement[cn.Channel] = m
			}
			m[cn.Reason] += cn.N
		}
	}
	if c.Winner != nil {
		if st.Winner, err = e.winnerStatus(ctx, &c, rec); err != nil {
			return CampaignStatus{}, fmt.Errorf("read the winner phase of %s: %w", rec.ID, err)
		}
	}
	return st, nil
}

// List pages through campaigns in id order.
func (e *Engine) List(ctx context.Context, after string, limit int) ([]CampaignStatus, error) {
	out := make([]CampaignStatus, 0, limit)
	for len(out) < limit {
		want := limit - len(out)
		recs, err := e.store.List(ctx, after, want)
		if err != nil {
			return nil, err
		}
		for _, rec := range recs {
			after = rec.ID
			if strings.HasPrefix(rec.ID, FlowPrefix) {
				continue // flows share the store; they are listed by the flow engine
			}
			st, err := e.status(ctx, rec)
			if err != nil {
				return nil, err
			}
			out = append(out, st)
		}
		if len(recs) < want {
			break
		}
	}
	return out, nil
}

// Pause stops a running campaign after its in-flight batches settle.
func (e *Engine) Pause(ctx context.Context, id string) (CampaignStatus, error) {
	rec, err := e.store.Get(ctx, id)
	if err != nil {
		return CampaignStatus{}, err
	}
	if _, err := e.store.Transition(ctx, id, rec.Status, StatusPaused); err != nil {
		return CampaignStatus{}, err
	}
	e.stop(id, errPaused)
	return e.Get(ctx, id)
}

// Resume continues a paused campaign from its checkpoint, or one that was
// quarantined for crash-looping (after the operator fixed the cause).
func (e *Engine) Resume(ctx context.Context, id string) (CampaignStatus, error) {
	from := StatusPaused
	if rec, err := e.store.Get(ctx, id); err == nil && rec.Status == StatusFailed && rec.Reason == ReasonCrashLoop {
		from = StatusFailed
	}
	if err := e.startWith(ctx, id, from, false, false); err != nil {
		return CampaignStatus{}, err
	}
	return e.Get(ctx, id)
}

// part is the progress id of this daemon's part of campaign id: the id
// itself for a single daemon, "<id>/s<shard>" in a fleet (campaign ids never
// contain '/').
func (e *Engine) part(id string) string { return partID(id, e.cfg.Shard, e.cfg.Shards) }

// ring is this daemon's ring as campaigns pin it: "<version>:<shards>".
func (e *Engine) ring() string {
	return strconv.FormatUint(e.cfg.RingVersion, 10) + ":" + strconv.Itoa(max(e.cfg.Shards, 1))
}

// ringShards is the shard count of a pinned ring ("" or malformed: this daemon's).
func (e *Engine) ringShards(ring string) int {
	if _, n, ok := strings.Cut(ring, ":"); ok {
		if k, err := strconv.Atoi(n); err == nil && k >= 1 {
			return k
		}
	}
	return max(e.cfg.Shards, 1)
}

// RingPart is this daemon's shard of one ring and the members of it.
type RingPart struct {
	Version       uint64
	Shard, Shards int
	Source        MemberSource
}

// ring is the pinned form of p.
func (p RingPart) ring() string {
	return strconv.FormatUint(p.Version, 10) + ":" + strconv.Itoa(max(p.Shards, 1))
}

// ringPart is this daemon's part of pinned ring ("" is this daemon's own
// ring), or false if it holds no shard of that ring.
func (e *Engine) ringPart(ring string) (RingPart, bool) {
	own := RingPart{Version: e.cfg.RingVersion, Shard: e.cfg.Shard, Shards: max(e.cfg.Shards, 1), Source: e.source}
	if ring == "" || ring == own.ring() {
		return own, true
	}
	for _, p := range e.cfg.Retained {
		if p.ring() == ring {
			return p, true
		}
	}
	return RingPart{}, false
}

// ErrRingMismatch: the campaign runs on another ring version than this
// daemon's shard file (the fleet was resharded since it started).
var ErrRingMismatch = errors.New("campaign runs on another ring")

func partID(id string, shard, shards int) string {
	if shards <= 1 {
		return id
	}
	return id + "/s" + strconv.Itoa(shard)
}

// ReasonCrashLoop is the reason of a campaign quarantined because its
// daemon kept dying while running it.
const ReasonCrashLoop = "crash_loop"

// Cancel stops a campaign for good.
func (e *Engine) Cancel(ctx context.Context, id string) (CampaignStatus, error) {
	rec, err := e.store.Get(ctx, id)
	if err != nil {
		return CampaignStatus{}, err
	}
	if _, err := e.store.Transition(ctx, id, rec.Status, StatusCancelled); err != nil {
		return CampaignStatus{}, err
	}
	e.stop(id, errCancelled)
	return e.Get(ctx, id)
}

var (
	errPaused    = errors.New("paused")
	errCancelled = errors.New("cancelled")
	errShutdown  = errors.New("daemon shutting down")
)

func (e *Engine) stop(id string, cause error) {
	e.mu.Lock()
	h := e.runs[id]
	e.mu.Unlock()
	if h != nil {
		h.cancel(cause)
		<-h.done
	}
}

// load returns the compiled campaign, compiling the stored definition after a restart.
func (e *Engine) load(ctx context.Context, id string) (*compiled, error) {
	e.mu.Lock()
	cc := e.compiled[id]
	e.mu.Unlock()
	if cc != nil {
		return cc, nil
	}
	rec, err := e.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	c, err := DecodeCampaign(rec.Definition)
	if err != nil {
		return nil, fmt.Errorf("decode stored campaign %s: %w", id, err)
	}
	set, err := c.CompileWithin(e.now, e.cfg.TemplateCeilings)
	if err != nil {
		return nil, err
	}
	cc = &compiled{c: c, set: set, def: rec.Definition, created: rec.Created}
	e.mu.Lock()
	e.compiled[id] = cc
	e.mu.Unlock()
	return cc, nil
}

// start moves a campaign from `from` to running and runs it in the background.
func (e *Engine) start(ctx context.Context, id string, from Status) error {
	return e.startWith(ctx, id, from, false, true)
}

// startWith starts a run: a delivery pass, or (retry) a pass over the
// campaign's transient failures. auto: the engine starts it by itself (a
// restart, the schedule), so a crash-looping campaign is quarantined; an
// operator's resume or retry is not.
func (e *Engine) startWith(ctx context.Context, id string, from Status, retry, auto bool) error {
	cc, err := e.load(ctx, id)
	if err != nil {
		return err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrEngineClose
	}
	if h, busy := e.runs[id]; busy {
		e.mu.Unlock()
		if from == StatusRunning {
			return nil // already running here
		}
		// The previous run recorded its final status and is winding down:
		// wait for it so two runs never overlap.
		select {
		case <-h.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		return e.startWith(ctx, id, from, retry, auto)
	}
	e.mu.Unlock()
	if from != StatusRunning {
		if _, err := e.store.Transition(ctx, id, from, StatusRunning); err != nil {
			return err
		}
	}
	ring, err := e.store.PinRing(ctx, id, e.ring())
	if err != nil {
		return fmt.Errorf("pin the ring of campaign %s: %w", id, err)
	}
	rp, ok := e.ringPart(ring)
	if !ok {
		return fmt.Errorf("start campaign %s pinned to ring %s on a daemon of ring %s: %w", id, ring, e.ring(), ErrRingMismatch)
	}
	part := partID(id, rp.Shard, rp.Shards)
	res, err := e.progress.Acquire(ctx, part, e.cfg.Owner, e.cfg.LeaseTTL)
	if err != nil {
		return fmt.Errorf("acquire campaign %s: %w", id, err)
	}
	if auto && e.cfg.CrashLoopLimit > 0 && res.Crashes >= e.cfg.CrashLoopLimit {
		return e.quarantine(ctx, id, res)
	}
	// The ledger mirrors the counts, to write them back to a store that lost them.
	prog, err := e.progress.Progress(ctx, part)
	if err != nil {
		_ = e.progress.Release(context.WithoutCancel(ctx), res.Lease)
		return fmt.Errorf("read progress of %s: %w", id, err)
	}
	rctx, cancel := context.WithCancelCause(e.baseCtx)
	h := &runHandle{cancel: cancel, done: make(chan struct{})}
	e.mu.Lock()
	e.runs[id] = h
	delete(e.waiting, id)
	delete(e.waitSnaps, id)
	e.mu.Unlock()
	if cc.c.Throttle > 0 {
		e.dispatch.Throttle(id, cc.c.Throttle)
	}
	r := newRun(cc.c, cc.set, e, rp, res, prog.Counts, e.now())
	r.auto, r.crashes = auto, res.Crashes
	e.mu.Lock()
	h.run = r
	e.mu.Unlock()
	if e.onRun != nil {
		e.onRun(id, from == StatusScheduled)
	}
	e.wg.Add(1)
	go e.runLoop(rctx, r, res, h, retry)
	return nil
}

func (e *Engine) runLoop(ctx context.Context, r *run, res Resume, h *runHandle, retry bool) {
	defer e.wg.Done()
	defer close(h.done)
	defer func() {
		e.mu.Lock()
		delete(e.runs, r.c.ID)
		e.mu.Unlock()
	}()
	renewCtx, stopRenew := context.WithCancel(ctx)
	defer stopRenew()
	go e.renew(renewCtx, r.lease, h)

	var err error
	switch {
	case retry:
		err = r.retryFailed(ctx)
	case r.c.deferred():
		err = e.executePasses(ctx, r, res, h)
	default:
		err = r.execute(ctx, res)
	}
	stopRenew()
	bg := context.WithoutCancel(ctx)
	switch {
	case err == nil:
		// Remembered first: a store that loses the part right after Complete
		// must not find this engine without a record of it.
		e.rememberFinished(r)
		if cerr := e.progress.Complete(bg, r.lease); cerr != nil {
			r.log.Error("mark campaign part complete; the next run finds nothing left to send", "error", cerr)
			break
		}
		e.completeIfAllParts(bg, r.c.ID, r.log)
	case errors.Is(err, errWaiting), errors.Is(err, errQuarantined):
		// The lease is released below; Tick starts the next pass when due
		// (a quarantined campaign is failed already).
	case errors.Is(err, errStopped) || ctx.Err() != nil:
		r.log.Info("campaign run stopped", "cause", context.Cause(ctx))
	case errors.Is(err, ErrUnknownSegment), errors.Is(err, ErrChannelNotConfigured):
		r.log.Error("campaign failed", "error", err)
		reason := "unknown_segment"
		if errors.Is(err, ErrChannelNotConfigured) {
			reason = "channel_not_configured"
		}
		if _, terr := e.store.TransitionBecause(bg, r.c.ID, StatusRunning, StatusFailed, reason); terr != nil {
			r.log.Error("mark campaign failed", "error", terr)
		}
	default:
		// Infrastructure (Redis down, a lost lease): the campaign stays
		// running and Tick resumes it from its checkpoint once it can.
		r.log.Error("campaign run interrupted; it resumes from its checkpoint", "error", err)
	}
	if err != nil {
		if rerr := e.progress.Release(bg, r.lease); rerr != nil && !errors.Is(rerr, ErrLeaseLost) {
			r.log.Warn("release campaign lease", "error", rerr)
		}
	}
	if r.c.Throttle > 0 {
		e.dispatch.Throttle(r.c.ID, 0)
	}
}

// completeIfAllParts marks the campaign completed once every part of the
// ring has completed. Each daemon checks after completing its own part, so
// the last one to finish sees them all; Tick checks again after a crash in
// between.
func (e *Engine) completeIfAllParts(ctx context.Context, id string, log *slog.Logger) {
	rec, err := e.store.Get(ctx, id)
	if err != nil {
		log.Warn("read the campaign record", "error", err)
		return
	}
	parts, err := e.parts(ctx, id, e.ringShards(rec.Ring))
	if err != nil {
		log.Warn("read the progress of the campaign's parts", "error", err)
		return
	}
	for _, p := range parts {
		if !p.Completed {
			log.Info("campaign part completed; waiting for the other shards", "shard", e.cfg.Shard, "shards", e.cfg.Shards)
			return
		}
	}
	if _, err := e.store.Transition(ctx, id, StatusRunning, StatusCompleted); err != nil {
		if !errors.Is(err, ErrStatusChanged) {
			log.Error("mark campaign completed", "error", err)
		}
		return
	}
	e.forgetFinished(id)
	log.Info("campaign completed")
}

// rememberFinished keeps what a completed part's run knows while the
// campaign waits for other shards.
func (e *Engine) rememberFinished(r *run) {
	if r.lease.Campaign == r.c.ID {
		return // one part: the campaign completes with it
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	cc := e.compiled[r.c.ID]
	if cc == nil {
		return
	}
	snap := r.snapshot(cc)
	snap.Record.Ring = r.ring
	snap.Open, snap.Completed = nil, true
	e.finished[r.c.ID] = snap
}

func (e *Engine) forgetFinished(id string) {
	e.mu.Lock()
	delete(e.finished, id)
	e.mu.Unlock()
}

// refinish writes back a part this engine completed whose progress the
// store no longer has. It reports whether the part was one of them.
func (e *Engine) refinish(ctx context.Context, id string, p Progress) bool {
	e.mu.Lock()
	snap, ok := e.finished[id]
	e.mu.Unlock()
	if !ok || p.Completed || p.Retry || p.Owner != "" {
		return false
	}
	rs, can := e.progress.(StateRestorer)
	if !can {
		return false
	}
	log := e.log.With("campaign", id)
	// Most likely the epoch check writes it back with everything else; if
	// the store lost only this part's slot, write it back here.
	if reset, err := e.CheckState(ctx); err == nil && reset {
		return true
	}
	log.Error("this daemon completed its part but the store no longer has it: writing it back as completed instead of sending again")
	if _, err := rs.Restore(ctx, snap, 0); err != nil {
		log.Error("write back completed part; it is not run again while this daemon lives", "error", err)
	}
	return true
}

// parts reads the progress of every part of a campaign on a ring of n shards.
func (e *Engine) parts(ctx context.Context, id string, n int) ([]Progress, error) {
	out := make([]Progress, n)
	for k := range n {
		p, err := e.progress.Progress(ctx, partID(id, k, n))
		if err != nil {
			return nil, err
		}
		out[k] = p
	}
	return out, nil
}

// renew keeps the campaign lease alive; losing it stops the run at once so
// two daemons never advance one campaign.
func (e *Engine) renew(ctx context.Context, lease Lease, h *runHandle) {
	t := time.NewTicker(e.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := e.progress.Renew(ctx, lease, e.cfg.LeaseTTL); err != nil {
				if errors.Is(err, ErrLeaseLost) && e.stateLost(ctx) {
					continue // the store lost everything; our lease was written back
				}
				if errors.Is(err, ErrLeaseLost) {
					h.cancel(fmt.Errorf("campaign lease lost: %w", err))
					return
				}
				e.log.Warn("renew campaign lease", "campaign", lease.Campaign, "error", err)
			}
		}
	}
}

// Start resumes campaigns left running by an earlier incarnation and starts
// scheduled ones that are due. Call Tick periodically for the schedule.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	e.baseCtx = context.WithoutCancel(ctx)
	e.mu.Unlock()
	return e.Tick(ctx)
}

// Tick starts every campaign that should be running and is not: running ones
// (after a restart) and scheduled ones whose send_at has come.
func (e *Engine) Tick(ctx context.Context) error {
	var errs []error
	after := ""
	for {
		recs, err := e.store.List(ctx, after, 200)
		if err != nil {
			return fmt.Errorf("list campaigns: %w", err)
		}
		for _, rec := range recs {
			after = rec.ID
			if strings.HasPrefix(rec.ID, FlowPrefix) {
				continue
			}
			e.mu.Lock()
			_, busy := e.runs[rec.ID]
			if rec.Status == StatusCompleted || rec.Status == StatusCancelled || rec.Status == StatusFailed {
				delete(e.finished, rec.ID)
				delete(e.waiting, rec.ID)
				delete(e.waitSnaps, rec.ID)
			}
			e.mu.Unlock()
			if busy && rec.Status != StatusRunning {
				// Paused, cancelled or failed through another daemon of the fleet.
				e.stop(rec.ID, fmt.Errorf("campaign is %s", rec.Status))
				continue
			}
			switch rec.Status {
			case StatusCompleted:
				if err := e.sendWinner(ctx, rec); err != nil {
					errs = append(errs, err)
				}
			case StatusRunning:
				e.mu.Lock()
				due, waits := e.waiting[rec.ID]
				e.mu.Unlock()
				if busy || (waits && e.now().Before(due)) {
					continue
				}
				rp, ok := e.ringPart(rec.Ring)
				if !ok {
					continue // pinned to a ring this daemon holds no shard of
				}
				p, err := e.progress.Progress(ctx, partID(rec.ID, rp.Shard, rp.Shards))
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if p.Completed {
					// Our part is done; the campaign waits for the others (or a
					// daemon died between completing the last part and the record).
					e.completeIfAllParts(ctx, rec.ID, e.log.With("campaign", rec.ID))
					continue
				}
				if e.refinish(ctx, rec.ID, p) {
					continue
				}
				// A part reopened by "retry failed" (through any daemon) runs its
				// retry pass; otherwise the delivery run resumes.
				if err := e.startWith(ctx, rec.ID, StatusRunning, p.Retry, true); err != nil && !errors.Is(err, ErrHeld) && !errors.Is(err, ErrRingMismatch) {
					errs = append(errs, err)
				}
			case StatusScheduled:
				var c Campaign
				if json.Unmarshal(rec.Definition, &c) == nil && (c.SendAt == nil || !c.SendAt.After(e.now())) {
					if err := e.start(ctx, rec.ID, StatusScheduled); err != nil && !errors.Is(err, ErrStatusChanged) {
						errs = append(errs, err)
					}
				}
			}
		}
		if len(recs) < 200 {
			break
		}
	}
	return errors.Join(errs...)
}

// Running lists the campaigns this engine is running now.
func (e *Engine) Running() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := make([]string, 0, len(e.runs))
	for id := range e.runs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Wait blocks until the campaign's run (if any) ends or ctx is done.
func (e *Engine) Wait(ctx context.Context, id string) error {
	e.mu.Lock()
	h := e.runs[id]
	e.mu.Unlock()
	if h == nil {
		return nil
	}
	select {
	case <-h.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops every run (they stay "running" and resume on the next start)
// and waits for them to record their progress, or for ctx.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	hs := make([]*runHandle, 0, len(e.runs))
	for _, h := range e.runs {
		hs = append(hs, h)
	}
	e.mu.Unlock()
	for _, h := range hs {
		h.cancel(errShutdown)
	}
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop campaign runs: %w", ctx.Err())
	}
}

// quarantine fails a campaign whose daemon died res.Crashes times in a row
// while running it: resuming it again would only kill the next daemon.
func (e *Engine) quarantine(ctx context.Context, id string, res Resume) error {
	bg := context.WithoutCancel(ctx)
	_, terr := e.store.TransitionBecause(bg, id, StatusRunning, StatusFailed, ReasonCrashLoop)
	if rerr := e.progress.Release(bg, res.Lease); rerr != nil && terr == nil {
		terr = rerr
	}
	e.log.Error("campaign quarantined: its daemon died while running it, again and again; fix the cause, then resume it",
		"campaign", id, "crashes", res.Crashes, "limit", e.cfg.CrashLoopLimit)
	if e.onQuarantine != nil {
		e.onQuarantine(id)
	}
	if terr != nil {
		return fmt.Errorf("quarantine campaign %s: %w", id, terr)
	}
	return nil
}

// checkChannels rejects channels this daemon cannot send on.
func checkChannels(chs []string, d Dispatcher) error {
	for i, ch := range chs {
		if !d.Has(ch) {
			return &FieldError{Field: fmt.Sprintf("channels[%d]", i), Msg: fmt.Sprintf("channel %q is not configured on this daemon", ch)}
		}
	}
	return nil
}
