package campaigns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/templates"
)

// Reasons specific to triggers.
const (
	ReasonUnknownUser      = "unknown_user"
	ReasonDuplicate        = "duplicate"
	ReasonDedupUnavailable = "dedup_unavailable"
)

// FlowConfig tunes trigger processing; zero fields take defaults.
type FlowConfig struct {
	// Workers process triggers in parallel (default 2): one waits on the
	// dedup store while another renders.
	Workers int
	// QueueSize bounds triggers accepted but not yet processed (default 20,000);
	// beyond it Fire answers ErrOverloaded.
	QueueSize int
	// MaxBatch is the most triggers processed (and claimed in one dedup round
	// trip) together (default 256). Batches form only under load: a lone
	// trigger is processed at once.
	MaxBatch int
	// TemplateCeilings are the daemon's template limits (see EngineConfig).
	TemplateCeilings templates.Limits
	// Router, in a fleet, forwards triggers for other shards' users to their
	// daemons; nil: every user is looked up here.
	Router TriggerRouter
	// Lease is how long a dedup claim is held before it counts as in doubt
	// (default 5m), and how long a claimed delayed trigger stays claimed
	// before it is handed out again.
	Lease time.Duration
	// DelayPoll is how often due delayed triggers are collected (default
	// 100ms): the most a delayed message is late by when the queue is idle.
	DelayPoll time.Duration
	// ClaimRetry is the first wait before a failed dedup claim is tried
	// again (default 100ms, doubling to 5s); see claimHeld.
	ClaimRetry time.Duration
}

func (c FlowConfig) withDefaults() FlowConfig {
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 20_000
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 256
	}
	if c.Lease <= 0 {
		c.Lease = 5 * time.Minute
	}
	if c.DelayPoll <= 0 {
		c.DelayPoll = 100 * time.Millisecond
	}
	if c.ClaimRetry <= 0 {
		c.ClaimRetry = 100 * time.Millisecond
	}
	return c
}

// ErrOverloaded: the trigger queue is full; the caller should retry later.
var ErrOverloaded = errors.New("trigger queue full")

// ErrUnknownFlow: a trigger named a flow that does not exist or is deleted.
var ErrUnknownFlow = errors.New("unknown flow")

// FlowEngine runs flows: it keeps their definitions, routes triggers to
// them, and sends each trigger's messages through the same stages as a
// campaign, on the high-priority lane, with per-message dedup.
type FlowEngine struct {
	store    CampaignStore
	dedup    DedupLog
	delays   DelayQueue
	source   MemberSource
	dispatch Dispatcher
	cfg      FlowConfig
	ecfg     EngineConfig
	caps     CapStore
	capRules []CapRule
	now      func() time.Time
	log      *slog.Logger

	// Claim attempts (AttemptDedup) are named by a random prefix per
	// engine and a counter: unique without a system call per batch.
	attemptPrefix string
	attempts      atomic.Uint64

	mu        sync.RWMutex
	flows     map[string]*activeFlow
	bySegment map[string][]*activeFlow
	byEvent   map[string][]*activeFlow

	queue   chan *job
	wg      sync.WaitGroup
	poller  sync.WaitGroup
	stop    chan struct{}
	stopped bool
}

type activeFlow struct {
	f      *Flow
	run    *run
	status Status
	window time.Duration

	mu     sync.Mutex
	counts map[[2]string]int64
	fired  int64
}

func (af *activeFlow) count(ch, reason string, n int64) {
	af.mu.Lock()
	af.counts[[2]string{ch, reason}] += n
	af.mu.Unlock()
}

type job struct {
	flow    *activeFlow
	trig    Trigger
	arrived time.Time
	delayID string // the DelayQueue item to forget once processed
	// gate, when set, is the rest of the request that brought the trigger:
	// its forwarded and delayed triggers, being stored while this one is
	// claimed and rendered. Nothing of it is sent unless that succeeds.
	gate *fireGate
}

// fireGate is the outcome of storing a request's forwarded and delayed
// triggers. Fire queues the request's immediate triggers before storing
// the rest, so that their dedup claims and rendering overlap that round
// trip (a local trigger used to wait for it first), and gates their
// dispatch on it: when storing fails, Fire answers an error and none of the
// request is sent, as before, so the caller may retry it whole.
type fireGate struct {
	done chan struct{}
	err  error
}

func (g *fireGate) finish(err error) {
	g.err = err
	close(g.done)
}

// delayedTrigger is a DelayQueue item's payload.
type delayedTrigger struct {
	Flow    string    `json:"flow"`
	Trigger Trigger   `json:"trigger"`
	Arrived time.Time `json:"arrived"`
}

