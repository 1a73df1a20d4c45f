package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/channels/webhook"
	"github.com/notifyd/notifyd/daemon"
	"github.com/notifyd/notifyd/store/memstate"
	"github.com/notifyd/notifyd/store/redisstate"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// TriggerOptions configure the trigger-latency benchmark.
type TriggerOptions struct {
	Rate     int           // triggers per second (default 10,000)
	Duration time.Duration // how long to sustain it (default 10s)
	Members  int           // shard size (default 100,000)
	RedisURL string        // dedup in Redis when set, else in memory
	// RedisCluster are seed nodes of a Redis Cluster for the dedup claims
	// (instead of RedisURL): one round trip per node per batch.
	RedisCluster []string
	// Shards > 1 runs a fleet of that many daemons in this process; every
	// trigger is fired at shard 0's, which forwards the others' (needs Redis).
	Shards int
	// Provider is "webhook" (default: the real webhook sender against the
	// in-process webhook sandbox, whose own CPU shares the 2 cores) or
	// "noop" (accepts at once: what notifyd alone adds).
	Provider string
	CacheDir string
	Out      io.Writer
	Log      *slog.Logger
}

// TriggerResult is what the benchmark measured, from each trigger's arrival
// at the first daemon to its provider request.
type TriggerResult struct {
	Fired, Accepted, Sent int
	Elapsed               time.Duration
	RatePerSec            float64 // triggers fired per second, sustained
	P50, P99, P999, Max   time.Duration
	Dedup                 string
	Provider              string
	// With Shards > 1: Forwarded triggers went through their shard's
	// stream; Local and Routed split the latency by path.
	Shards        int
	Forwarded     int
	Local, Routed struct{ P50, P99 time.Duration }
	// Redis is the machine's own floor, measured before the run: one
	// pipelined SET NX per 5 ms tick carrying that tick's triggers' keys,
	// spread over every node as dedup claims are. A trigger's latency
	// includes at least one such round trip (two when routed), so on a
	// machine where Redis nodes share the cores the p99 is read against it.
	Redis struct{ P50, P99 time.Duration }
	// RedisDuring is a probe during the run: every 5 ms, one pipeline of
	// a SET NX per node (keys spread over the slots), timed from this
	// process. Its tail is what Redis and the machine's scheduling give
	// any round trip while the daemons work: a trigger's latency holds two
	// or three such round trips in sequence.
	RedisDuring struct{ P50, P99 time.Duration }
	// AllocsPerTrigger and BytesPerTrigger are the process's heap
	// allocations over the run divided by triggers fired, and GCs the
	// collections that ran meanwhile: on two shared cores each collection's
	// concurrent mark steals the CPU a trigger in flight was waiting for, so
	// fewer allocations per trigger is fewer late triggers.
	AllocsPerTrigger, BytesPerTrigger float64
	GCs                               uint32
	GCPercent                         int
}

// stamped records, for each message a provider is about to be asked to
// send, the time since its trigger arrived: the latency users feel, up to
// the request leaving notifyd.
type stamped struct {
	channels.Channel
	mu      sync.Mutex
	samples []time.Duration
}

func (s *stamped) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	now := time.Now()
	s.mu.Lock()
	for _, m := range batch {
		if !m.Arrived.IsZero() {
			s.samples = append(s.samples, now.Sub(m.Arrived))
		}
	}
	s.mu.Unlock()
	return s.Channel.Send(ctx, batch)
}

