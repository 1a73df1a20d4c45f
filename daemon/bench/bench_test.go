package bench

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/daemon"
)

// TestFanoutSmall runs the fan-out benchmark end to end on a small segment
// against the real Redis: every member is accounted for per channel and every
// message reached a channel exactly once.
func TestFanoutSmall(t *testing.T) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("REDIS_URL not set: the fan-out benchmark needs Redis (.ci/run starts one)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	res, err := Fanout(ctx, FanoutOptions{Members: 5000, RedisURL: url, CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	path, err := cachedShard(dir, 5000, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want, err := daemon.ExpectedCounts(path, "all", []string{"apns", "email", "webhook"}, false)
	if err != nil {
		t.Fatal(err)
	}
	var sent int64
	for ch, counts := range res.Counts {
		var total int64
		for _, n := range counts {
			total += n
		}
		if total != want[ch] {
			t.Errorf("%s: counts %v add up to %d, want %d (5,000 members, once per address)", ch, counts, total, want[ch])
		}
		sent += counts["sent"]
	}
	// Counts are per message: the channels accepted exactly what was counted sent.
	if res.Messages != sent || res.Messages == 0 {
		t.Errorf("channels accepted %d messages, %d counted sent", res.Messages, sent)
	}
	if res.SetNXPerSec <= 0 || res.Ratio <= 0 {
		t.Errorf("no Redis baseline measured: %+v", res)
	}
	// Sending 5,000 members' claims and ledger takes Redis well over a
	// millisecond of CPU; zero would mean INFO cpu was not read.
	if res.RedisCPU < time.Millisecond {
		t.Errorf("redis cpu while sending %v, want at least 1ms", res.RedisCPU)
	}
}

func TestFanoutNeedsRedis(t *testing.T) {
	if _, err := Fanout(context.Background(), FanoutOptions{Members: 10}); err == nil {
		t.Fatal("ran without Redis")
	}
}

// TestTriggerSmall runs the trigger benchmark briefly: every accepted
// trigger reaches the provider and the percentiles are ordered.
func TestTriggerSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Trigger(ctx, TriggerOptions{Rate: 500, Duration: time.Second, Members: 2000, CacheDir: t.TempDir(), RedisURL: os.Getenv("REDIS_URL")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Fired < 400 || res.Accepted != res.Fired || res.Sent != res.Accepted {
		t.Fatalf("fired %d, accepted %d, reached the provider %d", res.Fired, res.Accepted, res.Sent)
	}
	if !(res.P50 <= res.P99 && res.P99 <= res.P999 && res.P999 <= res.Max) || res.P50 <= 0 {
		t.Fatalf("percentiles out of order: %+v", res)
	}
}

// TestFanoutCluster is TestFanoutSmall on a Redis Cluster
// (REDIS_CLUSTER_ADDRS): the baseline is grouped per node and every master
// takes a share.
func TestFanoutCluster(t *testing.T) {
	addrs := os.Getenv("REDIS_CLUSTER_ADDRS")
	if addrs == "" {
		t.Skip("REDIS_CLUSTER_ADDRS not set: .ci/run starts a Redis Cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Fanout(ctx, FanoutOptions{Members: 5000, RedisClusterAddrs: strings.Split(addrs, ","), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages == 0 || res.SetNXPerSec <= 0 || len(res.SetNX.PerNode) < 2 || !strings.Contains(res.Backend, "cluster") {
		t.Fatalf("cluster run: %+v", res)
	}
	for node, n := range res.SetNX.PerNode {
		if n == 0 {
			t.Errorf("node %s took none of the SET NX keys", node)
		}
	}
}

func TestFanoutRefusesURLAndCluster(t *testing.T) {
	_, err := Fanout(context.Background(), FanoutOptions{Members: 10, RedisURL: "redis://127.0.0.1:1/0", RedisClusterAddrs: []string{"127.0.0.1:1"}})
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("err = %v, want a refusal of both", err)
	}
}

func TestCheckCounts(t *testing.T) {
	tests := []struct {
		name     string
		counts   map[string]map[string]int64
		accepted int64
		wantErr  string
	}{
		{"all sent", map[string]map[string]int64{"sms": {"sent": 5, "no_address": 2}}, 5, ""},
		{"a transient failure", map[string]map[string]int64{"sms": {"sent": 4, "unavailable": 1}}, 4, "messages failed"},
		{"in doubt", map[string]map[string]int64{"sms": {"sent": 4, "in_doubt": 1}}, 4, "messages failed"},
		{"accepted but not counted", map[string]map[string]int64{"sms": {"sent": 4}}, 5, "accepted 5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkCounts(tc.counts, tc.accepted)
			if (tc.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestTriggerFailsLoudly: a trigger bench whose dedup store cannot be
// reached ends in an error, not in latency figures of triggers that failed.
func TestTriggerFailsLoudly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := Trigger(ctx, TriggerOptions{Rate: 100, Duration: 200 * time.Millisecond, Members: 1000, RedisURL: "redis://127.0.0.1:1/0", CacheDir: t.TempDir(), Provider: "noop"})
	if err == nil {
		t.Fatal("a trigger bench without its Redis reported figures")
	}
}

// TestSideReference: the filler reference beside the campaign one is summed
// up per round against the notifyd run of the same round, not against
// notifyd's median (a slow round of Postfix slows both).
func TestSideReference(t *testing.T) {
	own := []Round{
		{Messages: 1000, Wall: time.Second},     // 1000/s
		{Messages: 1000, Wall: 2 * time.Second}, // 500/s
		{Messages: 1000, Wall: time.Second},     // 1000/s
	}
	side := []Round{
		{RefMessages: 1000, RefWall: 500 * time.Millisecond, RefCPU: 40 * time.Millisecond},  // 2000/s, ratio 0.5
		{RefMessages: 1000, RefWall: time.Second, RefCPU: 60 * time.Millisecond},             // 1000/s, ratio 0.5
		{RefMessages: 1000, RefWall: 1250 * time.Millisecond, RefCPU: 50 * time.Millisecond}, // 800/s, ratio 1.25
	}
	got := sideReference("smtp-source -l 10", own, side)
	want := SideReference{Command: "smtp-source -l 10", PerSec: 1000, Ratio: 0.5, CPUPerMsg: 50}
	if *got != want {
		t.Fatalf("sideReference = %+v, want %+v", *got, want)
	}
}
