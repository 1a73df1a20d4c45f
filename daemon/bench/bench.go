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
	"github.com/notifyd/notifyd/store/redisstate"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// FanoutOptions configure the fan-out benchmark.
type FanoutOptions struct {
	Members  int    // segment size (default 1,000,000)
	RedisURL string // required: the dedup/progress state is Redis, as in production
	// CacheDir keeps generated shards between runs (default $TMPDIR/notifyd-bench).
	CacheDir string
	Out      io.Writer
	Log      *slog.Logger
}

// FanoutResult is what the benchmark measured.
type FanoutResult struct {
	Messages    int64
	Elapsed     time.Duration
	MsgsPerSec  float64
	SetNXPerSec float64
	Ratio       float64
	HeapMiB     float64 // peak live heap while sending
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
	if opts.RedisURL == "" {
		return nil, errors.New("bench fanout needs Redis: set --redis or REDIS_URL (e.g. redis://127.0.0.1:6379/15)")
	}
	ropt, err := redis.ParseURL(opts.RedisURL)
	if err != nil {
		return nil, errors.New("parse Redis URL: not a valid redis:// URL")
	}
	rdb := redis.NewClient(ropt)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("connect to Redis: %w", err)
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

	prefix := "notifyd-bench:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	defer cleanup(context.WithoutCancel(ctx), rdb, prefix)

	fmt.Fprintln(opts.Out, "measuring bare pipelined SET NX...")
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
	pools := map[string]*channels.Pool{}
	for _, name := range []string{channels.APNs, channels.Email, channels.Webhook} {
		p, err := channels.NewWorkerPool(&noop{name: name, accepted: &accepted, results: make([]channels.Result, 1000)},
			channels.PoolConfig{Workers: 1, BatchSize: 1000, QueueSize: 100_000, Outcomes: channels.OutcomeFunc(campaigns.RouteOutcomes),
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
		campaigns.EngineConfig{Owner: "bench", BatchSize: batchSize, MaxOpenBatches: maxOpen}, campaigns.WithEngineLogger(opts.Log))
	defer engine.Close(context.WithoutCancel(ctx))

	runtime.GC()
	heap := startHeapSampler()
	redisMem := startRedisMemSampler(ctx, rdb, prefix)
	id := "fanout-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(opts.Out, "sending campaign %s to %d members...\n", id, opts.Members)
	start := time.Now()
	if _, _, err := engine.Create(ctx, []byte(fmt.Sprintf(fanoutCampaign, id))); err != nil {
		return nil, fmt.Errorf("create campaign: %w", err)
	}
	if err := engine.Wait(ctx, id); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	peak := heap.stop()
	redisPeak := redisMem.stop()
	st, err := engine.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if st.Status != campaigns.StatusCompleted {
		return nil, fmt.Errorf("campaign ended %s", st.Status)
	}
	res := &FanoutResult{
		Messages: accepted.Load(), Elapsed: elapsed, SetNXPerSec: setnx, HeapMiB: peak, Counts: st.Counts,
		ShardMembers: uint64(opts.Members),
	}
	res.MsgsPerSec = float64(res.Messages) / elapsed.Seconds()
	res.RedisPeakBytes = redisPeak
	if res.Messages > 0 {
		res.RedisBytesPerMsg = float64(redisPeak) / float64(res.Messages)
	}
	res.Ratio = res.MsgsPerSec / setnx
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
	return res, nil
}

// SetNXRate is the rate of SET key val NX from one client, pipelined in
// batches of `pipeline`: the machine's own Redis limit for this benchmark.
func SetNXRate(ctx context.Context, rdb *redis.Client, prefix string, n, pipeline int) (float64, error) {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
	}
	start := time.Now()
	for i := 0; i < n; i += pipeline {
		p := rdb.Pipeline()
		for _, k := range keys[i:min(i+pipeline, n)] {
			p.SetNX(ctx, k, "1", time.Minute)
		}
		if _, err := p.Exec(ctx); err != nil {
			return 0, fmt.Errorf("pipelined SET NX: %w", err)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func cleanup(ctx context.Context, rdb *redis.Client, prefix string) {
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			rdb.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Unlink(ctx, batch...)
	}
}

// cachedShard generates (once) a shard of n members with the generator's default mix.
func cachedShard(dir string, n int, out io.Writer) (string, error) {
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "notifyd-bench")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("make bench cache: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("fanout-%d-v%d.shard", n, shard.FormatVersion))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	fmt.Fprintf(out, "generating a %d-member shard (cached at %s)...\n", n, path)
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: 1})
	if err != nil {
		return "", err
	}
	g := shardgen.New(1)
	var p shard.Profile
	for i := range uint64(n) {
		g.Profile(i, &p)
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

// progressBytes sums MEMORY USAGE over every key under prefix: the state
// the pipeline keeps in Redis (progress records, claims, counts).
func progressBytes(ctx context.Context, rdb *redis.Client, prefix string) (int64, error) {
	var total int64
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		n, err := rdb.MemoryUsage(ctx, iter.Val()).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, err
		}
		total += n
	}
	return total, iter.Err()
}

func startRedisMemSampler(ctx context.Context, rdb *redis.Client, prefix string) *redisMemSampler {
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
