package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/deliverylog"
	"github.com/notifyd/notifyd/store/memstate"
	"github.com/notifyd/notifyd/store/redisstate"
	"github.com/notifyd/notifyd/store/shard"
)

// ChannelSpec is one channel ready to be put behind a worker pool.
type ChannelSpec struct {
	Channel channels.Channel
	Pool    PoolConfig
}

// Deps are what New takes besides the config: the channels (built from the
// config by BuildChannels, or sandbox-backed by the demo) and injectables.
type Deps struct {
	Channels map[string]ChannelSpec
	Logger   *slog.Logger
	Now      func() time.Time
	// Feedback receives dead-address records (default: kept in memory).
	Feedback channels.FeedbackSink
	// Listener, when set, serves the admin API instead of Admin.Listen (tests, the demo).
	Listener net.Listener
	// Events configures the live view (GET /v1/events); zero: once a second.
	Events EventsConfig
	// TrackingListener, when set, serves the tracking endpoint instead of
	// Tracking.Listen (tests).
	TrackingListener net.Listener
}

// state is everything the engine keeps: memstate or redisstate.
type state interface {
	campaigns.CampaignStore
	campaigns.ProgressStore
}

// Daemon is one running notifyd: shard, state, channel pools, campaign
// engine and admin API.
type Daemon struct {
	cfg    *Config
	log    *slog.Logger
	reg    *prometheus.Registry
	live   *prometheus.Registry // channel metrics only, read by the events hub
	events *EventHub
	shard  *shard.Store
	state  state
	redis  redis.UniversalClient
	intake campaigns.Intake
	delays campaigns.DelayQueue
	owner  string
	pools  map[string]*channels.Pool
	// queueSizes is each pool's configured queue_size, for notifyd_channel_queue_capacity.
	queueSizes map[string]int
	engine     *campaigns.Engine
	flows      *campaigns.FlowEngine
	triggers   *TriggerMetrics
	// intakeReady is ready, checked at most every 250ms for stream entries.
	intakeReady func(context.Context) error
	dedupOf     func(owner string) campaigns.DedupLog
	caps        campaigns.CapStore // frequency caps, shared by campaigns and flows
	feedback    channels.FeedbackSink
	server      *http.Server
	listener    net.Listener
	draining    atomic.Bool

	flowStore   campaigns.CampaignStore // flow records: a kind apart from campaigns
	retained    []*shard.Store          // shard files of earlier rings (shard.retained)
	ring        shard.RingInfo          // which shard of which fleet this daemon serves
	shardIntake campaigns.Intake
	router      campaigns.TriggerRouter

	dlog     *deliverylog.Log // nil: delivery_log off
	masker   *deliverylog.Masker
	exporter *deliverylog.Exporter // nil: no export target

	tracking   *http.Server // nil: tracking off
	trackingLn net.Listener
}