// NewFlowEngine wires a flow engine; call Load, then Start.
func NewFlowEngine(store CampaignStore, dedup DedupLog, delays DelayQueue, source MemberSource, dispatch Dispatcher, cfg FlowConfig, opts ...EngineOption) *FlowEngine {
	// Reuse the engine options (clock, logger) through a throwaway Engine.
	e := &Engine{now: time.Now, log: slog.Default()}
	for _, o := range opts {
		o(e)
	}
	cfg = cfg.withDefaults()
	var pre [6]byte
	_, _ = rand.Read(pre[:]) // never fails (crypto/rand)
	return &FlowEngine{
		store: store, dedup: dedup, delays: delays, source: source, dispatch: dispatch, cfg: cfg,
		ecfg: EngineConfig{BatchSize: cfg.MaxBatch, MaxOpenBatches: 1}.withDefaults(),
		caps: e.caps, capRules: e.capRules, attemptPrefix: hex.EncodeToString(pre[:]) + ".",
		now: e.now, log: e.log.With("component", "flows"),
		flows: map[string]*activeFlow{}, bySegment: map[string][]*activeFlow{}, byEvent: map[string][]*activeFlow{},
		queue: make(chan *job, cfg.QueueSize), stop: make(chan struct{}),
	}
}

// FlowStatus is a flow as the API shows it.
type FlowStatus struct {
	ID       string                      `json:"id"`
	Name     string                      `json:"name,omitempty"`
	Status   Status                      `json:"status"`
	Trigger  FlowTrigger                 `json:"trigger"`
	Channels []string                    `json:"channels"`
	Fired    int64                       `json:"triggers"`
	Counts   map[string]map[string]int64 `json:"counts"`
}

func (af *activeFlow) snapshot() FlowStatus {
	af.mu.Lock()
	defer af.mu.Unlock()
	st := FlowStatus{ID: af.f.ID, Name: af.f.Name, Status: af.status, Trigger: af.f.Trigger, Channels: af.f.Channels, Fired: af.fired, Counts: map[string]map[string]int64{}}
	for k, n := range af.counts {
		m := st.Counts[k[0]]
		if m == nil {
			m = map[string]int64{}
			st.Counts[k[0]] = m
		}
		m[k[1]] = n
	}
	return st
}

// eachFlowRecord calls fn for every stored flow record, a page at a time.
func (fe *FlowEngine) eachFlowRecord(ctx context.Context, fn func(rec CampaignRecord)) error {
	after := FlowPrefix
	for {
		recs, err := fe.store.List(ctx, after, 200)
		if err != nil {
			return fmt.Errorf("list flows: %w", err)
		}
		for _, rec := range recs {
			after = rec.ID
			if !strings.HasPrefix(rec.ID, FlowPrefix) {
				return nil
			}
			fn(rec)
		}
		if len(recs) < 200 {
			return nil
		}
	}
}

// Load reads the stored flows (after a restart).
func (fe *FlowEngine) Load(ctx context.Context) error {
	return fe.eachFlowRecord(ctx, func(rec CampaignRecord) {
		if rec.Status == StatusCancelled {
			return
		}
		f, err := DecodeFlow(rec.Definition)
		if err != nil {
			fe.log.Error("stored flow no longer valid; skipped", "flow", rec.ID, "error", err)
			return
		}
		if _, err := fe.activate(f, rec.Status); err != nil {
			fe.log.Error("stored flow does not compile; skipped", "flow", rec.ID, "error", err)
		}
	})
}

// RecreateRecord creates a record in store and walks it to status along the
// lifecycle (scheduled → running → paused or cancelled), for a record that
// moves between stores or comes back to one that lost it. created is false
// when the store has the id already: it is left alone.
func RecreateRecord(ctx context.Context, store CampaignStore, id string, def []byte, status Status) (created bool, err error) {
	if _, created, err = store.Create(ctx, id, def); err != nil || !created {
		return false, err
	}
	if status == StatusScheduled {
		return true, nil
	}
	if _, err := store.Transition(ctx, id, StatusScheduled, StatusRunning); err != nil {
		return true, err
	}
	if status != StatusRunning {
		if _, err := store.Transition(ctx, id, StatusRunning, status); err != nil {
			return true, err
		}
	}
	return true, nil
}

// RestoreFlows writes every flow this engine holds back into its store,
// for a state store that lost its data (the engine's reset observer calls
// it): a flow the store still has is left alone. It returns how many it
// wrote.
func (fe *FlowEngine) RestoreFlows(ctx context.Context) (int, error) {
	fe.mu.RLock()
	afs := make([]*activeFlow, 0, len(fe.flows))
	for _, af := range fe.flows {
		afs = append(afs, af)
	}
	fe.mu.RUnlock()
	n := 0
	var errs []error
	for _, af := range afs {
		def, err := json.Marshal(af.f)
		if err != nil {
			errs = append(errs, fmt.Errorf("encode flow %s: %w", af.f.ID, err))
			continue
		}
		af.mu.Lock()
		status := af.status
		af.mu.Unlock()
		created, err := RecreateRecord(ctx, fe.store, FlowPrefix+af.f.ID, def, status)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("restore flow %s: %w", af.f.ID, err))
		case created:
			n++
		}
	}
	return n, errors.Join(errs...)
}