// Trigger fires opts.Rate triggers per second for opts.Duration at a flow
// whose messages go through the real webhook sender to the webhook sandbox,
// and reports the latency from each trigger's arrival to its provider request.
// With opts.Shards > 1, that many daemons (flow engines, pools, senders) run
// in this process, one per shard of a Jump ring over opts.Members users; every
// trigger is fired at shard 0's daemon, which forwards those of other shards'
// users through their shard's stream in Redis, as a load balancer in front of
// a fleet would make it.
func Trigger(ctx context.Context, opts TriggerOptions) (*TriggerResult, error) {
	if opts.Rate <= 0 {
		opts.Rate = 10_000
	}
	if opts.Duration <= 0 {
		opts.Duration = 10 * time.Second
	}
	if opts.Members <= 0 {
		opts.Members = 100_000
	}
	if opts.Shards <= 0 {
		opts.Shards = 1
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	redisOn := opts.RedisURL != "" || len(opts.RedisCluster) > 0
	if opts.Shards > 1 && !redisOn {
		return nil, errors.New("bench trigger --shards needs Redis, where the fleet's shard streams are: set --redis or --redis-cluster")
	}

	res := &TriggerResult{Dedup: "memory", Shards: opts.Shards}
	mem := memstate.New()
	var rs *redisstate.Store
	var rdb redis.UniversalClient
	probePrefix := ""
	if redisOn {
		if len(opts.RedisCluster) > 0 {
			rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: opts.RedisCluster})
			res.Dedup = "redis cluster"
		} else {
			ropt, err := redis.ParseURL(opts.RedisURL)
			if err != nil {
				return nil, fmt.Errorf("parse Redis URL: not a valid redis:// URL")
			}
			rdb = redis.NewClient(ropt)
			res.Dedup = "redis"
		}
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return nil, fmt.Errorf("connect to Redis: %w", err)
		}
		prefix := "notifyd-bench:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
		probePrefix = prefix + "probe:"
		defer cleanup(context.WithoutCancel(ctx), rdb, prefix)
		var err error
		if rs, err = redisstate.New(rdb, redisstate.WithPrefix(prefix)); err != nil {
			return nil, err
		}
		if res.Redis.P50, res.Redis.P99, err = redisFloor(ctx, rdb, prefix, opts.Rate, min(opts.Duration, 3*time.Second)); err != nil {
			return nil, err
		}
	}

	hook, err := sandbox.NewWebhook(sandbox.WebhookOptions{Secret: "bench-secret", RecorderLimit: -1})
	if err != nil {
		return nil, err
	}
	defer hook.Close()
	switch opts.Provider {
	case "", "webhook":
		res.Provider = "webhook sandbox"
	case "noop":
		res.Provider = "no-op"
	default:
		return nil, fmt.Errorf("unknown provider %q: want webhook or noop", opts.Provider)
	}
	flow := `{"id":"bench","trigger":{"event":"purchase"},"channels":["webhook"],"reentry":"0s",
	  "content":{"webhook":{"url":"` + hook.URL() + `/in","body":{"user":"{{ profile.id }}","order":"{{ event.order }}","tier":"{{ profile.tier | default: 'none' }}"}}}}`

	// One daemon per shard: its shard file, its sender, pool and flow engine.
	stamps := make([]*stamped, opts.Shards)
	var stores []*shard.Store
	engines := make([]*campaigns.FlowEngine, opts.Shards)
	for k := range opts.Shards {
		path, ring := "", shard.RingInfo{}
		if opts.Shards == 1 {
			path, err = cachedShard(opts.CacheDir, opts.Members, opts.Out)
		} else {
			ring = shard.RingInfo{Version: 1, Shard: k, Shards: opts.Shards, Scheme: shard.RingJump}
			path, err = cachedFleetShard(opts.CacheDir, opts.Members, k, opts.Shards, opts.Out)
		}
		if err != nil {
			return nil, err
		}
		// As `notifyd serve` opens it: every block verified ahead of use.
		store, err := shard.OpenStore(path, shard.WithWarmUp())
		if err != nil {
			return nil, err
		}
		defer store.Close()
		stores = append(stores, store)
		sender, err := webhook.New(webhook.Config{URL: hook.URL(), Secret: "bench-secret", MaxConnsPerHost: 64, AllowNetworks: []string{"127.0.0.0/8"}}, webhook.WithLogger(opts.Log))
		if err != nil {
			return nil, err
		}
		defer sender.Close()
		var inner channels.Channel = sender
		if opts.Provider == "noop" {
			inner = &noop{name: channels.Webhook, accepted: new(atomic.Int64), results: make([]channels.Result, 1000)}
		}
		stamps[k] = &stamped{Channel: inner, samples: make([]time.Duration, 0, opts.Rate*int(opts.Duration/time.Second+1)/opts.Shards+1000)}
		pool, err := channels.NewWorkerPool(stamps[k], channels.PoolConfig{Workers: 32, BatchSize: 1, QueueSize: 50_000,
			Outcomes: channels.OutcomeFunc(campaigns.RouteOutcomes)}, channels.WithLogger(opts.Log))
		if err != nil {
			return nil, err
		}
		if err := pool.Start(ctx); err != nil {
			return nil, err
		}
		defer pool.Close(context.WithoutCancel(ctx))
		var dedup campaigns.DedupLog = mem.Dedup("bench-" + strconv.Itoa(k))
		cfg := campaigns.FlowConfig{}
		var src campaigns.MemberSource = daemon.NewShardSource(store)
		if rs != nil {
			dedup = rs.Dedup("bench-" + strconv.Itoa(k))
		}
		if opts.Shards > 1 {
			src = daemon.NewShardSource(store).OnRing(ring)
			cfg.Router = daemon.NewFleetRouter(ring, rs)
		}
		engines[k] = campaigns.NewFlowEngine(memstate.New().Flows(), dedup, mem.Delays(), src,
			campaigns.NewPoolDispatcher(map[string]*channels.Pool{channels.Webhook: pool}), cfg, campaigns.WithEngineLogger(opts.Log))
		engines[k].Start(ctx)
		defer engines[k].Close(context.WithoutCancel(ctx))
		if _, _, err := engines[k].CreateFlow(ctx, []byte(flow)); err != nil {
			return nil, err
		}
		if opts.Shards > 1 {
			sctx, stop := context.WithCancel(ctx)
			defer stop()
			go daemon.ServeShardStream(sctx, rs.ForShard(k), engines[k], nil,
				daemon.IntakeConfig{Consumer: "bench-" + strconv.Itoa(k), Block: time.Second}, opts.Log)
		}
	}

	// A fleet serving triggers has long finished its warm-up; a daemon just
	// started serves during it (docs/shard-format.md, Warm-up).
	warmStart := time.Now()
	for _, st := range stores {
		if _, err := st.WaitWarm(ctx); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(opts.Out, "shards warmed (every block verified) %v after the daemons started\n", time.Since(warmStart).Round(time.Millisecond))
	fmt.Fprintf(opts.Out, "firing %d triggers/s for %s at shard 0 of %d (dedup in %s)...\n", opts.Rate, opts.Duration, opts.Shards, res.Dedup)
	rng := rand.New(rand.NewPCG(1, 2))
	per := opts.Rate * int(tickEvery) / int(time.Second)
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	var probeDone chan []time.Duration
	if rs != nil {
		probeDone = make(chan []time.Duration, 1)
		pctx, stopProbe := context.WithCancel(ctx)
		defer stopProbe()
		go func() { probeDone <- probeRedis(pctx, rdb, probePrefix, opts.Duration) }()
	}
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	batch := make([]campaigns.Trigger, 0, max(10*per, 100))
	for n := 0; time.Since(start) < opts.Duration; n++ {
		// Catch up if a tick was late, so the rate is sustained on average.
		due := int(time.Since(start)*time.Duration(opts.Rate)/time.Second) - res.Fired
		batch = batch[:0]
		for i := range min(max(due, 0), max(10*per, 100)) {
			batch = append(batch, campaigns.Trigger{
				Event: "purchase", UserID: shardgen.ID(rng.Uint64N(uint64(opts.Members))),
				Properties:     map[string]any{"order": n*per + i},
				IdempotencyKey: "o-" + strconv.Itoa(res.Fired+i),
			})
		}
		if len(batch) > 0 {
			out, err := engines[0].Fire(ctx, batch)
			if err != nil {
				return nil, err
			}
			res.Fired += len(batch)
			for _, r := range out {
				switch r.Status {
				case "accepted":
					res.Accepted++
				case "forwarded":
					res.Accepted++
					res.Forwarded++
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	res.Elapsed = time.Since(start)
	if probeDone != nil {
		res.RedisDuring.P50, res.RedisDuring.P99, _, _ = quantiles(<-probeDone)
	}
	res.RatePerSec = float64(res.Fired) / res.Elapsed.Seconds()
	count := func() int {
		n := 0
		for _, s := range stamps {
			s.mu.Lock()
			n += len(s.samples)
			s.mu.Unlock()
		}
		return n
	}
	// Let the last triggers reach the provider.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && count() < res.Accepted {
		time.Sleep(10 * time.Millisecond)
	}
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	if res.Fired > 0 {
		res.AllocsPerTrigger = float64(ms1.Mallocs-ms0.Mallocs) / float64(res.Fired)
		res.BytesPerTrigger = float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(res.Fired)
	}
	res.GCs = ms1.NumGC - ms0.NumGC
	res.GCPercent = debug.SetGCPercent(-1)
	debug.SetGCPercent(res.GCPercent)
	// Latency of triggers that failed would flatter the run: fail loudly
	// unless every accepted trigger was sent (a duplicate re-fire is fine).
	for k, fe := range engines {
		st, err := fe.GetFlow(ctx, "bench")
		if err != nil {
			return nil, err
		}
		for ch, reasons := range st.Counts {
			for reason, n := range reasons {
				if reason != "sent" && reason != "duplicate" && n > 0 {
					return nil, fmt.Errorf("shard %d: %d triggers ended %s on %s (counts %v): the figures would not be latencies of deliveries", k, n, reason, ch, st.Counts)
				}
			}
		}
	}
	var all, local, routed []time.Duration
	for k, s := range stamps {
		s.mu.Lock()
		all = append(all, s.samples...)
		if k == 0 {
			local = append(local, s.samples...)
		} else {
			routed = append(routed, s.samples...)
		}
		s.mu.Unlock()
	}
	if res.Accepted < res.Fired || len(all) < res.Accepted {
		return nil, fmt.Errorf("%d triggers fired, %d accepted (%d forwarded), %d reached the provider", res.Fired, res.Accepted, res.Forwarded, len(all))
	}
	res.Sent = len(all)
	res.P50, res.P99, res.P999, res.Max = quantiles(all)
	if opts.Shards > 1 {
		res.Local.P50, res.Local.P99, _, _ = quantiles(local)
		res.Routed.P50, res.Routed.P99, _, _ = quantiles(routed)
	}
	return res, nil
}

// redisFloor times what Redis alone costs at the bench's cadence: every
// 5 ms, one pipeline of SET NX PX (one key per trigger of the tick, keys
// spread over the slots; a cluster client sends each node its part in
// parallel), for d. It returns the round trips' p50 and p99.
func redisFloor(ctx context.Context, rdb redis.UniversalClient, prefix string, rate int, d time.Duration) (p50, p99 time.Duration, err error) {
	samples, err := timePipelines(ctx, rdb, prefix+"floor:", max(rate*int(tickEvery)/int(time.Second), 1), time.Minute, d)
	if err != nil {
		return 0, 0, fmt.Errorf("measure Redis round trips: %w", err)
	}
	p50, p99, _, _ = quantiles(samples)
	return p50, p99, nil
}

// probeRedis is the probe beside the run (TriggerResult.RedisDuring): one
// small pipeline per tick, three keys over the slots, so most ticks reach
// every master of three. An error ends it with what it has.
func probeRedis(ctx context.Context, rdb redis.UniversalClient, prefix string, d time.Duration) []time.Duration {
	samples, _ := timePipelines(ctx, rdb, prefix, 3, time.Second, d)
	return samples
}

// tickEvery is the cadence of the bench's triggers and of its Redis timings.
const tickEvery = 5 * time.Millisecond

// timePipelines sends, every tickEvery for d, one pipeline of perTick
// SET NX (fresh keys under prefix, expiring after ttl) and returns each
// pipeline's round trip, with the first error.
func timePipelines(ctx context.Context, rdb redis.UniversalClient, prefix string, perTick int, ttl, d time.Duration) ([]time.Duration, error) {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	var samples []time.Duration
	n := 0
	for start := time.Now(); time.Since(start) < d; {
		pipe := rdb.Pipeline()
		for range perTick {
			pipe.SetNX(ctx, prefix+strconv.Itoa(n), "1", ttl)
			n++
		}
		t0 := time.Now()
		if _, err := pipe.Exec(ctx); err != nil {
			return samples, err
		}
		samples = append(samples, time.Since(t0))
		select {
		case <-ctx.Done():
			return samples, ctx.Err()
		case <-t.C:
		}
	}
	return samples, nil
}

// quantiles sorts samples and returns p50, p99, p99.9 and the maximum.
func quantiles(samples []time.Duration) (p50, p99, p999, maxd time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	q := func(p float64) time.Duration { return samples[min(len(samples)-1, int(p*float64(len(samples))))] }
	return q(0.50), q(0.99), q(0.999), samples[len(samples)-1]
}