// New wires a daemon. Nothing runs until Run.
func New(ctx context.Context, cfg *Config, deps Deps) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: deps.Logger, reg: prometheus.NewRegistry(), live: prometheus.NewRegistry(), pools: map[string]*channels.Pool{}, feedback: deps.Feedback}
	d.triggers = NewTriggerMetrics(d.reg)
	if d.log == nil {
		d.log = slog.Default()
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	d.intakeReady = cachedReady(d.ready, 250*time.Millisecond, now)
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var err error
	shardOpts := []shard.StoreOption{shard.WithLogger(d.log)}
	if !cfg.Shard.LazyVerify {
		shardOpts = append(shardOpts, shard.WithWarmUp())
	}
	if d.shard, err = shard.OpenStore(cfg.Shard.Path, shardOpts...); err != nil {
		return nil, fmt.Errorf("open shard: %w", err)
	}
	rr, err := d.shard.Acquire()
	if err != nil {
		return nil, fmt.Errorf("read shard: %w", err)
	}
	d.ring = rr.Ring()
	_ = rr.Release()
	var retained []campaigns.RingPart
	for i, path := range cfg.Shard.Retained {
		st, err := shard.OpenStore(path, shard.WithLogger(d.log))
		if err != nil {
			return nil, fmt.Errorf("open shard.retained[%d]: %w", i, err)
		}
		d.retained = append(d.retained, st)
		r, err := st.Acquire()
		if err != nil {
			return nil, fmt.Errorf("read shard.retained[%d]: %w", i, err)
		}
		ring := r.Ring()
		_ = r.Release()
		if ring.Version == d.ring.Version {
			return nil, fmt.Errorf("shard.retained[%d] is %s, the ring of shard.path: keep only earlier rings there", i, ring)
		}
		retained = append(retained, campaigns.RingPart{Version: ring.Version, Shard: ring.Shard, Shards: ring.Shards, Source: NewShardSource(st).OnRing(ring)})
		d.log.Info("serving campaigns pinned to an earlier ring", "ring", ring.String(), "file", path)
	}
	if d.ring.Shards > 1 && !cfg.Redis.Enabled() {
		return nil, fmt.Errorf("shard file is %s: a daemon of a fleet needs redis.url (the fleet coordinates through Redis)", d.ring)
	}
	if cfg.Redis.Enabled() {
		if d.redis, err = newRedisClient(cfg.Redis); err != nil {
			return nil, err
		}
		installRedisLogger(d.log)
		d.redis.AddHook(newRedisMetrics(d.reg))
		if err := pingRedis(ctx, d.redis); err != nil {
			_ = d.redis.Close()
			return nil, fmt.Errorf("connect to redis: %w", err)
		}
		ropts := []redisstate.Option{redisstate.WithPrefix(cfg.Redis.Prefix)}
		if cfg.Redis.CapGroupBits != 0 {
			ropts = append(ropts, redisstate.WithCapGroupBits(cfg.Redis.CapGroupBits))
		}
		rs, err := redisstate.New(d.redis, ropts...)
		if err != nil {
			return nil, fmt.Errorf("open redis state: %w", err)
		}
		d.state = rs
		d.flowStore = rs.Flows()
		d.intake = rs
		d.delays = rs.Delays()
		if d.ring.Shards > 1 {
			// Delayed triggers wait in the shard's own queue, and triggers for
			// this shard's users arrive on its own stream.
			own := rs.ForShard(d.ring.Shard)
			d.delays = own.Delays()
			d.shardIntake = own
			d.router = NewFleetRouter(d.ring, rs)
		}
		if d.feedback == nil {
			d.feedback = rs.Feedback(cfg.Redis.FeedbackMaxLen, 0)
		}
		d.dedupOf = func(owner string) campaigns.DedupLog { return rs.Dedup(owner) }
		d.caps = rs.Caps()
	} else {
		d.log.Warn("no redis.url or redis.cluster_addrs configured: campaign state is kept in memory and lost on restart")
		ms := memstate.New(memstate.WithClock(now))
		d.state = ms
		d.flowStore = ms.Flows()
		d.delays = ms.Delays()
		if d.feedback == nil {
			// Nowhere durable to put it: keep the newest records for
			// inspection, bounded so a long run cannot grow without limit.
			d.feedback = &channels.MemoryFeedback{Limit: 100_000}
		}
		d.dedupOf = func(owner string) campaigns.DedupLog { return ms.Dedup(owner) }
		d.caps = ms.Caps()
	}

	owner := cfg.Engine.Owner
	if owner == "" {
		host, _ := os.Hostname()
		owner = host + "/" + strconv.Itoa(os.Getpid())
	}
	d.owner = owner
	if err := d.openDeliveryLog(); err != nil {
		return nil, err
	}
	links, err := cfg.Tracking.Links(now)
	if err != nil {
		return nil, fmt.Errorf("tracking: %w", err)
	}
	twilioToken := cfg.Tracking.TwilioAuthToken.Value()
	if twilioToken == "" && cfg.Channels.SMS != nil {
		twilioToken = cfg.Channels.SMS.AuthToken.Value()
	}
	if err := d.openTracking(now, links, twilioToken); err != nil {
		return nil, err
	}
	d.trackingLn = deps.TrackingListener

	metrics, err := channels.NewMetrics(teeRegisterer{d.reg, d.live})
	if err != nil {
		return nil, fmt.Errorf("register channel metrics: %w", err)
	}
	// Before a request leaves, its campaign's ledger holds it as handed
	// (the in-doubt set after a crash). State kept in memory dies with the
	// process, so there the mark need not land first.
	handoff := channels.HandoffFunc(campaigns.HandOff)
	if d.redis == nil {
		handoff = campaigns.MarkHandedOff
	}
	names := make([]string, 0, len(deps.Channels))
	for name := range deps.Channels {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		spec := deps.Channels[name]
		pc := spec.Pool
		opts := []channels.PoolOption{channels.WithLogger(d.log), channels.WithMetrics(metrics), channels.WithFeedbackSink(d.feedback)}
		if pc.RatePerSecond > 0 {
			burst := max(pc.Burst, pc.BatchSize, 1)
			opts = append(opts, channels.WithAccountLimiter(rate.NewLimiter(rate.Limit(pc.RatePerSecond), burst)))
		}
		p, err := channels.NewWorkerPool(spec.Channel, channels.PoolConfig{
			Workers: pc.Workers, BatchSize: pc.BatchSize, QueueSize: pc.QueueSize, MaxAttempts: pc.MaxAttempts,
			BackoffBase: time.Duration(pc.BackoffBase), BackoffMax: time.Duration(pc.BackoffMax),
			SendTimeout: time.Duration(pc.SendTimeout),
			Outcomes:    d.outcomeSink(name, now),
			Handoff:     handoff,
		}, opts...)
		if err != nil {
			return nil, fmt.Errorf("build %s pool: %w", name, err)
		}
		d.pools[name] = p
		if d.queueSizes == nil {
			d.queueSizes = map[string]int{}
		}
		d.queueSizes[name] = pc.QueueSize
	}

	stateMetrics := newStateMetrics(d.reg)
	d.engine = campaigns.NewEngine(d.state, d.state, NewShardSource(d.shard).OnRing(d.ring), campaigns.NewPoolDispatcher(d.pools),
		campaigns.EngineConfig{
			Owner: owner, BatchSize: cfg.Engine.BatchSize, MaxOpenBatches: cfg.Engine.MaxOpenBatches,
			LeaseTTL: time.Duration(cfg.Engine.LeaseTTL), DrainTimeout: time.Duration(cfg.Engine.DrainTimeout),
			FlushInterval: time.Duration(cfg.Engine.LedgerFlushInterval), CrashLoopLimit: cfg.Engine.CrashLoopLimit,
			TemplateCeilings: cfg.Templates.Limits.Ceilings(),
			Shard:            d.ring.Shard, Shards: d.ring.Shards, RingVersion: d.ring.Version, Retained: retained,
		},
		campaigns.WithEngineClock(now), campaigns.WithEngineLogger(d.log),
		campaigns.WithFrequencyCaps(d.caps, cfg.Policies.CapRules()),
		campaigns.WithStateResetObserver(func(restored, lost int) {
			stateMetrics.resets.Inc()
			stateMetrics.restored.Add(float64(restored))
			// The flows this daemon holds go back too (a flow is a record
			// like a campaign; every daemon of a fleet holds all of them).
			if d.flows != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				n, err := d.flows.RestoreFlows(ctx)
				if err != nil {
					d.log.Error("write flows back to the state store", "error", err, "restored", n)
				} else {
					d.log.Warn("flows written back to the state store", "restored", n)
				}
			}
		}),
		campaigns.WithQuarantineObserver(func(string) { stateMetrics.quarantined.Inc() }),
		campaigns.WithRunObserver(func(id string, fresh bool) {
			if d.events != nil {
				d.events.Touch(id, fresh)
			}
		}))
	d.flows = campaigns.NewFlowEngine(d.flowStore, d.dedupOf(owner), d.delays, NewShardSource(d.shard).OnRing(d.ring), campaigns.NewPoolDispatcher(d.pools),
		campaigns.FlowConfig{Workers: cfg.Flows.Workers, QueueSize: cfg.Flows.QueueSize, MaxBatch: cfg.Flows.MaxBatch,
			TemplateCeilings: cfg.Templates.Limits.Ceilings(), Router: d.router},
		campaigns.WithEngineClock(now), campaigns.WithEngineLogger(d.log),
		campaigns.WithFrequencyCaps(d.caps, cfg.Policies.CapRules()))
	if err := migrateFlows(ctx, d.state, d.flowStore); err != nil {
		return nil, err
	}
	if err := d.flows.Load(ctx); err != nil {
		return nil, err
	}

	if deps.Events.Now == nil {
		deps.Events.Now = now
	}
	d.wireEvents(deps.Events)
	d.events.SetFlows(func() []campaigns.FlowStatus { return d.flows.ListFlows(context.Background()) })
	api := NewAPI(APIConfig{Token: cfg.Admin.Token.Value(), PublicMetrics: cfg.Admin.PublicMetrics, Events: d.events, Flows: countingFlows{d.flows, d.triggers.wrap("api", d.flows.Fire)}, TemplateLimits: cfg.Templates.Limits.Ceilings(),
		Messages: d.messagesHandler, Preview: d.engine},
		d.events.Track(d.engine), d.ready, d.reg, d.log)
	d.server = &http.Server{Handler: boundStateCalls(api, stateCallTimeout), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	d.server.RegisterOnShutdown(d.events.Close) // Shutdown waits for idle connections; streams never are
	d.listener = deps.Listener
	return d, nil
}

