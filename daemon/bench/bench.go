// Package bench runs notifyd's end-to-end benchmarks and reports them as
// ratios against the machine's own limits measured in the same run: absolute
// rates on a shared machine are noise, a ratio to what the same Redis does
// for a bare client is not.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/daemon"
	"github.com/notifyd/notifyd/store/deliverylog"
	"github.com/notifyd/notifyd/store/redisstate"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// FanoutOptions configure the fan-out benchmark.
type FanoutOptions struct {
	Members  int    // segment size (default 1,000,000)
	RedisURL string // one Redis node; this or RedisClusterAddrs is required: state is Redis, as in production
	// RedisClusterAddrs are seed nodes (host:port) of a Redis Cluster.
	RedisClusterAddrs []string
	// Stall fails the run when no message reaches a channel for this long
	// (default 30s): a Redis whose calls fail (MOVED, CROSSSLOT, outage)
	// would otherwise keep the campaign running and the benchmark waiting.
	Stall time.Duration
	// CacheDir keeps generated shards between runs (default $TMPDIR/notifyd-bench).
	CacheDir string
	Out      io.Writer
	Log      *slog.Logger
	// DeliveryLogDir, when set, records every outcome in a delivery log
	// there (fsync interval, default address modes), as the daemon does.
	DeliveryLogDir string
	// Caps checks a frequency cap of 3 messages per user per day over all
	// channels on every message (issue 14's benchmark).
	Caps bool
}

// FanoutResult is what the benchmark measured.
type FanoutResult struct {
	Messages    int64
	Elapsed     time.Duration
	MsgsPerSec  float64
	SetNXPerSec float64
	// SetNX is the baseline with its split over the nodes.
	SetNX SetNXStats
	// Backend says what the state ran on ("redis node", "redis cluster (3 masters)").
	Backend string
	Ratio   float64
	HeapMiB float64 // peak live heap while sending
	// RedisPeakBytes is the peak size of the keys the pipeline keeps in Redis
	// while sending (MEMORY USAGE over its prefix); RedisBytesPerMsg divides it by Messages.
	RedisPeakBytes   int64
	RedisBytesPerMsg float64
	// InFlight is the ledger's window in messages (max_open_batches ×
	// batch_size members × messages per member); RedisBytesPerInFlight is
	// the peak divided by it: what the per-message ledger costs while open.
	InFlight              int64
	RedisBytesPerInFlight float64
	// RedisFinalBytes is what the campaign's keys hold once it completed
	// (checkpoint, counts, record); RedisBytesPerDone divides it by Messages.
	RedisFinalBytes   int64
	RedisBytesPerDone float64
	Counts            map[string]map[string]int64
	ShardMembers      uint64
	// LogBytes is the delivery log's size on disk after the run (with DeliveryLogDir).
	LogBytes int64
	// CapBytes is what the frequency-cap keys hold after the run (with
	// Caps), CapUsers the users they cover.
	CapBytes int64
	CapUsers int64
	// RedisCPU is the CPU time the Redis servers used while sending (INFO
	// cpu): the run's own only on a Redis nothing else uses.
	RedisCPU time.Duration
}

// noop accepts every message at once: the benchmark measures notifyd, not a provider.
type noop struct {
	name     string
	accepted *atomic.Int64
	results  []channels.Result
}

func (n *noop) Name() string { return n.name }

func (n *noop) Send(_ context.Context, batch []*channels.Message) []channels.Result {
	n.accepted.Add(int64(len(batch)))
	if len(batch) <= len(n.results) {
		return n.results[:len(batch)]
	}
	return make([]channels.Result, len(batch))
}

const fanoutCampaign = `{
  "id": "%s",
  "segment": "all",
  "channels": ["apns", "email", "webhook"],
  "content": {
    "push": {"title": "Hi {{ profile.first_name | default: 'there' }}", "body": "Your {{ profile.tier | default: 'member' }} perks in {{ profile.city | default: 'town' }}"},
    "email": {"from": "shop@notifyd.test", "subject": "{{ profile.first_name | default: 'Friend' }}, news", "html": "<p>Hello {{ profile.first_name }}</p>", "text": "Hello {{ profile.first_name }}"},
    "webhook": {"url": "https://hooks.notifyd.test/in", "body": {"user": "{{ profile.id }}", "tier": "{{ profile.tier | default: 'none' }}"}}
  }
}`

