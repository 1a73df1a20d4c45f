package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/shard"
)

// Snapshot is one frame of GET /v1/events: what an operator watches during a
// send. Counters are cumulative since the daemon started (channels) or since
// the campaign was created (campaigns); rates and latencies cover the last
// interval only.
type Snapshot struct {
	Time time.Time `json:"time"`
	// Seq numbers the hub's samples; a gap seen by a client means it was too
	// slow and frames were dropped (each frame is complete on its own).
	Seq uint64 `json:"seq"`
	// IntervalS is the time the rates and latencies cover (0 in the first frame).
	IntervalS float64                     `json:"interval_s"`
	Shard     *ShardSnapshot              `json:"shard,omitempty"`
	Channels  map[string]ChannelSnapshot  `json:"channels"`
	Campaigns map[string]CampaignSnapshot `json:"campaigns"`
	// Flows is reserved for segment-triggered flows; always present so
	// clients can rely on the key.
	Flows map[string]FlowSnapshot `json:"flows"`
}

// ShardSnapshot is the mapped shard generation.
type ShardSnapshot struct {
	Generation uint64 `json:"generation"`
	Rows       uint64 `json:"rows"`
}

// Tally counts messages (or recipient positions) by how they ended.
type Tally struct {
	Sent int64 `json:"sent"`
	// Failed is keyed by reason ("dead_address", "provider_rejected",
	// "retries_exhausted:unavailable", ...).
	Failed map[string]int64 `json:"failed"`
	// Skipped are recipients that never reached the provider, by reason
	// ("no_address", "no_consent", "quiet_hours", ...).
	Skipped map[string]int64 `json:"skipped"`
}

// FailedTotal sums Failed.
func (t Tally) FailedTotal() int64 { return sum(t.Failed) }

// SkippedTotal sums Skipped.
func (t Tally) SkippedTotal() int64 { return sum(t.Skipped) }

// LatencySnapshot is the provider Send latency over the last interval,
// interpolated from the notifyd_provider_latency_seconds buckets (the same
// estimate Grafana's histogram_quantile draws).
type LatencySnapshot struct {
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	Samples uint64  `json:"samples"` // Send calls (batches) in the interval
}

// ChannelSnapshot is one channel's worker pool. Sent and Failed count what
// left the pool; Skipped counts recipients the campaigns on this daemon
// settled without a message for this channel since the daemon started.
type ChannelSnapshot struct {
	Tally
	Canceled   int64           `json:"canceled"` // stopped by a shutdown; resent after restart
	InFlight   int             `json:"in_flight"`
	Queue      map[string]int  `json:"queue"` // by lane: high, normal, retry
	QueueDepth int             `json:"queue_depth"`
	SentPerS   float64         `json:"sent_per_s"`
	FailedPerS float64         `json:"failed_per_s"`
	Latency    LatencySnapshot `json:"latency"`
}

// CampaignSnapshot is one campaign's progress.
type CampaignSnapshot struct {
	ID       string   `json:"id"`
	Name     string   `json:"name,omitempty"`
	Status   string   `json:"status"`
	Segment  string   `json:"segment"`
	Channels []string `json:"channels"`
	Tally
	// ByChannel splits the tally per channel.
	ByChannel map[string]Tally `json:"by_channel"`
	// Variants splits the tally per A/B group (variant id, or "holdout",
	// whose members are skipped with reason holdout); absent for a
	// campaign without an A/B test.
	Variants map[string]Tally `json:"variants,omitempty"`
	// Members is the segment's size in the current shard generation, 0 when
	// the segment is not in it; Positions = Members × len(Channels).
	Members   uint64 `json:"members,omitempty"`
	Positions uint64 `json:"positions,omitempty"`
	Settled   int64  `json:"settled"`
	// Progress in [0,1] is the share of members whose messages are all
	// final, read from the campaign's checkpoints (one per fleet shard);
	// before the first checkpoint it is Settled/Positions, absent when
	// Positions is unknown. Settled counts messages (one per address), so
	// it can pass Positions when members have several devices.
	Progress *float64 `json:"progress,omitempty"`
	// SettledPerS and SentPerS are messages per second averaged over the
	// hub's RateWindow (10s), not over one interval: counts move per
	// checkpointed batch.
	SettledPerS       float64 `json:"settled_per_s"`
	SentPerS          float64 `json:"sent_per_s"`
	RetryableFailures int64   `json:"retryable_failures"`
}

