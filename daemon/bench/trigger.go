package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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
	// Provider is "webhook" (default: the real webhook sender against the
	// in-process webhook sandbox, whose own CPU shares the 2 cores) or
	// "noop" (accepts at once: what notifyd alone adds).
	Provider string
	CacheDir string
	Out      io.Writer
	Log      *slog.Logger
}

// TriggerResult is what the benchmark measured.
type TriggerResult struct {
	Fired, Accepted, Sent int
	Elapsed               time.Duration
	RatePerSec            float64 // triggers fired per second, sustained
	P50, P99, P999, Max   time.Duration
	Dedup                 string
	Provider              string
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
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	path, err := cachedShard(opts.CacheDir, opts.Members, opts.Out)
	if err != nil {
		return nil, err
	}
	store, err := shard.OpenStore(path)
	if err != nil {
		return nil, err
	}
	defer store.Close()

	res := &TriggerResult{Dedup: "memory"}
	mem := memstate.New()
	var dedup campaigns.DedupLog = mem.Dedup("bench")
	if opts.RedisURL != "" || len(opts.RedisCluster) > 0 {
		var rdb redis.UniversalClient
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
		defer cleanup(context.WithoutCancel(ctx), rdb, prefix)
		rs, err := redisstate.New(rdb, redisstate.WithPrefix(prefix))
		if err != nil {
			return nil, err
		}
		dedup = rs.Dedup("bench")
	}

	hook, err := sandbox.NewWebhook(sandbox.WebhookOptions{Secret: "bench-secret", RecorderLimit: -1})
	if err != nil {
		return nil, err
	}
	defer hook.Close()
	sender, err := webhook.New(webhook.Config{URL: hook.URL(), Secret: "bench-secret", MaxConnsPerHost: 64, AllowNetworks: []string{"127.0.0.0/8"}}, webhook.WithLogger(opts.Log))
	if err != nil {
		return nil, err
	}
	defer sender.Close()
	var inner channels.Channel = sender
	switch opts.Provider {
	case "", "webhook":
		res.Provider = "webhook sandbox"
	case "noop":
		inner, res.Provider = &noop{name: channels.Webhook, accepted: new(atomic.Int64), results: make([]channels.Result, 1000)}, "no-op"
	default:
		return nil, fmt.Errorf("unknown provider %q: want webhook or noop", opts.Provider)
	}
	ch := &stamped{Channel: inner, samples: make([]time.Duration, 0, opts.Rate*int(opts.Duration/time.Second+1))}
	pool, err := channels.NewWorkerPool(ch, channels.PoolConfig{Workers: 32, BatchSize: 1, QueueSize: 50_000,
		Outcomes: channels.OutcomeFunc(campaigns.RouteOutcomes)}, channels.WithLogger(opts.Log))
	if err != nil {
		return nil, err
	}
	if err := pool.Start(ctx); err != nil {
		return nil, err
	}
	defer pool.Close(context.WithoutCancel(ctx))
	flows := campaigns.NewFlowEngine(mem.Flows(), dedup, mem.Delays(), daemon.NewShardSource(store), campaigns.NewPoolDispatcher(map[string]*channels.Pool{channels.Webhook: pool}),
		campaigns.FlowConfig{}, campaigns.WithEngineLogger(opts.Log))
	flows.Start(ctx)
	defer flows.Close(context.WithoutCancel(ctx))
	flow := `{"id":"bench","trigger":{"event":"purchase"},"channels":["webhook"],"reentry":"0s",
	  "content":{"webhook":{"url":"` + hook.URL() + `/in","body":{"user":"{{ profile.id }}","order":"{{ event.order }}","tier":"{{ profile.tier | default: 'none' }}"}}}}`
	if _, _, err := flows.CreateFlow(ctx, []byte(flow)); err != nil {
		return nil, err
	}

	fmt.Fprintf(opts.Out, "firing %d triggers/s for %s (dedup in %s)...\n", opts.Rate, opts.Duration, res.Dedup)
	rng := rand.New(rand.NewPCG(1, 2))
	const tick = 5 * time.Millisecond
	per := opts.Rate * int(tick) / int(time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
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
			out, err := flows.Fire(ctx, batch)
			if err != nil {
				return nil, err
			}
			res.Fired += len(batch)
			for _, r := range out {
				if r.Status == "accepted" {
					res.Accepted++
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
	res.RatePerSec = float64(res.Fired) / res.Elapsed.Seconds()
	// Let the last triggers reach the provider.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ch.mu.Lock()
		n := len(ch.samples)
		ch.mu.Unlock()
		if n >= res.Accepted {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	ch.mu.Lock()
	samples := slices.Clone(ch.samples)
	ch.mu.Unlock()
	// Latency of triggers that failed would flatter the run: fail loudly
	// unless every accepted trigger was sent (a duplicate re-fire is fine).
	st, err := flows.GetFlow(ctx, "bench")
	if err != nil {
		return nil, err
	}
	for ch, reasons := range st.Counts {
		for reason, n := range reasons {
			if reason != "sent" && reason != "duplicate" && n > 0 {
				return nil, fmt.Errorf("%d triggers ended %s on %s (counts %v): the figures would not be latencies of deliveries", n, reason, ch, st.Counts)
			}
		}
	}
	if res.Accepted < res.Fired || len(samples) < res.Accepted {
		return nil, fmt.Errorf("%d triggers fired, %d accepted, %d reached the provider (counts %v)", res.Fired, res.Accepted, len(samples), st.Counts)
	}
	slices.Sort(samples)
	q := func(p float64) time.Duration { return samples[min(len(samples)-1, int(p*float64(len(samples))))] }
	res.Sent = len(samples)
	res.P50, res.P99, res.P999, res.Max = q(0.50), q(0.99), q(0.999), samples[len(samples)-1]
	return res, nil
}