// Fanout sends one campaign (push + email + webhook content) to a segment of
// opts.Members through the real pipeline (shard mapping, templates, Redis
// progress, worker pools) into no-op channels, and measures the same Redis's
// bare pipelined SET NX rate in the same run.
func Fanout(ctx context.Context, opts FanoutOptions) (*FanoutResult, error) {
	if opts.Members <= 0 {
		opts.Members = 1_000_000
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Stall <= 0 {
		opts.Stall = 30 * time.Second
	}
	if opts.RedisURL == "" && len(opts.RedisClusterAddrs) == 0 {
		return nil, errors.New("bench fanout needs Redis: set --redis or REDIS_URL (e.g. redis://127.0.0.1:6379/15), or --redis-cluster host:port,...")
	}
	rdb, err := newRedis(ctx, opts.RedisURL, opts.RedisClusterAddrs)
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	backend := "redis node"
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var masters atomic.Int64
		_ = cc.ForEachMaster(ctx, func(context.Context, *redis.Client) error { masters.Add(1); return nil })
		backend = fmt.Sprintf("redis cluster (%d masters)", masters.Load())
	}
	errs := newErrorLog(opts.Log.Handler())
	opts.Log = slog.New(errs)

	path, err := cachedShard(opts.CacheDir, opts.Members, opts.Out)
	if err != nil {
		return nil, err
	}
	store, err := shard.OpenStore(path)
	if err != nil {
		return nil, err
	}
	defer store.Close()

	prefix := "notifyd-bench:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	defer cleanup(context.WithoutCancel(ctx), rdb, prefix)

	fmt.Fprintf(opts.Out, "measuring bare pipelined SET NX on the %s...\n", backend)
	setnx, err := SetNXRate(ctx, rdb, prefix+"setnx:", 300_000, 1000)
	if err != nil {
		return nil, err
	}

	cleanup(ctx, rdb, prefix+"setnx:") // the baseline's keys must not count as the pipeline's memory
	state, err := redisstate.New(rdb, redisstate.WithPrefix(prefix))
	if err != nil {
		return nil, err
	}
	var accepted atomic.Int64
	var dlog *deliverylog.Log
	if opts.DeliveryLogDir != "" {
		if dlog, err = deliverylog.Open(deliverylog.Config{Dir: opts.DeliveryLogDir, Daemon: "bench", Logger: opts.Log}); err != nil {
			return nil, err
		}
		defer dlog.Close(context.WithoutCancel(ctx))
	}
	masker := daemon.DeliveryLogConfig{}.Masker()
	pools := map[string]*channels.Pool{}
	for _, name := range []string{channels.APNs, channels.Email, channels.Webhook} {
		var sink channels.OutcomeSink = channels.OutcomeFunc(campaigns.RouteOutcomes)
		if dlog != nil {
			sink = &daemon.OutcomeLogger{Log: dlog, Masker: masker, Channel: name, Now: time.Now, Next: sink}
		}
		p, err := channels.NewWorkerPool(&noop{name: name, accepted: &accepted, results: make([]channels.Result, 1000)},
			channels.PoolConfig{Workers: 1, BatchSize: 1000, QueueSize: 100_000, Outcomes: sink,
				Handoff: channels.HandoffFunc(campaigns.HandOff)},
			channels.WithLogger(opts.Log))
		if err != nil {
			return nil, err
		}
		if err := p.Start(ctx); err != nil {
			return nil, err
		}
		defer p.Close(context.WithoutCancel(ctx))
		pools[name] = p
	}
	const batchSize, maxOpen = 2000, 8
	engine := campaigns.NewEngine(state, state, daemon.NewShardSource(store), campaigns.NewPoolDispatcher(pools),
		campaigns.EngineConfig{Owner: "bench", BatchSize: batchSize, MaxOpenBatches: maxOpen}, campaigns.WithEngineLogger(opts.Log),
		campaigns.WithFrequencyCaps(state.Caps(), benchCaps(opts.Caps)))
	defer engine.Close(context.WithoutCancel(ctx))

	runtime.GC()
	heap := startHeapSampler()
	redisMem := startRedisMemSampler(ctx, rdb, prefix)
	id := "fanout-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(opts.Out, "sending campaign %s to %d members...\n", id, opts.Members)
	cpu0, err := redisCPU(ctx, rdb)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if _, _, err := engine.Create(ctx, []byte(fmt.Sprintf(fanoutCampaign, id))); err != nil {
		return nil, fmt.Errorf("create campaign: %w", err)
	}
	if err := waitProgressing(ctx, engine, id, &accepted, opts.Stall, errs); err != nil {
		return nil, err
	}
	var logBytes int64
	if dlog != nil {
		// Closing writes what is still queued: it counts in the run's time.
		if err := dlog.Close(ctx); err != nil {
			return nil, err
		}
		segs, err := deliverylog.ListSegments(opts.DeliveryLogDir)
		if err != nil {
			return nil, err
		}
		for _, s := range segs {
			logBytes += s.Size
		}
	}
	elapsed := time.Since(start)
	peak := heap.stop()
	redisPeak := redisMem.stop()
	cpu1, err := redisCPU(ctx, rdb)
	if err != nil {
		return nil, err
	}
	st, err := engine.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if st.Status != campaigns.StatusCompleted {
		return nil, fmt.Errorf("campaign ended %s", st.Status)
	}
	if err := checkCounts(st.Counts, accepted.Load()); err != nil {
		return nil, err
	}
	if n, last := errs.Last(); n > 0 {
		return nil, fmt.Errorf("the campaign completed, but %d warnings or errors were logged; the last: %s", n, last)
	}
	res := &FanoutResult{
		Messages: accepted.Load(), Elapsed: elapsed, SetNXPerSec: setnx.PerSec, SetNX: setnx, Backend: backend,
		HeapMiB: peak, Counts: st.Counts, ShardMembers: uint64(opts.Members), LogBytes: logBytes,
		RedisCPU: cpu1 - cpu0,
	}
	res.MsgsPerSec = float64(res.Messages) / elapsed.Seconds()
	res.RedisPeakBytes = redisPeak
	if res.Messages > 0 {
		res.RedisBytesPerMsg = float64(redisPeak) / float64(res.Messages)
	}
	res.Ratio = res.MsgsPerSec / setnx.PerSec
	var slots int64
	for _, counts := range st.Counts {
		for _, n := range counts {
			slots += n
		}
	}
	res.InFlight = int64(maxOpen*batchSize) * slots / int64(max(opts.Members, 1))
	if res.InFlight > 0 {
		res.RedisBytesPerInFlight = float64(redisPeak) / float64(res.InFlight)
	}
	if res.RedisFinalBytes, err = progressBytes(ctx, rdb, prefix); err != nil {
		return nil, fmt.Errorf("measure redis memory: %w", err)
	}
	if res.Messages > 0 {
		res.RedisBytesPerDone = float64(res.RedisFinalBytes) / float64(res.Messages)
	}
	if opts.Caps {
		if res.CapBytes, res.CapUsers, err = state.Caps().Usage(ctx); err != nil {
			return nil, fmt.Errorf("measure cap memory: %w", err)
		}
	}
	return res, nil
}

