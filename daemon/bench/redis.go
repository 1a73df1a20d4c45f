package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// newRedis connects to one node (url) or a Redis Cluster (clusterAddrs),
// and checks that every master answers.
func newRedis(ctx context.Context, url string, clusterAddrs []string) (redis.UniversalClient, error) {
	var rdb redis.UniversalClient
	switch {
	case len(clusterAddrs) > 0 && url != "":
		return nil, errors.New("give a Redis URL or cluster addresses, not both")
	case len(clusterAddrs) > 0:
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: clusterAddrs})
	case url != "":
		ropt, err := redis.ParseURL(url)
		if err != nil {
			return nil, errors.New("parse Redis URL: not a valid redis:// URL")
		}
		rdb = redis.NewClient(ropt)
	default:
		return nil, errors.New("no Redis given")
	}
	if err := forEachNode(ctx, rdb, func(ctx context.Context, n redis.UniversalClient) error { return n.Ping(ctx).Err() }); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("connect to Redis: %w", err)
	}
	return rdb, nil
}

// forEachNode runs fn on the one node, or on every master of a cluster (a
// SCAN through a cluster client sees one node only).
func forEachNode(ctx context.Context, rdb redis.UniversalClient, fn func(ctx context.Context, n redis.UniversalClient) error) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return fn(ctx, n) })
	}
	return fn(ctx, rdb)
}

// SetNXStats is the bare pipelined SET NX baseline.
type SetNXStats struct {
	PerSec float64
	// PerNode is how many of the keys each master took (one entry for a
	// single node): a cluster client splits every pipeline into one
	// pipeline per node and sends them side by side.
	PerNode map[string]int64
}

// SetNXRate is the rate of SET key val NX from one client, pipelined in
// batches of `pipeline`: the machine's own Redis limit for this benchmark.
// On a cluster each batch is grouped per node, as the campaign engine's
// claims are: one round trip per node per batch. Any failed command fails
// the measurement.
func SetNXRate(ctx context.Context, rdb redis.UniversalClient, prefix string, n, pipeline int) (SetNXStats, error) {
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
		cmds, err := p.Exec(ctx)
		if err != nil {
			return SetNXStats{}, fmt.Errorf("pipelined SET NX: %w", err)
		}
		for _, c := range cmds {
			if err := c.Err(); err != nil {
				return SetNXStats{}, fmt.Errorf("pipelined SET NX: %w", err)
			}
		}
	}
	st := SetNXStats{PerSec: float64(n) / time.Since(start).Seconds(), PerNode: map[string]int64{}}
	var mu sync.Mutex
	err := forEachNode(ctx, rdb, func(ctx context.Context, node redis.UniversalClient) error {
		var c int64
		iter := node.Scan(ctx, 0, prefix+"*", 5000).Iterator()
		for iter.Next(ctx) {
			c++
		}
		mu.Lock()
		st.PerNode[nodeAddr(node)] = c
		mu.Unlock()
		return iter.Err()
	})
	if err != nil {
		return SetNXStats{}, fmt.Errorf("count SET NX keys per node: %w", err)
	}
	return st, nil
}

func nodeAddr(n redis.UniversalClient) string {
	if c, ok := n.(*redis.Client); ok {
		return c.Options().Addr
	}
	return "?"
}

// String lists the per-node share, e.g. "127.0.0.1:7000 33.4%, ...".
func (s SetNXStats) String() string {
	var total int64
	addrs := make([]string, 0, len(s.PerNode))
	for a, c := range s.PerNode {
		addrs = append(addrs, a)
		total += c
	}
	sort.Strings(addrs)
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = fmt.Sprintf("%s %.1f%%", a, 100*float64(s.PerNode[a])/float64(max(total, 1)))
	}
	return strings.Join(parts, ", ")
}

func cleanup(ctx context.Context, rdb redis.UniversalClient, prefix string) {
	_ = forEachNode(ctx, rdb, func(ctx context.Context, n redis.UniversalClient) error {
		iter := n.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		// One key per UNLINK: on a cluster the keys of one command must
		// share a slot. Pipelined, it costs one round trip per 1000 keys.
		p := n.Pipeline()
		for iter.Next(ctx) {
			p.Unlink(ctx, iter.Val())
			if p.Len() == 1000 {
				_, _ = p.Exec(ctx)
			}
		}
		_, _ = p.Exec(ctx)
		return nil
	})
}

// progressBytes sums MEMORY USAGE over every key under prefix: the state
// the pipeline keeps in Redis (progress records, claims, counts).
func progressBytes(ctx context.Context, rdb redis.UniversalClient, prefix string) (int64, error) {
	var mu sync.Mutex
	var total int64
	err := forEachNode(ctx, rdb, func(ctx context.Context, n redis.UniversalClient) error {
		var sum int64
		iter := n.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			v, err := n.MemoryUsage(ctx, iter.Val()).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			sum += v
		}
		mu.Lock()
		total += sum
		mu.Unlock()
		return iter.Err()
	})
	return total, err
}

// errorLog is a slog.Handler that keeps the last warning or error (and
// passes every record on), so that a benchmark whose Redis calls fail can
// say why instead of waiting forever.
type errorLog struct {
	next  slog.Handler
	state *errorState
}

type errorState struct {
	mu   sync.Mutex
	n    int64
	last string
}

func newErrorLog(next slog.Handler) *errorLog { return &errorLog{next: next, state: &errorState{}} }

func (h *errorLog) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *errorLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
			return true
		})
		h.state.mu.Lock()
		h.state.n++
		h.state.last = b.String()
		h.state.mu.Unlock()
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *errorLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &errorLog{next: h.next.WithAttrs(as), state: h.state}
}

func (h *errorLog) WithGroup(name string) slog.Handler {
	return &errorLog{next: h.next.WithGroup(name), state: h.state}
}

// Last returns how many warnings and errors were logged and the last one.
func (h *errorLog) Last() (int64, string) {
	h.state.mu.Lock()
	defer h.state.mu.Unlock()
	return h.state.n, h.state.last
}

// redisCPU is the CPU time the Redis servers' main threads have used so far
// (INFO cpu, user + system, summed over the masters). A run's difference is
// what it cost Redis, which commandstats' wall time per call overstates on
// a loaded machine; it is the run's own cost only when nothing else uses
// those servers (a private redis-server).
func redisCPU(ctx context.Context, rdb redis.UniversalClient) (time.Duration, error) {
	var mu sync.Mutex
	var total time.Duration
	err := forEachNode(ctx, rdb, func(ctx context.Context, n redis.UniversalClient) error {
		info, err := n.Info(ctx, "cpu").Result()
		if err != nil {
			return err
		}
		var sum float64
		for _, line := range strings.Split(info, "\r\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || (k != "used_cpu_user_main_thread" && k != "used_cpu_sys_main_thread") {
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return fmt.Errorf("parse INFO cpu %q: %w", line, err)
			}
			sum += f
		}
		mu.Lock()
		total += time.Duration(sum * float64(time.Second))
		mu.Unlock()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read redis cpu: %w", err)
	}
	return total, nil
}