// FlowSnapshot is one segment-triggered flow (filled in once flows exist).
type FlowSnapshot struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Tally
	ByChannel map[string]Tally `json:"by_channel"`
	SentPerS  float64          `json:"sent_per_s"`
}

// IsSkipReason reports whether a campaign outcome reason is a skip (a
// policy decision: not sent on purpose) rather than a failure. Anything else
// that is not "sent" counts as a failure, so a reason added later shows up
// where someone will look.
func IsSkipReason(reason string) bool {
	switch reason {
	case campaigns.ReasonNoAddress, campaigns.ReasonNoConsent, campaigns.ReasonQuietHours,
		campaigns.ReasonExpired, campaigns.ReasonLeftShard, campaigns.ReasonDuplicate, campaigns.ReasonUnknownUser, "capped",
		campaigns.ReasonHoldout, campaigns.ReasonFallbackUnused, campaigns.ReasonFallbackLate:
		return true
	}
	return false
}

// CampaignSource is what the events hub reads from the campaign engine.
type CampaignSource interface {
	Running() []string
	Get(ctx context.Context, id string) (campaigns.CampaignStatus, error)
}

// PoolStatser is a channel pool's queue snapshot (*channels.Pool).
type PoolStatser interface {
	Stats() channels.PoolStats
}

// ShardInfoFunc reports the mapped generation and segment sizes; ok=false
// when no shard is mapped.
type ShardInfoFunc func() (info ShardSnapshot, segments map[string]uint64, ok bool)

// EventsConfig configures the events hub. Zero values take the defaults.
type EventsConfig struct {
	// Interval between snapshots (default 1s).
	Interval time.Duration
	// Heartbeat is the idle time after which a stream gets a comment line, so
	// proxies keep it open (default 15s).
	Heartbeat time.Duration
	// Linger keeps a finished campaign in the snapshot this long after it was
	// last active (default 15m): the operator sees how a send ended.
	Linger time.Duration
	// MaxCampaigns bounds the campaigns sampled per interval (default 200);
	// past it, the longest-finished ones are dropped first.
	MaxCampaigns int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Ticks drives sampling when set (tests); default a ticker of Interval.
	Ticks <-chan time.Time
	// RateWindow is the span a campaign's rates are averaged over (default
	// 10s). A campaign's counts move when a batch is checkpointed, not per
	// message, so a per-interval difference jumps between 0 and bursts; over
	// a few checkpoints it reads as the send rate it is.
	RateWindow time.Duration
}