// cachedShard generates (once) a shard of n members with the generator's default mix.
func cachedShard(dir string, n int, out io.Writer) (string, error) {
	return cachedShardOf(dir, n, nil, out)
}

// cachedShardOf generates (once) the shard of the generator's first members
// users that ring owns (all of them when ring is nil), cached under dir.
func cachedShardOf(dir string, members int, ring *shard.RingInfo, out io.Writer) (string, error) {
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "notifyd-bench")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("make bench cache: %w", err)
	}
	name := fmt.Sprintf("fanout-%d-v%d.shard", members, shard.FormatVersion)
	if ring != nil {
		name = fmt.Sprintf("fleet-%d-%dof%d-v%d.shard", members, ring.Shard, ring.Shards, shard.FormatVersion)
	}
	path := filepath.Join(dir, name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if ring != nil {
		fmt.Fprintf(out, "generating shard %d of %d of a %d-member population (cached at %s)...\n", ring.Shard, ring.Shards, members, path)
	} else {
		fmt.Fprintf(out, "generating a %d-member shard (cached at %s)...\n", members, path)
	}
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: 1, Ring: ring})
	if err != nil {
		return "", err
	}
	g := shardgen.New(1)
	var p shard.Profile
	for i := range uint64(members) {
		g.Profile(i, &p)
		if ring != nil && !ring.Owns(shard.Key(p.ID)) {
			continue
		}
		if err := w.Add(&p); err != nil {
			_ = w.Abort()
			return "", fmt.Errorf("add profile %d: %w", i, err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		return "", fmt.Errorf("write bench shard: %w", err)
	}
	return path, nil
}

// heapSampler records the peak live heap every 50 ms.
type heapSampler struct {
	stopc chan struct{}
	done  chan float64
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stopc: make(chan struct{}), done: make(chan float64, 1)}
	go func() {
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-h.stopc:
				h.done <- float64(peak) / (1 << 20)
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) stop() float64 {
	close(h.stopc)
	return <-h.done
}

// redisMemSampler records the peak growth of Redis's used_memory.
type redisMemSampler struct {
	stopc chan struct{}
	done  chan int64
}

func startRedisMemSampler(ctx context.Context, rdb redis.UniversalClient, prefix string) *redisMemSampler {
	s := &redisMemSampler{stopc: make(chan struct{}), done: make(chan int64, 1)}
	go func() {
		var peak int64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if m, err := progressBytes(ctx, rdb, prefix); err == nil {
				peak = max(peak, m)
			}
			select {
			case <-s.stopc:
				if m, err := progressBytes(ctx, rdb, prefix); err == nil {
					peak = max(peak, m)
				}
				s.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *redisMemSampler) stop() int64 {
	close(s.stopc)
	return <-s.done
}

// waitProgressing waits for the campaign to end, and fails it when no
// message reaches a channel for stall: the engine keeps a run whose Redis
// calls fail running (it resumes when Redis answers again), which is right
// for a daemon and wrong for a benchmark that must fail loudly.
func waitProgressing(ctx context.Context, engine *campaigns.Engine, id string, accepted *atomic.Int64, stall time.Duration, errs *errorLog) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- engine.Wait(wctx, id) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, since := accepted.Load(), time.Now()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
		}
		if n := accepted.Load(); n != last {
			last, since = n, time.Now()
			continue
		}
		if time.Since(since) >= stall {
			cancel()
			<-done
			n, msg := errs.Last()
			if n == 0 {
				msg = "nothing was logged"
			}
			return fmt.Errorf("no progress for %s after %d messages (%d warnings or errors logged; the last: %s)", stall, last, n, msg)
		}
	}
}

