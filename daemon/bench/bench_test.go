package bench

import (
	"context"
	"github.com/notifyd/notifyd/daemon"
	"io"
	"os"
	"testing"
	"time"
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