func (c EventsConfig) withDefaults() EventsConfig {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.Linger <= 0 {
		c.Linger = 15 * time.Minute
	}
	if c.MaxCampaigns <= 0 {
		c.MaxCampaigns = 200
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.RateWindow <= 0 {
		c.RateWindow = 10 * time.Second
	}
	return c
}

// EventHub samples the daemon once per interval into a Snapshot and fans it
// out to the /v1/events streams. One sample serves every subscriber: a
// hundred operators tailing cost the daemon what one does.
type EventHub struct {
	cfg     EventsConfig
	src     CampaignSource
	gather  prometheus.Gatherer // the channel metrics only
	pools   map[string]PoolStatser
	shard   ShardInfoFunc
	log     *slog.Logger
	sampler sync.Mutex // one sample at a time; held across the campaign reads

	mu       sync.Mutex
	tracked  map[string]*trackedCampaign
	prevChan map[string]channelSample
	prevAt   time.Time
	totals   map[recipientKey]int64
	// fbTotals are fallback campaigns' fallbacks by step and cause
	// (notifyd_campaign_fallbacks_total), folded in as totals are.
	fbTotals map[recipientKey]int64
	seq      uint64
	latest   *frame
	subs     map[*subscription]struct{}
	lastErr  string
	done     chan struct{}
	closeOne sync.Once

	flows     func() []campaigns.FlowStatus
	prevFlows map[string]int64 // sent per flow at the last sample
}

// SetFlows makes the hub report flows (the flow engine's ListFlows).
func (h *EventHub) SetFlows(list func() []campaigns.FlowStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flows = list
}

// flowSnapshots fills snap.Flows; called with h.mu held.
func (h *EventHub) flowSnapshots(snap *Snapshot, interval float64) {
	if h.flows == nil {
		return
	}
	if h.prevFlows == nil {
		h.prevFlows = map[string]int64{}
	}
	for _, st := range h.flows() {
		fs := FlowSnapshot{ID: st.ID, Status: string(st.Status), Tally: newTally(), ByChannel: map[string]Tally{}}
		for ch, byReason := range st.Counts {
			t := newTally()
			for reason, n := range byReason {
				switch {
				case reason == campaigns.ReasonSent:
					t.Sent += n
				case IsSkipReason(reason):
					t.Skipped[reason] += n
					fs.Skipped[reason] += n
				default:
					t.Failed[reason] += n
					fs.Failed[reason] += n
				}
			}
			fs.Sent += t.Sent
			fs.ByChannel[ch] = t
		}
		if prev, ok := h.prevFlows[st.ID]; ok && interval > 0 {
			fs.SentPerS = float64(fs.Sent-prev) / interval
		}
		h.prevFlows[st.ID] = fs.Sent
		snap.Flows[st.ID] = fs
	}
}

// recipientKey is a campaign outcome count: notifyd_campaign_recipients_total.
type recipientKey struct{ channel, reason string }

type trackedCampaign struct {
	lastActive time.Time
	// fresh: created through this daemon's API, so every count belongs in
	// this process's totals; otherwise the first sample is a baseline (the
	// counts an earlier process or another daemon already reported).
	fresh  bool
	seen   bool
	prev   map[recipientKey]int64
	fbPrev map[recipientKey]int64 // fallbacks by step and cause at the last sample
	pins   int                    // streams filtered on this campaign keep it tracked
	// rates holds the samples of the last RateWindow, oldest first, plus
	// the newest one before it (the window's starting point).
	rates []rateSample
	last  *CampaignSnapshot
}

type rateSample struct {
	at            time.Time
	settled, sent int64
}

type channelSample struct {
	sent, failed float64
	buckets      []*dto.Bucket
	count        uint64
}

type frame struct {
	snap *Snapshot
	json []byte
}

type subscription struct {
	campaign string
	ch       chan *frame
}

// NewEventHub builds a hub. gather must hold the channel metrics
// (notifyd_channel_messages_total, notifyd_provider_latency_seconds); the
// daemon gives it a registry with only those, so sampling does not run the
// scrape-time collectors every second.
func NewEventHub(cfg EventsConfig, src CampaignSource, gather prometheus.Gatherer, pools map[string]PoolStatser, shard ShardInfoFunc, log *slog.Logger) *EventHub {
	if log == nil {
		log = slog.Default()
	}
	if shard == nil {
		shard = func() (ShardSnapshot, map[string]uint64, bool) { return ShardSnapshot{}, nil, false }
	}
	return &EventHub{
		cfg: cfg.withDefaults(), src: src, gather: gather, pools: pools, shard: shard, log: log,
		tracked: map[string]*trackedCampaign{}, prevChan: map[string]channelSample{}, totals: map[recipientKey]int64{}, fbTotals: map[recipientKey]int64{},
		subs: map[*subscription]struct{}{}, done: make(chan struct{}),
	}
}

// Run samples at once and then every interval until ctx ends or Close.
func (h *EventHub) Run(ctx context.Context) {
	defer h.Close()
	ticks := h.cfg.Ticks
	if ticks == nil {
		t := time.NewTicker(h.cfg.Interval)
		defer t.Stop()
		ticks = t.C
	}
	h.Sample(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.done:
			return
		case <-ticks:
			h.Sample(ctx)
		}
	}
}

