package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/daemon"
	"github.com/notifyd/notifyd/store/redisstate"
	"github.com/notifyd/notifyd/store/shard"
)

// FleetOptions configure the fleet benchmark.
type FleetOptions struct {
	Members  int   // population over all shards (default 300,000)
	Shards   []int // fleet sizes to run, in order (default 1, 2, 4)
	RedisURL string
	CacheDir string
	Out      io.Writer
	Log      *slog.Logger
}

// FleetRun is one fleet size's result.
type FleetRun struct {
	Shards     int
	Messages   int64
	Elapsed    time.Duration
	MsgsPerSec float64
	PerShard   []float64 // msgs/s each shard's daemon sent
	// CPUPerMsg is the process's CPU time (user+system) per message: the
	// daemons share this process, so with more shards the same 2 cores do the
	// same work; flat CPU per message is what makes the fleet linear on hosts
	// of its own.
	CPUPerMsg time.Duration
}

// Fleet runs one campaign over a population split into N shards, one engine
// per shard in this process (as N daemons would run on N hosts), all on one
// Redis, for each N in opts.Shards.
func Fleet(ctx context.Context, opts FleetOptions) ([]FleetRun, error) {
	if opts.Members <= 0 {
		opts.Members = 300_000
	}
	if len(opts.Shards) == 0 {
		opts.Shards = []int{1, 2, 4}
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.RedisURL == "" {
		return nil, errors.New("bench fleet needs Redis: set --redis or REDIS_URL (e.g. redis://127.0.0.1:6379/15)")
	}
	ropt, err := redis.ParseURL(opts.RedisURL)
	if err != nil {
		return nil, errors.New("parse Redis URL: not a valid redis:// URL")
	}
	var out []FleetRun
	for _, n := range opts.Shards {
		if n < 1 {
			return nil, fmt.Errorf("bench fleet: shard count %d must be at least 1", n)
		}
		r, err := fleetRun(ctx, opts, ropt, n)
		if err != nil {
			return nil, fmt.Errorf("fleet of %d: %w", n, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func fleetRun(ctx context.Context, opts FleetOptions, ropt *redis.Options, n int) (FleetRun, error) {
	prefix := "notifyd-bench-fleet:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	admin := redis.NewClient(ropt)
	defer admin.Close()
	defer cleanup(context.WithoutCancel(ctx), admin, prefix)
	sent := make([]atomic.Int64, n)
	engines := make([]*campaigns.Engine, n)
	for k := range n {
		path, err := cachedFleetShard(opts.CacheDir, opts.Members, k, n, opts.Out)
		if err != nil {
			return FleetRun{}, err
		}
		store, err := shard.OpenStore(path)
		if err != nil {
			return FleetRun{}, err
		}
		defer store.Close()
		rdb := redis.NewClient(ropt) // each daemon has its own connections
		defer rdb.Close()
		state, err := redisstate.New(rdb, redisstate.WithPrefix(prefix))
		if err != nil {
			return FleetRun{}, err
		}
		pools := map[string]*channels.Pool{}
		for _, name := range []string{channels.APNs, channels.Email, channels.Webhook} {
			p, err := channels.NewWorkerPool(&noop{name: name, accepted: &sent[k], results: make([]channels.Result, 1000)},
				channels.PoolConfig{Workers: 1, BatchSize: 1000, QueueSize: 100_000, Outcomes: channels.OutcomeFunc(campaigns.RouteOutcomes),
					Handoff: channels.HandoffFunc(campaigns.HandOff)},
				channels.WithLogger(opts.Log))
			if err != nil {
				return FleetRun{}, err
			}
			if err := p.Start(ctx); err != nil {
				return FleetRun{}, err
			}
			defer p.Close(context.WithoutCancel(ctx))
			pools[name] = p
		}
		ring := shard.RingInfo{Version: 1, Shard: k, Shards: n, Scheme: shard.RingJump}
		// The engine's defaults, as serve runs it (1,000-member batches, 4
		// open). The 2,000 × 8 this bench used before kept four times the
		// messages in flight per daemon: at N=4 their envelopes no longer
		// fitted the two cores' caches, and CPU per message grew 18–23%
		// over N=1 (10% at most with the defaults; N=1 itself 1.48 → 1.42 µs).
		engines[k] = campaigns.NewEngine(state, state, daemon.NewShardSource(store).OnRing(ring), campaigns.NewPoolDispatcher(pools),
			campaigns.EngineConfig{Owner: "bench-" + strconv.Itoa(k), Shard: k, Shards: n, RingVersion: 1},
			campaigns.WithEngineLogger(opts.Log))
		defer engines[k].Close(context.WithoutCancel(ctx))
	}
	id := "fleet-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(opts.Out, "fleet of %d: sending campaign %s to %d members...\n", n, id, opts.Members)
	cpu0 := processCPU()
	start := time.Now()
	if _, _, err := engines[0].Create(ctx, []byte(fmt.Sprintf(fanoutCampaign, id))); err != nil {
		return FleetRun{}, fmt.Errorf("create campaign: %w", err)
	}
	for _, e := range engines[1:] {
		if err := e.Tick(ctx); err != nil { // as each daemon's tick would
			return FleetRun{}, err
		}
	}
	for _, e := range engines {
		if err := e.Wait(ctx, id); err != nil {
			return FleetRun{}, err
		}
	}
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	st, err := engines[0].Get(ctx, id)
	if err != nil {
		return FleetRun{}, err
	}
	if st.Status != campaigns.StatusCompleted {
		return FleetRun{}, fmt.Errorf("campaign ended %s (shards %+v)", st.Status, st.Shards)
	}
	r := FleetRun{Shards: n, Elapsed: elapsed}
	for k := range sent {
		m := sent[k].Load()
		r.Messages += m
		r.PerShard = append(r.PerShard, float64(m)/elapsed.Seconds())
	}
	if r.Messages == 0 {
		return FleetRun{}, errors.New("no message was sent")
	}
	r.MsgsPerSec = float64(r.Messages) / elapsed.Seconds()
	r.CPUPerMsg = cpu / time.Duration(r.Messages)
	return r, nil
}

// cachedFleetShard generates (once) shard k of n of a population of members:
// the generator's users whom the Jump ring gives to shard k.
func cachedFleetShard(dir string, members, k, n int, out io.Writer) (string, error) {
	return cachedShardOf(dir, members, &shard.RingInfo{Version: 1, Shard: k, Shards: n, Scheme: shard.RingJump}, out)
}
