package redisstate_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/redisstate"
)

const benchBatch = 1000

// bareSetNX is the machine's own limit the state layer is judged against:
// benchBatch pipelined SET NX PX from one Go client, one round trip.
func bareSetNX(ctx context.Context, b *testing.B, c *redis.Client, prefix string, i int) time.Duration {
	start := time.Now()
	pipe := c.Pipeline()
	base := prefix + "bare:" + strconv.Itoa(i) + ":"
	for j := range benchBatch {
		pipe.SetNX(ctx, base+strconv.Itoa(j), "C", time.Minute)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkDedupClaimConfirm: per-message claims (flows, triggers), one op =
// a batch of 1,000 messages claimed and confirmed (two round trips), timed
// against a bare pipelined SET NX of the same count in the same run.
func BenchmarkDedupClaimConfirm(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts []redisstate.Option
	}{{"single-node", nil}, {"cluster-grouping", []redisstate.Option{redisstate.WithClusterScripts()}}} {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			c := newClient(b)
			s, prefix := newStore(b, c, mode.opts...)
			d := s.Dedup("bench")
			keys := make([]campaigns.DedupKey, benchBatch)
			var claimTime, bareTime time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range keys {
					keys[j] = campaigns.DedupKey{Scope: "f:bench", User: uint64(i*benchBatch + j), Channel: "email"}
				}
				start := time.Now()
				st, err := d.Claim(ctx, keys, 30*time.Second, time.Minute)
				if err != nil || st[0] != campaigns.Claimed {
					b.Fatalf("claim: %v %v", st[0], err)
				}
				if err := d.Confirm(ctx, keys, time.Minute); err != nil {
					b.Fatal(err)
				}
				claimTime += time.Since(start)
				b.StopTimer()
				bareTime += bareSetNX(ctx, b, c, prefix, i)
				b.StartTimer()
			}
			msgs := float64(b.N * benchBatch)
			b.ReportMetric(msgs/claimTime.Seconds(), "msgs/s")
			b.ReportMetric(msgs/bareTime.Seconds(), "setnx/s")
			b.ReportMetric(bareTime.Seconds()/claimTime.Seconds(), "ratio")
		})
	}
}

// BenchmarkCampaignBatch: the campaign scheme, one op = one batch of 1,000
// users × 6 channels: claim the batch, mark it dispatched, report outcomes
// (bitmaps, six counters, ten failures) and close it — three round trips for
// 6,000 messages — timed against bare SET NX of 1,000 keys in the same run.
func BenchmarkCampaignBatch(b *testing.B) {
	ctx := context.Background()
	c := newClient(b)
	s, prefix := newStore(b, c)
	r, err := s.Acquire(ctx, "bench", "bench", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	const users, channels = benchBatch, 6
	slots := users * channels
	all := campaigns.NewBitmap(slots)
	for i := range slots {
		all.Set(i)
	}
	confirmed := campaigns.NewBitmap(slots)
	for i := 0; i < slots; i += 2 {
		confirmed.Set(i)
	}
	counts := []campaigns.Count{
		{Channel: "apns", Reason: "sent", N: 500}, {Channel: "fcm", Reason: "sent", N: 500}, {Channel: "email", Reason: "sent", N: 500},
		{Channel: "sms", Reason: "no_consent", N: 500}, {Channel: "webpush", Reason: "no_address", N: 500}, {Channel: "webhook", Reason: "sent", N: 500},
	}
	failures := make([]campaigns.Failure, 10)
	var batchTime, bareTime time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		first := uint64(i) * users * 10
		start := time.Now()
		seq, err := s.ClaimBatch(ctx, r.Lease, first, first+users*10-1, slots)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.ReportBatch(ctx, r.Lease, campaigns.BatchReport{Seq: seq, Dispatched: all}); err != nil {
			b.Fatal(err)
		}
		for j := range failures {
			failures[j] = campaigns.Failure{User: first + uint64(j), Channel: "webhook", Reason: "unavailable"}
		}
		cp, err := s.ReportBatch(ctx, r.Lease, campaigns.BatchReport{Seq: seq, Confirmed: confirmed, Done: all, Counts: counts, Failures: failures, Final: true})
		if err != nil || cp.Seq != seq {
			b.Fatalf("report: %+v %v", cp, err)
		}
		batchTime += time.Since(start)
		b.StopTimer()
		bareTime += bareSetNX(ctx, b, c, prefix, i)
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*slots)/batchTime.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N*benchBatch)/bareTime.Seconds(), "setnx/s")
	b.ReportMetric((float64(b.N*slots)/batchTime.Seconds())/(float64(b.N*benchBatch)/bareTime.Seconds()), "ratio")
	b.ReportMetric(3/float64(slots), "roundtrips/msg")
}