// Close ends every stream (the daemon calls it when shutdown begins, so
// http.Server.Shutdown does not wait for streams that never go idle).
func (h *EventHub) Close() { h.closeOne.Do(func() { close(h.done) }) }

// Latest returns the last snapshot, nil before the first sample.
func (h *EventHub) Latest() *Snapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.latest == nil {
		return nil
	}
	return h.latest.snap
}

// Touch makes the hub sample a campaign from now on. fresh says the
// campaign was just created, so its counts so far are new work.
func (h *EventHub) Touch(id string, fresh bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	tc := h.tracked[id]
	if tc == nil {
		tc = &trackedCampaign{fresh: fresh}
		h.tracked[id] = tc
	}
	tc.lastActive = h.cfg.Now()
}

// RecipientTotals returns the campaign outcome counts (channel, reason → n)
// gathered since the hub started.
func (h *EventHub) RecipientTotals() map[[2]string]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return copyTotals(h.totals)
}

// copyTotals copies a counter map for readers outside the hub's lock.
func copyTotals(m map[recipientKey]int64) map[[2]string]int64 {
	out := make(map[[2]string]int64, len(m))
	for k, n := range m {
		out[[2]string{k.channel, k.reason}] = n
	}
	return out
}

// FallbackTotals returns fallback campaigns' fallbacks (step, cause → n)
// gathered since the hub started.
func (h *EventHub) FallbackTotals() map[[2]string]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return copyTotals(h.fbTotals)
}