// Engine returns the campaign engine (the demo drives it in-process).
func (d *Daemon) Engine() *campaigns.Engine { return d.engine }

// Pools returns the channel pools by name.
func (d *Daemon) Pools() map[string]*channels.Pool { return d.pools }

// Registry returns the metrics registry.
func (d *Daemon) Registry() *prometheus.Registry { return d.reg }

// Shard returns the shard store.
func (d *Daemon) Shard() *shard.Store { return d.shard }

func (d *Daemon) ready(ctx context.Context) error {
	if d.draining.Load() {
		return errors.New("shutting down")
	}
	if !d.engine.Ready() {
		return errors.New("state store lost its data; writing campaigns back")
	}
	r, err := d.shard.Acquire()
	if err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	_ = r.Release()
	if d.redis != nil {
		if err := pingRedis(ctx, d.redis); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
	}
	return nil
}

// Run serves until ctx ends, then shuts down gracefully: it stops taking
// requests, stops campaign runs at their next batch (they stay running and
// resume from their checkpoint on the next start), drains the channel
// queues, and returns within Engine.ShutdownTimeout.
func (d *Daemon) Run(ctx context.Context) error {
	ln := d.listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", d.cfg.Admin.Listen); err != nil {
			return fmt.Errorf("listen for admin API: %w", err)
		}
	}
	if t := d.cfg.Admin.TLS; t != nil {
		tc, err := t.serverConfig()
		if err != nil {
			return fmt.Errorf("admin.tls: %w", err)
		}
		ln = tls.NewListener(ln, tc)
	} else if exposedWithoutTLS(ln.Addr()) {
		d.log.Warn("ADMIN API IS SERVED IN CLEAR TEXT BEYOND LOOPBACK: the bearer token and every campaign cross the network unencrypted; listen on 127.0.0.1 behind a TLS proxy", "listen", ln.Addr().String())
	}
	tln := d.trackingLn
	if d.tracking != nil && tln == nil {
		var err error
		if tln, err = net.Listen("tcp", d.cfg.Tracking.Listen); err != nil {
			_ = ln.Close()
			return fmt.Errorf("listen for the tracking endpoint: %w", err)
		}
	}
	for name, p := range d.pools {
		// Not ctx: a SIGTERM must not cancel sends in flight; shutdown()
		// drains the pools with its own deadline.
		if err := p.Start(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("start %s pool: %w", name, err)
		}
	}
	// Note the state store's epoch before anything runs: a store that
	// later comes back empty is told apart from one that was always new.
	if _, err := d.engine.CheckState(ctx); err != nil {
		d.log.Warn("read the state store's epoch", "error", err)
	}
	if err := d.engine.Start(ctx); err != nil {
		d.log.Error("resume campaigns", "error", err)
	}
	d.flows.Start(ctx)
	d.log.Info("notifyd serving", "admin", ln.Addr().String(), "shard", d.cfg.Shard.Path, "ring", d.ring.String(), "channels", len(d.pools))

	errc := make(chan error, 2)
	go func() {
		if err := d.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve admin API: %w", err)
		}
	}()
	if tln != nil {
		d.log.Info("tracking endpoint serving", "listen", tln.Addr().String(), "base_url", d.cfg.Tracking.BaseURL)
		go d.serveTracking(tln, errc)
	}
	bg, stopBg := context.WithCancel(ctx)
	defer stopBg()
	go func() {
		if err := d.shard.Run(bg, time.Duration(d.cfg.Shard.PollInterval)); err != nil && bg.Err() == nil {
			d.log.Error("shard watcher stopped", "error", err)
		}
	}()
	go d.tick(bg)
	go d.events.Run(bg)
	go d.exportLoop(bg)
	go d.engine.WatchState(bg, time.Second)
	if d.intake != nil {
		go intakeLoop(bg, d.intake, d.intakeRequest, IntakeConfig{Consumer: d.owner}, d.log)
	}
	if d.shardIntake != nil {
		go ServeShardStream(bg, d.shardIntake, d.flows, d.intakeReady, IntakeConfig{Consumer: d.owner, Triggers: d.triggers}, d.log.With("shard", d.ring.Shard))
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	stopBg() // intake first: nothing new starts while in-flight work drains
	return errors.Join(runErr, d.shutdown())
}