// Sync picks up flows created, paused, resumed or deleted through another
// daemon of the fleet: each daemon calls it periodically, so a flow defined
// anywhere reaches every shard without a restart.
func (fe *FlowEngine) Sync(ctx context.Context) error {
	return fe.eachFlowRecord(ctx, func(rec CampaignRecord) {
		id := strings.TrimPrefix(rec.ID, FlowPrefix)
		fe.mu.RLock()
		af := fe.flows[id]
		fe.mu.RUnlock()
		switch {
		case af == nil && rec.Status != StatusCancelled:
			f, err := DecodeFlow(rec.Definition)
			if err != nil {
				return // logged by Load at start; not worth a line a second
			}
			if _, err := fe.activate(f, rec.Status); err != nil {
				return
			}
			fe.log.Info("flow defined through another daemon is active here", "flow", id, "status", rec.Status)
		case af != nil && rec.Status == StatusCancelled:
			fe.mu.Lock()
			delete(fe.flows, id)
			fe.unindex(af)
			fe.mu.Unlock()
		case af != nil:
			af.mu.Lock()
			af.status = rec.Status
			af.mu.Unlock()
		}
	})
}

func (fe *FlowEngine) activate(f *Flow, status Status) (*activeFlow, error) {
	c := f.campaign()
	set, err := c.CompileWithin(fe.now, fe.cfg.TemplateCeilings)
	if err != nil {
		return nil, err
	}
	r := newRunFor(c, set, fe.now, fe.log, fe.dispatch, fe.source, fe.ecfg)
	r.caps, r.capRules = fe.caps, c.FrequencyCap.rules(fe.capRules)
	af := &activeFlow{f: f, run: r, status: status, window: f.ReEntryWindow(), counts: map[[2]string]int64{}}
	fe.mu.Lock()
	defer fe.mu.Unlock()
	if old := fe.flows[f.ID]; old != nil {
		af.counts, af.fired = old.counts, old.fired
		fe.unindex(old)
	}
	fe.flows[f.ID] = af
	if f.Trigger.Segment != "" {
		fe.bySegment[f.Trigger.Segment] = append(fe.bySegment[f.Trigger.Segment], af)
	} else {
		fe.byEvent[f.Trigger.Event] = append(fe.byEvent[f.Trigger.Event], af)
	}
	return af, nil
}

func (fe *FlowEngine) unindex(af *activeFlow) {
	drop := func(m map[string][]*activeFlow, k string) {
		list := m[k][:0]
		for _, x := range m[k] {
			if x != af {
				list = append(list, x)
			}
		}
		m[k] = list
	}
	drop(fe.bySegment, af.f.Trigger.Segment)
	drop(fe.byEvent, af.f.Trigger.Event)
}

// CreateFlow stores and activates a flow; idempotent on its id.
func (fe *FlowEngine) CreateFlow(ctx context.Context, body []byte) (FlowStatus, bool, error) {
	f, err := DecodeFlow(body)
	if err != nil {
		return FlowStatus{}, false, err
	}
	if err := checkChannels(f.Channels, fe.dispatch); err != nil {
		return FlowStatus{}, false, err
	}
	if _, err := f.campaign().Compile(fe.now); err != nil {
		return FlowStatus{}, false, err
	}
	def, err := json.Marshal(f)
	if err != nil {
		return FlowStatus{}, false, fmt.Errorf("encode flow: %w", err)
	}
	rec, created, err := fe.store.Create(ctx, FlowPrefix+f.ID, def)
	if err != nil {
		return FlowStatus{}, false, fmt.Errorf("store flow %s: %w", f.ID, err)
	}
	if created {
		if rec, err = fe.store.Transition(ctx, rec.ID, StatusScheduled, StatusRunning); err != nil {
			return FlowStatus{}, false, err
		}
	}
	fe.mu.RLock()
	af := fe.flows[f.ID]
	fe.mu.RUnlock()
	if af == nil {
		if af, err = fe.activate(f, rec.Status); err != nil {
			return FlowStatus{}, false, err
		}
	}
	return af.snapshot(), created, nil
}

// GetFlow returns a flow's status and counts.
func (fe *FlowEngine) GetFlow(_ context.Context, id string) (FlowStatus, error) {
	fe.mu.RLock()
	af := fe.flows[id]
	fe.mu.RUnlock()
	if af == nil {
		return FlowStatus{}, ErrNotFound
	}
	return af.snapshot(), nil
}