// Subscribers is the number of open streams.
func (h *EventHub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func (h *EventHub) subscribe(campaign string) *subscription {
	s := &subscription{campaign: campaign, ch: make(chan *frame, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[s] = struct{}{}
	if campaign != "" {
		tc := h.tracked[campaign]
		if tc == nil {
			tc = &trackedCampaign{lastActive: h.cfg.Now()}
			h.tracked[campaign] = tc
		}
		tc.pins++
	}
	return s
}

func (h *EventHub) unsubscribe(s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
	if tc := h.tracked[s.campaign]; s.campaign != "" && tc != nil {
		tc.pins--
	}
}

// Sample builds and publishes one snapshot. Run calls it every interval.
func (h *EventHub) Sample(ctx context.Context) {
	h.sampler.Lock()
	defer h.sampler.Unlock()
	now := h.cfg.Now()

	running := h.src.Running()
	h.mu.Lock()
	for _, id := range running {
		tc := h.tracked[id]
		if tc == nil {
			tc = &trackedCampaign{}
			h.tracked[id] = tc
		}
		tc.lastActive = now
	}
	h.prune(now)
	ids := make([]string, 0, len(h.tracked))
	for id := range h.tracked {
		ids = append(ids, id)
	}
	h.mu.Unlock()
	sort.Strings(ids)

	// Campaign reads may go to Redis: bound them so one slow read delays a
	// frame, not the stream.
	rctx, cancel := context.WithTimeout(ctx, h.cfg.Interval)
	statuses := make(map[string]campaigns.CampaignStatus, len(ids))
	var gone []string
	var readErr error
	for _, id := range ids {
		st, err := h.src.Get(rctx, id)
		switch {
		case errors.Is(err, campaigns.ErrNotFound):
			gone = append(gone, id)
		case err != nil:
			readErr = err
		default:
			statuses[id] = st
		}
	}
	cancel()
	shardInfo, segments, shardOK := h.shard()
	families, gatherErr := h.gather.Gather()
	stats := make(map[string]channels.PoolStats, len(h.pools))
	for name, p := range h.pools {
		stats[name] = p.Stats()
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	h.reportErrors(readErr, gatherErr)
	interval := 0.0
	if !h.prevAt.IsZero() {
		interval = now.Sub(h.prevAt).Seconds()
	}
	h.seq++
	snap := &Snapshot{
		Time: now.UTC(), Seq: h.seq, IntervalS: interval,
		Channels: map[string]ChannelSnapshot{}, Campaigns: map[string]CampaignSnapshot{}, Flows: map[string]FlowSnapshot{},
	}
	if shardOK {
		snap.Shard = &shardInfo
	}
	for _, id := range gone {
		if tc := h.tracked[id]; tc != nil && tc.pins == 0 {
			delete(h.tracked, id)
		}
	}
	for _, id := range ids {
		tc := h.tracked[id]
		if tc == nil {
			continue
		}
		st, ok := statuses[id]
		if !ok {
			if tc.last != nil { // a failed read: show the last known state rather than nothing
				snap.Campaigns[id] = *tc.last
			}
			continue
		}
		if isActive(st.Status) {
			tc.lastActive = now
		}
		c := h.campaignSnapshot(tc, st, segments, now)
		tc.last = &c
		snap.Campaigns[id] = c
	}
	h.channelSnapshots(snap, families, stats, interval)
	h.flowSnapshots(snap, interval)
	h.prevAt = now

	b, err := json.Marshal(snap)
	if err != nil { // cannot happen with these types; keep serving the last frame
		h.log.Error("encode events snapshot", "error", err)
		return
	}
	f := &frame{snap: snap, json: b}
	h.latest = f
	for s := range h.subs {
		publish(s.ch, f)
	}
}

// publish hands f to a stream, replacing a frame it has not taken yet: a
// slow client skips frames, it never holds up the hub.
func publish(ch chan *frame, f *frame) {
	for {
		select {
		case ch <- f:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// reportErrors logs a sampling failure once per change, not every second.
func (h *EventHub) reportErrors(errs ...error) {
	err := errors.Join(errs...)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg == h.lastErr {
		return
	}
	h.lastErr = msg
	if err != nil {
		h.log.Warn("events snapshot incomplete", "error", err)
	} else {
		h.log.Info("events snapshot complete again")
	}
}

func isActive(s campaigns.Status) bool {
	return s == campaigns.StatusRunning || s == campaigns.StatusScheduled || s == campaigns.StatusPaused
}

// prune drops campaigns finished longer than Linger ago, then the
// longest-finished ones past MaxCampaigns. Called locked.
func (h *EventHub) prune(now time.Time) {
	type cand struct {
		id string
		at time.Time
	}
	var old []cand
	for id, tc := range h.tracked {
		if tc.pins > 0 {
			continue
		}
		if now.Sub(tc.lastActive) > h.cfg.Linger {
			delete(h.tracked, id)
			continue
		}
		old = append(old, cand{id, tc.lastActive})
	}
	if over := len(h.tracked) - h.cfg.MaxCampaigns; over > 0 {
		sort.Slice(old, func(i, j int) bool { return old[i].at.Before(old[j].at) })
		for _, c := range old[:min(over, len(old))] {
			delete(h.tracked, c.id)
		}
	}
}

// campaignSnapshot turns a status into a snapshot and folds its count
// changes into the recipient totals. Called locked.
func (h *EventHub) campaignSnapshot(tc *trackedCampaign, st campaigns.CampaignStatus, segments map[string]uint64, now time.Time) CampaignSnapshot {
	c := describeCampaign(st, segments)
	cur := make(map[recipientKey]int64)
	for ch, reasons := range st.Counts {
		for reason, n := range reasons {
			cur[recipientKey{ch, reason}] = n
		}
	}
	if tc.seen || tc.fresh {
		for k, n := range cur {
			if d := n - tc.prev[k]; d > 0 { // retry-failed moves counts between reasons; counters only go up
				h.totals[k] += d
			}
		}
	}
	c.SettledPerS, c.SentPerS = tc.rate(now, c.Settled, c.Sent, h.cfg.RateWindow)
	fb := make(map[recipientKey]int64)
	for step, causes := range st.Fallback {
		for cause, n := range causes {
			fb[recipientKey{step, cause}] = n
		}
	}
	if tc.seen || tc.fresh {
		for k, n := range fb {
			if d := n - tc.fbPrev[k]; d > 0 {
				h.fbTotals[k] += d
			}
		}
	}
	tc.fbPrev = fb
	tc.prev, tc.seen, tc.fresh = cur, true, false
	return c
}

// describeCampaign is a campaign's snapshot without rates.
func describeCampaign(st campaigns.CampaignStatus, segments map[string]uint64) CampaignSnapshot {
	c := CampaignSnapshot{
		ID: st.ID, Name: st.Name, Status: string(st.Status), Segment: st.Segment, Channels: st.Channels,
		Tally: newTally(), ByChannel: map[string]Tally{}, RetryableFailures: st.Failures,
	}
	for ch, reasons := range st.Counts {
		t := newTally()
		for reason, n := range reasons {
			c.Settled += n
			switch {
			case reason == campaigns.ReasonSent:
				t.Sent += n
				c.Sent += n
			case IsSkipReason(reason):
				t.Skipped[reason] += n
				c.Skipped[reason] += n
			default:
				t.Failed[reason] += n
				c.Failed[reason] += n
			}
		}
		c.ByChannel[ch] = t
	}
	for v, byCh := range st.Variants {
		t := newTally()
		for _, reasons := range byCh {
			for reason, n := range reasons {
				switch {
				case reason == campaigns.ReasonSent:
					t.Sent += n
				case IsSkipReason(reason):
					t.Skipped[reason] += n
				default:
					t.Failed[reason] += n
				}
			}
		}
		if c.Variants == nil {
			c.Variants = map[string]Tally{}
		}
		c.Variants[v] = t
	}
	if m, ok := segments[st.Segment]; ok && m > 0 && len(st.Channels) > 0 {
		c.Members = m
		c.Positions = m * uint64(len(st.Channels))
		p := math.Min(float64(c.Settled)/float64(c.Positions), 1)
		c.Progress = &p
	}
	if p, ok := memberProgress(st); ok {
		c.Progress = &p
	}
	if st.Status == campaigns.StatusCompleted {
		// Completed means every member was settled, whatever the segment's
		// size in a newer shard generation says.
		p := 1.0
		c.Progress = &p
	}
	return c
}

func newTally() Tally { return Tally{Failed: map[string]int64{}, Skipped: map[string]int64{}} }

// channelSnapshots fills the per-channel part from the channel metrics and
// the pools' queues. Called locked.
func (h *EventHub) channelSnapshots(snap *Snapshot, families []*dto.MetricFamily, stats map[string]channels.PoolStats, interval float64) {
	get := func(name string) ChannelSnapshot {
		c, ok := snap.Channels[name]
		if !ok {
			c = ChannelSnapshot{Tally: newTally(), Queue: map[string]int{}}
		}
		return c
	}
	cur := map[string]channelSample{}
	for _, mf := range families {
		switch mf.GetName() {
		case "notifyd_channel_messages_total":
			for _, m := range mf.GetMetric() {
				l := labels(m)
				name := l["channel"]
				c, s := get(name), cur[name]
				v := m.GetCounter().GetValue()
				switch outcome, reason := l["outcome"], l["reason"]; outcome {
				case string(channels.OutcomeAccepted):
					c.Sent += int64(v)
					s.sent += v
				case string(channels.OutcomeCanceled):
					c.Canceled += int64(v)
				default:
					if v == 0 {
						break
					}
					key := reason
					if outcome == string(channels.OutcomeRetriesExhausted) && reason != outcome {
						key = outcome + ":" + reason
					} else if key == "" || key == "none" {
						key = outcome
					}
					c.Failed[key] += int64(v)
					s.failed += v
				}
				snap.Channels[name], cur[name] = c, s
			}
		case "notifyd_provider_latency_seconds":
			for _, m := range mf.GetMetric() {
				name := labels(m)["channel"]
				c, s := get(name), cur[name]
				s.buckets, s.count = m.GetHistogram().GetBucket(), m.GetHistogram().GetSampleCount()
				snap.Channels[name], cur[name] = c, s
			}
		}
	}
	for name, st := range stats {
		c := get(name)
		c.InFlight = st.InFlight
		for l := channels.Lane(0); l < channels.NumLanes; l++ {
			c.Queue[l.String()] = st.Queued[l]
			c.QueueDepth += st.Queued[l]
		}
		c.Queue["retry"] = st.Retrying
		c.QueueDepth += st.Retrying
		snap.Channels[name] = c
	}
	for k, n := range h.totals {
		if !IsSkipReason(k.reason) {
			continue
		}
		c := get(k.channel)
		c.Skipped[k.reason] += n
		snap.Channels[k.channel] = c
	}
	for name, c := range snap.Channels {
		s, prev := cur[name], h.prevChan[name]
		if interval > 0 {
			c.SentPerS = math.Max(s.sent-prev.sent, 0) / interval
			c.FailedPerS = math.Max(s.failed-prev.failed, 0) / interval
			c.Latency = latencyDelta(prev, s)
		}
		snap.Channels[name] = c
	}
	h.prevChan = cur
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// latencyDelta estimates p50/p99 of the observations between two samples
// of a cumulative histogram.
func latencyDelta(prev, cur channelSample) LatencySnapshot {
	if cur.count <= prev.count || len(cur.buckets) == 0 {
		return LatencySnapshot{}
	}
	n := cur.count - prev.count
	bounds := make([]float64, len(cur.buckets))
	counts := make([]uint64, len(cur.buckets))
	for i, b := range cur.buckets {
		bounds[i] = b.GetUpperBound()
		c := b.GetCumulativeCount()
		if i < len(prev.buckets) && prev.buckets[i].GetUpperBound() == bounds[i] {
			c -= min(prev.buckets[i].GetCumulativeCount(), c)
		}
		counts[i] = c
	}
	return LatencySnapshot{
		P50Ms:   quantile(0.5, bounds, counts, n) * 1000,
		P99Ms:   quantile(0.99, bounds, counts, n) * 1000,
		Samples: n,
	}
}

// quantile interpolates linearly inside the bucket holding rank q·n, as
// Prometheus' histogram_quantile does; ranks past the last finite bound
// report that bound.
func quantile(q float64, bounds []float64, cumulative []uint64, n uint64) float64 {
	rank := q * float64(n)
	lower, prevCount := 0.0, 0.0
	for i, ub := range bounds {
		c := float64(cumulative[i])
		if c >= rank && c > prevCount {
			if math.IsInf(ub, 1) {
				return lower
			}
			return lower + (ub-lower)*(rank-prevCount)/(c-prevCount)
		}
		lower, prevCount = ub, c
	}
	return lower
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// filtered returns the snapshot as a stream filtered on one campaign sees it.
func (s *Snapshot) filtered(campaign string, fallback *CampaignSnapshot) *Snapshot {
	out := *s
	out.Campaigns = map[string]CampaignSnapshot{}
	if c, ok := s.Campaigns[campaign]; ok {
		out.Campaigns[campaign] = c
	} else if fallback != nil {
		out.Campaigns[campaign] = *fallback
	}
	return &out
}

// trackingService is the campaign API as the admin handlers see it: every
// campaign touched through it is sampled by the hub, so even a campaign that
// runs for less than one interval shows up (and is counted) in the live view.
type trackingService struct {
	CampaignService
	hub *EventHub
}

// Track wraps svc so the hub follows the campaigns created or controlled through it.
func (h *EventHub) Track(svc CampaignService) CampaignService {
	return &trackingService{CampaignService: svc, hub: h}
}

func (t *trackingService) Create(ctx context.Context, body []byte) (campaigns.CampaignStatus, bool, error) {
	st, created, err := t.CampaignService.Create(ctx, body)
	if st.ID != "" && (err == nil || created) {
		t.hub.Touch(st.ID, created)
	}
	return st, created, err
}

func (t *trackingService) touched(st campaigns.CampaignStatus, err error) (campaigns.CampaignStatus, error) {
	if err == nil {
		t.hub.Touch(st.ID, false)
	}
	return st, err
}

func (t *trackingService) Pause(ctx context.Context, id string) (campaigns.CampaignStatus, error) {
	return t.touched(t.CampaignService.Pause(ctx, id))
}

func (t *trackingService) Resume(ctx context.Context, id string) (campaigns.CampaignStatus, error) {
	return t.touched(t.CampaignService.Resume(ctx, id))
}

func (t *trackingService) Cancel(ctx context.Context, id string) (campaigns.CampaignStatus, error) {
	return t.touched(t.CampaignService.Cancel(ctx, id))
}

func (t *trackingService) RetryFailed(ctx context.Context, id string) (campaigns.CampaignStatus, error) {
	return t.touched(t.CampaignService.RetryFailed(ctx, id))
}

// ShardInfo reads the newest mapped generation's header and segment sizes.
func ShardInfo(st *shard.Store) ShardInfoFunc {
	return func() (ShardSnapshot, map[string]uint64, bool) {
		r, err := st.Acquire()
		if err != nil {
			return ShardSnapshot{}, nil, false
		}
		defer func() { _ = r.Release() }()
		segs := map[string]uint64{}
		for _, s := range r.Segments() {
			segs[s.Name] = s.Members
		}
		return ShardSnapshot{Generation: r.Generation(), Rows: r.Rows()}, segs, true
	}
}

// Events returns the live-view hub.
func (d *Daemon) Events() *EventHub { return d.events }

// wireEvents builds the events hub and registers the scrape-time metrics.
func (d *Daemon) wireEvents(cfg EventsConfig) {
	pools := make(map[string]PoolStatser, len(d.pools))
	for name, p := range d.pools {
		pools[name] = p
	}
	info := ShardInfo(d.shard)
	d.events = NewEventHub(cfg, d.engine, d.live, pools, info, d.log)
	d.reg.MustRegister(newOpsCollector(d.events, d.state, info, d.delays, d.log))
	d.reg.MustRegister(newWarmCollector(d.shard.Warmed))
	d.reg.MustRegister(newSRECollector(d.redis, d.queueSizes))
	streams := map[string]backlogger{}
	if b, ok := d.intake.(backlogger); ok {
		streams["intake"] = b
	}
	if b, ok := d.shardIntake.(backlogger); ok {
		streams["shard"] = b
	}
	if len(streams) > 0 {
		d.reg.MustRegister(newIntakeCollector(streams, cfg.Now, d.log))
	}
}

// rate records a sample and returns the settled and sent rates over the
// last window: the difference to the newest sample at least window old (or
// the oldest kept), divided by the time between them. Counts that fall
// (retry-failed moves failures back into flight) read as 0, not negative.
func (tc *trackedCampaign) rate(now time.Time, settled, sent int64, window time.Duration) (settledPerS, sentPerS float64) {
	tc.rates = append(tc.rates, rateSample{at: now, settled: settled, sent: sent})
	drop := 0
	for drop+1 < len(tc.rates)-1 && !tc.rates[drop+1].at.After(now.Add(-window)) {
		drop++
	}
	if drop > 0 {
		tc.rates = append(tc.rates[:0], tc.rates[drop:]...)
	}
	first := tc.rates[0]
	dt := now.Sub(first.at).Seconds()
	if dt <= 0 {
		return 0, 0
	}
	return math.Max(float64(settled-first.settled), 0) / dt, math.Max(float64(sent-first.sent), 0) / dt
}

// memberProgress is the share of a campaign's members whose every message
// is final. A checkpoint is the user key below which that holds, and user
// keys are xxhash values spread evenly over 64 bits, so checkpoint/2^64 is
// that share of a shard's members. A fleet campaign averages its shards: a
// completed shard counts 1, a waiting one 0. ok=false before any
// checkpoint.
func memberProgress(st campaigns.CampaignStatus) (float64, bool) {
	if len(st.Shards) > 0 {
		var sum float64
		for _, sp := range st.Shards {
			if sp.State == "completed" {
				sum++
			} else if f, ok := keyFraction(sp.Checkpoint); ok {
				sum += f
			}
		}
		return sum / float64(len(st.Shards)), true
	}
	return keyFraction(st.Checkpoint)
}

func keyFraction(hex string) (float64, bool) {
	k, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return 0, false
	}
	return float64(k) / math.Exp2(64), true
}