// tick starts scheduled campaigns when they are due.
func (d *Daemon) tick(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.engine.Tick(ctx); err != nil {
				d.log.Warn("start due campaigns", "error", err)
			}
			if d.ring.Shards > 1 {
				if err := d.flows.Sync(ctx); err != nil {
					d.log.Warn("pick up flows defined through other daemons", "error", err)
				}
			}
		}
	}
}

func (d *Daemon) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(d.cfg.Engine.ShutdownTimeout))
	defer cancel()
	d.log.Info("shutting down: draining in-flight work", "deadline", time.Duration(d.cfg.Engine.ShutdownTimeout))
	// The admin port keeps answering while the daemon drains (/readyz says
	// 503, so load balancers move on); it closes last.
	d.draining.Store(true)
	var errs []error
	if err := d.flows.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := d.engine.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	for name, p := range d.pools {
		if err := p.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain %s pool: %w", name, err))
		}
	}
	if d.tracking != nil {
		// After the pools: status callbacks of the last messages still land.
		if err := d.tracking.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop tracking endpoint: %w", err))
		}
	}
	if err := d.closeDeliveryLog(ctx); err != nil {
		errs = append(errs, err)
	}
	if f, ok := d.feedback.(interface{ Flush(context.Context) error }); ok {
		if err := f.Flush(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flush dead-address feedback: %w", err))
		}
	}
	if err := d.server.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stop admin API: %w", err))
	}
	if err := d.shard.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close shard: %w", err))
	}
	for _, st := range d.retained {
		if err := st.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close retained shard: %w", err))
		}
	}
	if d.redis != nil {
		_ = d.redis.Close()
	}
	return errors.Join(errs...)
}