// ListFlows returns every flow, by id.
func (fe *FlowEngine) ListFlows(context.Context) []FlowStatus {
	fe.mu.RLock()
	out := make([]FlowStatus, 0, len(fe.flows))
	for _, af := range fe.flows {
		out = append(out, af.snapshot())
	}
	fe.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// SetFlowStatus pauses (paused), resumes (running) or deletes (cancelled) a flow.
func (fe *FlowEngine) SetFlowStatus(ctx context.Context, id string, to Status) (FlowStatus, error) {
	fe.mu.RLock()
	af := fe.flows[id]
	fe.mu.RUnlock()
	if af == nil {
		return FlowStatus{}, ErrNotFound
	}
	af.mu.Lock()
	from := af.status
	af.mu.Unlock()
	if from == to {
		return af.snapshot(), nil
	}
	if _, err := fe.store.Transition(ctx, FlowPrefix+id, from, to); err != nil {
		return FlowStatus{}, err
	}
	af.mu.Lock()
	af.status = to
	af.mu.Unlock()
	if to == StatusCancelled {
		fe.mu.Lock()
		delete(fe.flows, id)
		fe.unindex(af)
		fe.mu.Unlock()
	}
	return af.snapshot(), nil
}

// TriggerResult is the answer for one trigger of a request.
type TriggerResult struct {
	// Flows are the flows the trigger was queued for.
	Flows []string `json:"flows,omitempty"`
	// Status is "accepted", "forwarded" (handed durably to the daemon of
	// the user's shard), "unknown_user", "no_flow", "unknown_flow" or "overloaded".
	Status string `json:"status"`
	// Shard is the user's shard, for a forwarded trigger.
	Shard *int `json:"shard,omitempty"`
}

// TriggerRouter places users in a fleet: a trigger for a user of another
// shard is forwarded to that shard's daemon instead of being looked up here.
type TriggerRouter interface {
	// Owner is the shard that owns userID and whether it is this daemon's.
	Owner(userID string) (shard int, mine bool)
	// Forward hands each shard's triggers durably to its daemon (a
	// per-shard stream), all shards in one round trip: a local trigger of
	// the same request is claimed and rendered meanwhile, and sent only if
	// it succeeds. On error some shards may have theirs.
	Forward(ctx context.Context, byShard map[int]Forwarded) error
}

// Fire routes triggers to flows and queues them; it never blocks on
// delivery. The user is looked up at once, so an unknown one is answered
// (and counted) here. Delayed triggers (DelayQueue) and other shards'
// (Router) are stored before anything of the request is sent: if that
// fails, Fire returns the error and nothing of the request was taken, so
// the caller may retry it whole. Immediate triggers are claimed and
// rendered meanwhile (fireGate).
func (fe *FlowEngine) Fire(ctx context.Context, triggers []Trigger) ([]TriggerResult, error) {
	return fe.fire(ctx, triggers, fe.cfg.Router, fe.now())
}

// FireForwarded takes triggers another daemon of the fleet forwarded here:
// they are looked up here and never forwarded again (a daemon whose ring is
// newer or older than the sender's must not bounce them back).
// The arrival time is the first daemon's; one in the future (clocks of two
// hosts disagree) or missing counts as now.
func (fe *FlowEngine) FireForwarded(ctx context.Context, fwd Forwarded) ([]TriggerResult, error) {
	arrived, now := fwd.Arrived, fe.now()
	if arrived.IsZero() || arrived.After(now) {
		arrived = now
	}
	return fe.fire(ctx, fwd.Triggers, nil, arrived)
}

func (fe *FlowEngine) fire(ctx context.Context, triggers []Trigger, router TriggerRouter, arrived time.Time) ([]TriggerResult, error) {
	pin, err := fe.source.Pin()
	if err != nil {
		return nil, fmt.Errorf("pin shard generation: %w", err)
	}
	defer pin.Close()
	out := make([]TriggerResult, len(triggers))
	var forward map[int][]Trigger // made on the first trigger for another shard
	var (
		m       Member
		now     []*job // queued once the delayed ones are stored
		nowIdx  []int  // out position of each
		delayed []Delayed
	)
	for i := range triggers {
		t := &triggers[i]
		flows := fe.route(t)
		if len(flows) == 0 {
			out[i].Status = "no_flow"
			if t.Flow != "" {
				out[i].Status = "unknown_flow"
			}
			continue
		}
		if router != nil {
			if shard, mine := router.Owner(t.UserID); !mine {
				if forward == nil {
					forward = map[int][]Trigger{}
				}
				forward[shard] = append(forward[shard], *t)
				out[i].Status, out[i].Shard = "forwarded", &shard
				continue
			}
		}
		ok, err := pin.LookupID(t.UserID, &m)
		if err != nil {
			return nil, fmt.Errorf("look up user: %w", err)
		}
		for _, af := range flows {
			af.mu.Lock()
			af.fired++
			af.mu.Unlock()
			if !ok {
				for _, ch := range af.f.Channels {
					af.count(ch, ReasonUnknownUser, 1)
				}
			}
		}
		if !ok {
			out[i].Status = ReasonUnknownUser
			continue
		}
		out[i].Status = "accepted"
		for _, af := range flows {
			d := time.Duration(af.f.Delay)
			if d <= 0 {
				now = append(now, &job{flow: af, trig: *t, arrived: arrived})
				nowIdx = append(nowIdx, i)
				continue
			}
			item, err := fe.delayedItem(af, t, arrived, d)
			if err != nil {
				return nil, err
			}
			delayed = append(delayed, item)
			out[i].Flows = append(out[i].Flows, af.f.ID)
		}
	}
	// Forwarded and delayed triggers must be stored before anything of the
	// request is sent: if storing fails, nothing of it was taken. The
	// immediate ones are queued first, gated on that (fireGate).
	var gate *fireGate
	if len(forward) > 0 || len(delayed) > 0 {
		gate = &fireGate{done: make(chan struct{})}
	}
	for k, j := range now {
		i := nowIdx[k]
		j.gate = gate
		if !fe.enqueue(j) {
			out[i].Status = "overloaded"
			continue
		}
		out[i].Flows = append(out[i].Flows, j.flow.f.ID)
	}
	if gate != nil {
		err := fe.storeRest(ctx, router, forward, delayed, arrived)
		gate.finish(err)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// storeRest forwards the triggers of other shards' users and schedules the
// delayed ones.
func (fe *FlowEngine) storeRest(ctx context.Context, router TriggerRouter, forward map[int][]Trigger, delayed []Delayed, arrived time.Time) error {
	if len(forward) > 0 {
		byShard := make(map[int]Forwarded, len(forward))
		for shard, ts := range forward {
			byShard[shard] = Forwarded{Arrived: arrived, Triggers: ts}
		}
		if err := router.Forward(ctx, byShard); err != nil {
			return fmt.Errorf("forward triggers: %w", err)
		}
	}
	if len(delayed) > 0 {
		if err := fe.delays.Schedule(ctx, delayed); err != nil {
			return fmt.Errorf("store delayed triggers: %w", err)
		}
	}
	return nil
}

// delayedItem is the DelayQueue item of trigger t for flow af. With an
// idempotency key its ID is derived from it, so a re-delivered request does
// not schedule the trigger twice.
func (fe *FlowEngine) delayedItem(af *activeFlow, t *Trigger, arrived time.Time, d time.Duration) (Delayed, error) {
	var id string
	if t.IdempotencyKey != "" {
		id = af.f.ID + "/k/" + t.IdempotencyKey
	} else {
		var b [16]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand)
		id = af.f.ID + "/r/" + hex.EncodeToString(b[:])
	}
	payload, err := json.Marshal(delayedTrigger{Flow: af.f.ID, Trigger: *t, Arrived: arrived})
	if err != nil {
		return Delayed{}, fmt.Errorf("encode delayed trigger: %w", err)
	}
	return Delayed{ID: id, Due: arrived.Add(d), Payload: payload}, nil
}

func (fe *FlowEngine) route(t *Trigger) []*activeFlow {
	fe.mu.RLock()
	defer fe.mu.RUnlock()
	var list []*activeFlow
	switch {
	case t.Flow != "":
		if af := fe.flows[t.Flow]; af != nil {
			list = []*activeFlow{af}
		}
	case t.Segment != "":
		list = fe.bySegment[t.Segment]
	default:
		list = fe.byEvent[t.Event]
	}
	out := make([]*activeFlow, 0, len(list))
	for _, af := range list {
		af.mu.Lock()
		active := af.status == StatusRunning
		af.mu.Unlock()
		if active {
			out = append(out, af)
		}
	}
	return out
}

func (fe *FlowEngine) enqueue(j *job) bool {
	select {
	case fe.queue <- j:
		return true
	default:
		for _, ch := range j.flow.f.Channels {
			j.flow.count(ch, "overloaded", 1)
		}
		return false
	}
}

// Start runs the trigger workers and the delay poller until Close.
func (fe *FlowEngine) Start(ctx context.Context) {
	for range fe.cfg.Workers {
		fe.wg.Add(1)
		go fe.work(context.WithoutCancel(ctx))
	}
	fe.poller.Add(1)
	go fe.pollDelayed(context.WithoutCancel(ctx))
}

// pollDelayed moves due delayed triggers into the queue, never more than
// the queue has room for, so a claimed item is not left waiting behind a
// full queue while its lease runs.
func (fe *FlowEngine) pollDelayed(ctx context.Context) {
	defer fe.poller.Done()
	tick := time.NewTicker(fe.cfg.DelayPoll)
	defer tick.Stop()
	warned := false
	for {
		select {
		case <-fe.stop:
			return
		case <-tick.C:
		}
		for {
			room := min(fe.cfg.MaxBatch, cap(fe.queue)-len(fe.queue))
			if room <= 0 {
				break
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			items, err := fe.delays.ClaimDue(cctx, room, fe.cfg.Lease)
			cancel()
			if err != nil {
				if !warned {
					fe.log.Warn("collect due delayed triggers; retrying", "error", err)
					warned = true
				}
				break
			}
			warned = false
			fe.release(ctx, items)
			if len(items) < room {
				break
			}
		}
	}
}

// release turns claimed delayed items into jobs. Items of a deleted flow,
// or that cannot be decoded, are forgotten; items of a paused flow stay
// claimed and come back after the lease, to be sent once it resumes.
func (fe *FlowEngine) release(ctx context.Context, items []Delayed) {
	var drop []string
	for _, it := range items {
		var dt delayedTrigger
		if err := json.Unmarshal(it.Payload, &dt); err != nil {
			fe.log.Error("delayed trigger unreadable; dropped", "id", it.ID, "error", err)
			drop = append(drop, it.ID)
			continue
		}
		fe.mu.RLock()
		af := fe.flows[dt.Flow]
		fe.mu.RUnlock()
		if af == nil {
			drop = append(drop, it.ID)
			continue
		}
		af.mu.Lock()
		running := af.status == StatusRunning
		af.mu.Unlock()
		if !running {
			continue
		}
		if dt.Trigger.IdempotencyKey == "" {
			// Claims are at least once: give the trigger a key so a
			// re-delivery after a crash is caught by the per-message dedup
			// even on a flow without a re-entry window.
			dt.Trigger.IdempotencyKey = "delayed:" + it.ID
		}
		if !fe.enqueue(&job{flow: af, trig: dt.Trigger, arrived: dt.Arrived, delayID: it.ID}) {
			continue // comes back after the lease
		}
	}
	if len(drop) > 0 {
		if err := fe.delays.Done(ctx, drop); err != nil {
			fe.log.Warn("forget dropped delayed triggers", "error", err)
		}
	}
}

// Close stops taking triggers, processes those queued, and waits for their
// outcomes (or ctx).
func (fe *FlowEngine) Close(ctx context.Context) error {
	fe.mu.Lock()
	if fe.stopped {
		fe.mu.Unlock()
		return nil
	}
	fe.stopped = true
	fe.mu.Unlock()
	close(fe.stop)
	fe.poller.Wait()
	close(fe.queue)
	done := make(chan struct{})
	go func() { fe.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain triggers: %w", ctx.Err())
	}
}

// work takes whatever is queued (up to MaxBatch, never waiting to fill a
// batch) and processes it, one group per flow.
func (fe *FlowEngine) work(ctx context.Context) {
	defer fe.wg.Done()
	jobs := make([]*job, 0, fe.cfg.MaxBatch)
	for {
		j, ok := <-fe.queue
		if !ok {
			return
		}
		jobs = append(jobs[:0], j)
	fill:
		for len(jobs) < fe.cfg.MaxBatch {
			select {
			case j, ok := <-fe.queue:
				if !ok {
					break fill
				}
				jobs = append(jobs, j)
			default:
				break fill
			}
		}
		sort.SliceStable(jobs, func(a, b int) bool { return jobs[a].flow.f.ID < jobs[b].flow.f.ID })
		for start := 0; start < len(jobs); {
			end := start + 1
			for end < len(jobs) && jobs[end].flow == jobs[start].flow {
				end++
			}
			fe.process(ctx, jobs[start].flow, jobs[start:end])
			start = end
		}
	}
}

// flowBatch is a RecipientBatch of one flow plus its dedup claims.
type flowBatch struct {
	// dedup is the engine's DedupLog, scoped to this batch's attempt when
	// it can be (AttemptDedup), set with the first key to claim: claims,
	// their retries, and the confirm or release of what they claimed.
	dedup   DedupLog
	b       *RecipientBatch
	af      *activeFlow
	keys    []DedupKey
	keyPos  []int
	claimed []bool
	pin     PinnedSource
	delayed []string // DelayQueue items this batch settles
	jobs    []*job   // by member
}

// reasonHeld settles a position whose trigger went (back) to the DelayQueue
// because its dedup claim failed: not a final reason, never counted.
const reasonHeld = "held"

// reasonRefused settles a position whose trigger's request failed (its
// forwarded or delayed part could not be stored): Fire answered an error
// and the caller retries the request whole. Never counted.
const reasonRefused = "refused"

func (fe *FlowEngine) process(ctx context.Context, af *activeFlow, jobs []*job) {
	pin, err := fe.source.Pin()
	if err != nil {
		fe.log.Error("pin shard generation for triggers", "error", err)
		for _, ch := range af.f.Channels {
			af.count(ch, ReasonCorruptRow, int64(len(jobs)))
		}
		return
	}
	r := af.run
	b := &RecipientBatch{Members: make([]Member, len(jobs))}
	n := 0
	kept := make([]*job, 0, len(jobs))
	for _, j := range jobs {
		m := &b.Members[n]
		ok, err := pin.LookupID(j.trig.UserID, m)
		if err != nil || !ok {
			// The user left the shard between Fire and now.
			for _, ch := range af.f.Channels {
				af.count(ch, ReasonUnknownUser, 1)
			}
			continue
		}
		m.Event = j.trig.Properties
		m.Arrived = j.arrived
		m.Scope = fe.scope(af, j)
		kept = append(kept, j)
		n++
	}
	b.Members = b.Members[:n]
	b.reset(r, n)
	b.deadline = fe.now().Add(r.ttl)
	fb := &flowBatch{b: b, af: af, pin: pin, jobs: kept}
	for _, j := range jobs {
		if j.delayID != "" {
			fb.delayed = append(fb.delayed, j.delayID)
		}
	}
	stages := MultiStage{StageFunc(resolveStage), StageFunc(layoutStage), StageFunc(policyStage), StageFunc(fb.claimRenderStage(fe)), StageFunc(capStage)}
	err = stages.Exec(ctx, b)
	// Stages settle skipped positions; what is still open awaits outcomes.
	b.remaining = b.open
	if err != nil {
		fe.log.Error("process triggers", "flow", af.f.ID, "error", err)
		b.abort()
	} else if b.open == 0 {
		b.closeDone()
	} else if err := dispatchStage(ctx, b); err != nil {
		fe.log.Error("dispatch triggered messages", "flow", af.f.ID, "error", err)
		b.abort()
	}
	go fb.finish(fe)
}

// scope is the provider idempotency scope of a trigger's messages: stable
// for re-deliveries of the same trigger, distinct across re-entry windows.
func (fe *FlowEngine) scope(af *activeFlow, j *job) string {
	if j.trig.IdempotencyKey != "" {
		return "f:" + af.f.ID + ":k:" + j.trig.IdempotencyKey
	}
	w := af.window
	if w <= 0 {
		return "f:" + af.f.ID + ":t:" + strconv.FormatInt(j.arrived.UnixNano(), 36)
	}
	return "f:" + af.f.ID + ":w:" + strconv.FormatInt(j.arrived.UnixNano()/int64(w), 36)
}

// dedupWindow is how long a confirmed trigger message blocks another.
func (fb *flowBatch) dedupWindow() time.Duration {
	if fb.af.window > 0 {
		return fb.af.window
	}
	return 24 * time.Hour
}

// claimRenderStage claims one dedup key per open position in one round
// trip (the flow's re-entry key, user × channel, or the trigger's
// idempotency key when the flow has no re-entry window) and renders the
// batch while the claim is in flight: a trigger used to wait for the
// claim's answer before anything was rendered, and on a busy machine that
// round trip is most of its latency. What the claim refuses was rendered
// for nothing, which costs far less than the wait, and settles as the
// claim says (duplicate, in doubt, held), never as a render error.
func (fb *flowBatch) claimRenderStage(fe *FlowEngine) func(ctx context.Context, b *RecipientBatch) error {
	return func(ctx context.Context, b *RecipientBatch) error {
		nch := b.nch()
		for p := range b.pos {
			if b.pos[p].settled {
				continue
			}
			mem := &b.Members[p/nch]
			scope := "f:" + fb.af.f.ID
			if fb.af.window <= 0 {
				if !strings.Contains(mem.Scope, ":k:") {
					continue // no re-entry rule and no idempotency key: every trigger sends
				}
				scope = mem.Scope
			}
			fb.keys = append(fb.keys, DedupKey{Scope: scope, User: mem.Key, Channel: b.run.channels[p%nch]})
			fb.keyPos = append(fb.keyPos, p)
		}
		type answer struct {
			states []ClaimState
			err    error
		}
		var claimed chan answer
		if len(fb.keys) > 0 {
			fb.dedup = fe.dedup
			if a, ok := fe.dedup.(AttemptDedup); ok {
				fb.dedup = a.Attempt(fe.attemptPrefix + strconv.FormatUint(fe.attempts.Add(1), 36))
			}
			claimed = make(chan answer, 1)
			go func() {
				states, err := fb.claimHeld(ctx, fe)
				claimed <- answer{states, err}
			}()
		}
		failed, rerr := renderOpen(b, nil)
		refused := fb.awaitGates(b)
		if claimed != nil {
			a := <-claimed
			if a.err != nil && refused {
				// Nothing was claimed; a refused trigger must not be held
				// either: its caller retries it.
				fb.dropSettledKeys(b)
			}
			fb.applyClaims(ctx, fe, b, a.states, a.err)
		}
		if rerr != nil {
			return rerr
		}
		settleRenderErrors(b, failed)
		return nil
	}
}

// awaitGates waits for the requests of the batch's gated triggers to be
// stored, and settles the positions of those whose request failed with
// reasonRefused. It reports whether any was refused.
func (fb *flowBatch) awaitGates(b *RecipientBatch) bool {
	nch := b.nch()
	refused := false
	for i, j := range fb.jobs {
		if j.gate == nil {
			continue
		}
		<-j.gate.done
		if j.gate.err == nil {
			continue
		}
		refused = true
		for p := i * nch; p < (i+1)*nch; p++ {
			b.skip(p, reasonRefused)
		}
	}
	return refused
}

// dropSettledKeys forgets the keys of settled positions before a failed
// claim holds the rest.
func (fb *flowBatch) dropSettledKeys(b *RecipientBatch) {
	keys, pos := fb.keys[:0], fb.keyPos[:0]
	for i, p := range fb.keyPos {
		b.mu.Lock()
		settled := b.pos[p].settled
		b.mu.Unlock()
		if !settled {
			keys, pos = append(keys, fb.keys[i]), append(pos, p)
		}
	}
	fb.keys, fb.keyPos = keys, pos
}

// applyClaims settles the positions whose claim was refused. When the claim
// failed, the triggers are held: without the dedup record we cannot promise
// "at most once", so nothing is sent now and the triggers are kept rather
// than dropped.
func (fb *flowBatch) applyClaims(ctx context.Context, fe *FlowEngine, b *RecipientBatch, states []ClaimState, err error) {
	if err != nil {
		fb.hold(ctx, fe, err)
		fb.keys, fb.keyPos = nil, nil
		return
	}
	nch := b.nch()
	fb.claimed = make([]bool, len(states))
	for i, st := range states {
		p := fb.keyPos[i]
		switch st {
		case Claimed:
			fb.claimed[i] = true
		case InDoubt:
			fb.claimed[i] = true
			// An earlier attempt may have reached the provider. Without an
			// idempotency handle (SMS, email) a re-send could arrive twice.
			if ch := b.run.channels[p%nch]; ch == channels.SMS || ch == channels.Email {
				b.skip(p, ReasonInDoubt)
			}
		default:
			b.skip(p, ReasonDuplicate)
		}
	}
}

// claimHeld claims fb.keys, retrying while the dedup store is away: a
// trigger accepted just before Redis dropped (the API's pre-check passed)
// waits here for it to come back instead of being dropped. It gives up when
// the engine closes or the messages' TTL passes. The worker waits with it:
// the queue behind it fills and Fire answers overloaded, which is the
// backpressure wanted while nothing can be claimed.
func (fb *flowBatch) claimHeld(ctx context.Context, fe *FlowEngine) ([]ClaimState, error) {
	wait := fe.cfg.ClaimRetry
	logged := false
	for {
		states, err := fb.dedup.Claim(ctx, fb.keys, fe.cfg.Lease, fb.dedupWindow())
		if err == nil {
			if logged {
				fe.log.Info("trigger dedup store answers again; held triggers proceed", "flow", fb.af.f.ID)
			}
			return states, nil
		}
		if !logged {
			fe.log.Warn("claim trigger dedup keys; holding the triggers until the dedup store answers", "flow", fb.af.f.ID, "error", err)
			logged = true
		}
		if !fe.now().Add(wait).Before(fb.b.deadline) {
			return nil, fmt.Errorf("%w (past the messages' ttl)", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-fe.stop:
			t.Stop()
			return nil, fmt.Errorf("%w (engine closing)", err)
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// hold settles the positions whose claim failed for good. A trigger that
// came from the DelayQueue is simply not forgotten: it comes back after its
// lease. Any other is put into the DelayQueue (due now) so that it survives
// the engine's closing; only when that fails too is it counted
// dedup_unavailable, and logged as lost. Past the TTL, it is expired.
func (fb *flowBatch) hold(ctx context.Context, fe *FlowEngine, claimErr error) {
	b := fb.b
	nch := b.nch()
	expired := !fe.now().Before(b.deadline)
	reason := make(map[int]string) // member → how its positions settle
	if expired {
		for _, p := range fb.keyPos {
			reason[p/nch] = ReasonExpired
		}
	} else {
		var items []Delayed
		var members []int
		keep := map[string]bool{}
		for _, p := range fb.keyPos {
			i := p / nch
			if _, seen := reason[i]; seen {
				continue
			}
			j := fb.jobs[i]
			reason[i] = reasonHeld
			if j.delayID != "" {
				keep[j.delayID] = true
				continue
			}
			item, err := fe.delayedItem(fb.af, &j.trig, j.arrived, 0)
			if err != nil {
				reason[i] = ReasonDedupUnavailable
				continue
			}
			items = append(items, item)
			members = append(members, i)
		}
		if len(items) > 0 {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err := fe.delays.Schedule(sctx, items)
			cancel()
			if err != nil {
				fe.log.Error("triggers lost: neither the dedup store nor the delay queue answers", "flow", fb.af.f.ID,
					"triggers", len(items), "claim_error", claimErr, "error", err)
				for _, i := range members {
					reason[i] = ReasonDedupUnavailable
				}
			} else {
				fe.log.Warn("triggers moved to the delay queue until the dedup store answers", "flow", fb.af.f.ID, "triggers", len(items), "error", claimErr)
			}
		}
		if len(keep) > 0 {
			kept := fb.delayed[:0]
			for _, id := range fb.delayed {
				if !keep[id] {
					kept = append(kept, id)
				}
			}
			fb.delayed = kept
		}
	}
	for _, p := range fb.keyPos {
		b.skip(p, reason[p/nch])
	}
}

// finish waits for the batch's outcomes, confirms the claims of what was
// accepted, releases the rest (so a later trigger may send), and counts.
func (fb *flowBatch) finish(fe *FlowEngine) {
	b := fb.b
	<-b.done
	defer fb.pin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var confirm, release []DedupKey
	b.mu.Lock()
	for i, p := range fb.keyPos {
		if fb.claimed == nil || !fb.claimed[i] {
			continue
		}
		if b.pos[p].accepted {
			confirm = append(confirm, fb.keys[i])
		} else {
			release = append(release, fb.keys[i])
		}
	}
	counts := b.takeCounts()
	for p := range b.pos {
		if b.pos[p].reason == ReasonCanceled {
			counts = append(counts, Count{Channel: b.run.channels[p%b.nch()], Reason: ReasonCanceled, N: 1})
		}
	}
	b.mu.Unlock()
	for _, c := range counts {
		if c.Reason != reasonHeld && c.Reason != reasonRefused { // counted when the trigger comes back
			fb.af.count(c.Channel, c.Reason, c.N)
		}
	}
	if len(confirm) > 0 {
		if err := fb.dedup.Confirm(ctx, confirm, fb.dedupWindow()); err != nil {
			fe.log.Error("confirm trigger dedup keys; they count as in doubt after their lease", "flow", fb.af.f.ID, "error", err)
		}
	}
	if len(release) > 0 {
		if err := fb.dedup.Release(ctx, release); err != nil {
			fe.log.Warn("release trigger dedup keys", "flow", fb.af.f.ID, "error", err)
		}
	}
	// Only now, with every outcome final and the dedup record written, may
	// the delayed items go: until then a crash hands them out again.
	if len(fb.delayed) > 0 {
		if err := fe.delays.Done(ctx, fb.delayed); err != nil {
			fe.log.Warn("forget sent delayed triggers; they come back after their lease and dedup stops them", "flow", fb.af.f.ID, "error", err)
		}
	}
}