// memoryUsage sums MEMORY USAGE (SAMPLES 0: exact) over the keys under prefix.
func memoryUsage(ctx context.Context, b *testing.B, c *redis.Client, prefix string) (bytes int64, keys int) {
	iter := c.Scan(ctx, 0, prefix+"*", 5000).Iterator()
	pipe := c.Pipeline()
	var cmds []*redis.IntCmd
	for iter.Next(ctx) {
		cmds = append(cmds, pipe.MemoryUsage(ctx, iter.Val(), 0))
	}
	if err := iter.Err(); err != nil {
		b.Fatal(err)
	}
	if len(cmds) == 0 {
		return 0, 0
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	for _, c := range cmds {
		bytes += c.Val()
	}
	return bytes, len(cmds)
}

func usedMemory(ctx context.Context, b *testing.B, c *redis.Client) int64 {
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatal("no used_memory in INFO memory")
	return 0
}

// BenchmarkMemoryPerRecord measures Redis memory per dedup record over
// 100,000 messages: per-message keys (flows, triggers) versus the campaign
// scheme (cursor + open batches), at its peak (a window of 8 open batches of
// 6,000 messages) and after the campaign completed. Run with -benchtime=1x.
// used_memory deltas include allocator overhead but also anyone else using
// the same Redis; MEMORY USAGE counts only our keys.
func BenchmarkMemoryPerRecord(b *testing.B) {
	const records = 100_000
	ctx := context.Background()
	c := newClient(b)
	for i := 0; i < b.N; i++ {
		// Per-message keys.
		s, prefix := newStore(b, c)
		d := s.Dedup("mem")
		before := usedMemory(ctx, b, c)
		keys := make([]campaigns.DedupKey, benchBatch)
		for n := 0; n < records; n += benchBatch {
			for j := range keys {
				// Realistic 64-bit user keys (hashed ids), not small integers.
				keys[j] = campaigns.DedupKey{Scope: "f:welcome", User: uint64(n+j)*0x9e3779b97f4a7c15 | 1<<63, Channel: "email"}
			}
			if err := d.Confirm(ctx, keys, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
		delta := usedMemory(ctx, b, c) - before
		usage, n := memoryUsage(ctx, b, c, prefix)
		b.ReportMetric(float64(usage)/records, "B/msg-key(MEMORY_USAGE)")
		b.ReportMetric(float64(delta)/records, "B/msg-key(used_memory)")
		if n != records {
			b.Fatalf("%d keys, want %d", n, records)
		}

		// Campaign scheme.
		s2, prefix2 := newStore(b, c)
		r, err := s2.Acquire(ctx, "mem", "mem", time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		const slots, window = 6000, 8
		all := campaigns.NewBitmap(slots)
		for j := range slots {
			all.Set(j)
		}
		var open []int64
		var peak int64
		counts := []campaigns.Count{{Channel: "email", Reason: "sent", N: slots}}
		for n := 0; n < records; n += slots {
			first := uint64(n) * 4
			seq, err := s2.ClaimBatch(ctx, r.Lease, first, first+uint64(slots)*4-1, slots)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s2.ReportBatch(ctx, r.Lease, campaigns.BatchReport{Seq: seq, Dispatched: all}); err != nil {
				b.Fatal(err)
			}
			open = append(open, seq)
			if len(open) == window {
				if u, _ := memoryUsage(ctx, b, c, prefix2); u > peak {
					peak = u
				}
				// Close the window out of order: newest first, oldest last.
				for k := len(open) - 1; k >= 0; k-- {
					if _, err := s2.ReportBatch(ctx, r.Lease, campaigns.BatchReport{Seq: open[k], Confirmed: all, Done: all, Counts: counts, Final: true}); err != nil {
						b.Fatal(err)
					}
				}
				open = open[:0]
			}
		}
		for _, seq := range open {
			if _, err := s2.ReportBatch(ctx, r.Lease, campaigns.BatchReport{Seq: seq, Confirmed: all, Done: all, Counts: counts, Final: true}); err != nil {
				b.Fatal(err)
			}
		}
		final, _ := memoryUsage(ctx, b, c, prefix2)
		b.ReportMetric(float64(peak)/records, "B/msg-campaign(peak,window=8x6000)")
		b.ReportMetric(float64(peak)/(window*slots), "B/in-flight-msg")
		b.ReportMetric(float64(final)/records, "B/msg-campaign(done)")
	}
}