// stateCallTimeout bounds an API request's calls to the state store: a
// stalled Redis answers 503 with Retry-After within about a second instead
// of holding the caller for the client's own timeouts.
const stateCallTimeout = time.Second

// boundStateCalls gives every /v1/ request but the event stream a deadline.
func boundStateCalls(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") && r.URL.Path != "/v1/events" {
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			r = r.WithContext(ctx)
		}
		h.ServeHTTP(w, r)
	})
}

// stateMetrics count what the engine does about its state store.
type stateMetricSet struct {
	resets, restored, quarantined prometheus.Counter
}

func newStateMetrics(reg prometheus.Registerer) stateMetricSet {
	m := stateMetricSet{
		resets: prometheus.NewCounter(prometheus.CounterOpts{Name: "notifyd_state_resets_total",
			Help: "Times the state store was found empty (epoch marker gone) and this daemon wrote its campaigns back."}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{Name: "notifyd_state_restored_campaigns_total",
			Help: "Campaigns written back to a state store that lost them."}),
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{Name: "notifyd_campaigns_quarantined_total",
			Help: "Campaigns failed with reason crash_loop: their daemon died running them too often in a row."}),
	}
	reg.MustRegister(m.resets, m.restored, m.quarantined)
	return m
}

// migrateFlows copies flow records kept among the campaigns (before flows
// were a kind of their own) into the flow store, once: a flow already there
// is left alone. The old records stay where they were; the campaign engine
// skips them.
func migrateFlows(ctx context.Context, from, to campaigns.CampaignStore) error {
	after := campaigns.FlowPrefix
	for {
		recs, err := from.List(ctx, after, 200)
		if err != nil {
			return fmt.Errorf("migrate flows: %w", err)
		}
		for _, rec := range recs {
			after = rec.ID
			if !strings.HasPrefix(rec.ID, campaigns.FlowPrefix) {
				return nil
			}
			// A conflicting or concurrent copy: the flow store wins.
			if _, err := campaigns.RecreateRecord(ctx, to, rec.ID, rec.Definition, rec.Status); err != nil && !errors.Is(err, campaigns.ErrConflict) {
				return fmt.Errorf("migrate flow %s: %w", rec.ID, err)
			}
		}
		if len(recs) < 200 {
			return nil
		}
	}
}
