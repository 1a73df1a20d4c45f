package redisstate_test

import (
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
)

// redisCPU is the server's CPU time so far (INFO cpu, user + system of the
// main thread). Wall time per call (commandstats) counts the time the
// server waits for a core on a loaded machine; CPU time does not. It is
// the benchmark's cost only when nothing else uses that Redis.
func redisCPU(tb testing.TB, c *redis.Client) time.Duration {
	tb.Helper()
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "used_cpu_user_main_thread" || k == "used_cpu_sys_main_thread") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tb.Fatalf("parse %s: %v", line, err)
			}
			sum += f
		}
	}
	return time.Duration(sum * float64(time.Second))
}

// benchUser is the n-th user of a population of 2^20 spread evenly over
// the key space, as xxhash spreads a shard's (campaigns visit them in key
// order, so a batch is a run of consecutive keys); users past 2^20 wrap.
func benchUser(n int) uint64 { return uint64(n%(1<<20)) << 44 }

// BenchmarkCapsAdmit is one batch of the fan-out benchmark's cap check:
// 2,000 users × 3 channels under a 3-per-day rule over all channels. The
// users are new to the state: a fresh store every 500 batches.
func BenchmarkCapsAdmit(b *testing.B) {
	c := newClient(b)
	s, _ := newStore(b, c)
	caps := s.Caps()
	rules := []campaigns.CapRule{{Channel: campaigns.CapAll, Limit: 3, Window: campaigns.Duration(24 * time.Hour)}}
	reqs := make([]campaigns.CapRequest, 0, 6000)
	ctx := context.Background()
	b.ReportAllocs()
	cpu := redisCPU(b, c)
	b.ResetTimer()
	for i := range b.N {
		if i > 0 && i%500 == 0 {
			b.StopTimer()
			s, _ = newStore(b, c)
			caps = s.Caps()
			b.StartTimer()
		}
		reqs = reqs[:0]
		for u := range 2000 {
			for _, ch := range []string{"apns", "email", "webhook"} {
				reqs = append(reqs, campaigns.CapRequest{User: benchUser(i*2000 + u), Channel: ch, Msg: "bench-campaign"})
			}
		}
		if _, err := caps.Admit(ctx, reqs, rules, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*2000)/b.Elapsed().Seconds(), "users/s")
	b.ReportMetric(float64(redisCPU(b, c)-cpu)/float64(b.N*2000)/1e3, "redis-µs/user")
}

// BenchmarkCapsAdmitHeld is the same batch for users who already hold two
// messages of an earlier campaign within the window (the script's general
// path): one channel each is admitted, two are capped.
func BenchmarkCapsAdmitHeld(b *testing.B) {
	c := newClient(b)
	s, _ := newStore(b, c)
	caps := s.Caps()
	rules := []campaigns.CapRule{{Channel: campaigns.CapAll, Limit: 3, Window: campaigns.Duration(24 * time.Hour)}}
	reqs := make([]campaigns.CapRequest, 0, 6000)
	ctx := context.Background()
	var cpu time.Duration // the timed calls' only
	batch := func(i int, msg string, chs ...string) []campaigns.CapRequest {
		reqs = reqs[:0]
		for u := range 2000 {
			for _, ch := range chs {
				reqs = append(reqs, campaigns.CapRequest{User: benchUser(i*2000 + u), Channel: ch, Msg: msg})
			}
		}
		return reqs
	}
	b.ReportAllocs()
	for i := range b.N {
		b.StopTimer()
		if _, err := caps.Admit(ctx, batch(i, "earlier", "apns", "email"), rules, false); err != nil {
			b.Fatal(err)
		}
		reqs := batch(i, "bench-campaign", "apns", "email", "webhook")
		before := redisCPU(b, c)
		b.StartTimer()
		if _, err := caps.Admit(ctx, reqs, rules, false); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += redisCPU(b, c) - before
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*2000)/b.Elapsed().Seconds(), "users/s")
	b.ReportMetric(float64(cpu)/float64(b.N*2000)/1e3, "redis-µs/user")
}

// BenchmarkCapsHashFloor is the floor of the earlier cap layout, a hash
// field per user: the same batch as BenchmarkCapsAdmit (2,000 fresh users
// over 64 bucket hashes, a 36-byte value each) as bare pipelined HMGET and
// HSET, without a script. It was 1.15 redis-µs/user, half of that layout's
// cost (a lookup, a dictEntry and two strings per user): the grouped
// layout's BenchmarkCapsAdmit is under it because a field holds a group.
func BenchmarkCapsHashFloor(b *testing.B) {
	c := newClient(b)
	_, prefix := newStore(b, c)
	ctx := context.Background()
	val := strings.Repeat("v", 36)
	keys := make([]string, 64)
	for k := range keys {
		keys[k] = prefix + "floor:{c" + strconv.Itoa(k) + "}"
	}
	mget := make([][]string, 64)
	hset := make([][]any, 64)
	cpu := redisCPU(b, c)
	b.ResetTimer()
	for i := range b.N {
		for k := range 64 {
			mget[k], hset[k] = mget[k][:0], hset[k][:0]
		}
		for u := range 2000 {
			user := benchUser(i*2000 + u)
			f := string(binary.BigEndian.AppendUint64(nil, user))
			mget[user%64] = append(mget[user%64], f)
			hset[user%64] = append(hset[user%64], f, val)
		}
		pipe := c.Pipeline()
		for k := range 64 {
			if len(mget[k]) > 0 {
				pipe.HMGet(ctx, keys[k], mget[k]...)
				pipe.HSet(ctx, keys[k], hset[k]...)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(redisCPU(b, c)-cpu)/float64(b.N*2000)/1e3, "redis-µs/user")
}