// checkCounts fails a run in which a message did not get through: the
// channels are no-ops that accept everything, so every message counted must
// be "sent" and every message accepted counted once. Counts of members
// without a message on a channel (no address, no consent) are not failures.
func checkCounts(counts map[string]map[string]int64, accepted int64) error {
	var sent int64
	var bad []string
	for ch, byReason := range counts {
		for reason, n := range byReason {
			switch channels.Reason(reason) {
			case "sent":
				sent += n
			case channels.ReasonUnavailable, channels.ReasonNetwork, channels.ReasonUnknown, channels.ReasonRetriesExhausted,
				channels.ReasonCanceled, channels.ReasonRateLimited, channels.ReasonAuth, channels.ReasonExpired, "in_doubt":
				bad = append(bad, fmt.Sprintf("%s:%s=%d", ch, reason, n))
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("messages failed: %v", bad)
	}
	if sent != accepted {
		return fmt.Errorf("the channels accepted %d messages but %d were counted sent", accepted, sent)
	}
	return nil
}

// benchCaps is the benchmark's cap rule: 3 messages per user per day over
// every channel, checked on every message.
func benchCaps(on bool) []campaigns.CapRule {
	if !on {
		return nil
	}
	return []campaigns.CapRule{{Channel: campaigns.CapAll, Limit: 3, Window: campaigns.Duration(24 * time.Hour)}}
}
