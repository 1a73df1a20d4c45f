package campaigns_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/store/redisstate"
)

// redisForTest connects to REDIS_URL with a prefix of the test's own, or
// skips: these tests are about a store that loses its data, which memstate
// never does.
func redisForTest(t *testing.T) (*redis.Client, string) {
	t.Helper()
	u := os.Getenv("REDIS_URL")
	if u == "" {
		t.Skip("REDIS_URL is not set (.ci/run starts Redis and sets it)")
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("parse REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opt)
	prefix := "notifyd-test:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	t.Cleanup(func() {
		deleteKeys(context.Background(), t, rdb, prefix+"*")
		_ = rdb.Close()
	})
	return rdb, prefix
}

func deleteKeys(ctx context.Context, t *testing.T, rdb *redis.Client, pattern string) int {
	t.Helper()
	n := 0
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		if err := rdb.Unlink(ctx, iter.Val()).Err(); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFleetCompletedPartSurvivesStoreLoss: shard 0's daemon completed its
// part of a campaign that shard 1 has not run yet; then the store loses the
// part (Redis restarted empty, or only the master holding the part's slot).
// The daemon must write the part back as completed, not run it again, and
// the campaign completes when shard 1 has: every member once.
func TestFleetCompletedPartSurvivesStoreLoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose string // key pattern (after the prefix) the store loses
	}{
		{name: "store emptied", lose: "*"},
		{name: "only the part's slot lost", lose: "*fleet/s0*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			rdb, prefix := redisForTest(t)
			st, err := redisstate.New(rdb, redisstate.WithPrefix(prefix))
			if err != nil {
				t.Fatal(err)
			}
			all := newSource(300)
			parts := partition(all, 2)
			r0 := newRigOn(t, st, parts[0], campaigns.EngineConfig{Owner: "node-a", Shard: 0, Shards: 2})
			if err := r0.engine.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := r0.engine.CheckState(ctx); err != nil { // notes the epoch, as the daemon does at start
				t.Fatal(err)
			}
			b := `{"id":"fleet","segment":"all","channels":["sms"],"content":{"sms":{"body":"Hi"}}}`
			if _, _, err := r0.engine.Create(ctx, []byte(b)); err != nil {
				t.Fatal(err)
			}
			channelstest.Eventually(t, 30*time.Second, func() bool {
				s, err := r0.engine.Get(ctx, "fleet")
				return err == nil && len(s.Shards) == 2 && s.Shards[0].State == "completed"
			}, "shard 0 never completed its part")
			if err := r0.engine.Wait(ctx, "fleet"); err != nil { // its run has ended, not only written "done"
				t.Fatal(err)
			}
			sent0 := len(r0.keys(channels.SMS))
			if sent0 == 0 {
				t.Fatal("shard 0 sent nothing")
			}

			if n := deleteKeys(ctx, t, rdb, prefix+tc.lose); n == 0 {
				t.Fatalf("no key matched %s%s", prefix, tc.lose)
			}
			for range 2 {
				if _, err := r0.engine.CheckState(ctx); err != nil {
					t.Fatal(err)
				}
				if err := r0.engine.Tick(ctx); err != nil {
					t.Fatal(err)
				}
				if running := r0.engine.Running(); len(running) != 0 {
					t.Fatalf("after the loss shard 0 runs %v again", running)
				}
			}
			if s, err := r0.engine.Get(ctx, "fleet"); err != nil || s.Shards[0].State != "completed" || s.Shards[1].State != "waiting" {
				t.Fatalf("after the loss: %+v %v; want shard 0 completed, shard 1 waiting", s, err)
			}

			r1 := newRigOn(t, st, parts[1], campaigns.EngineConfig{Owner: "node-b", Shard: 1, Shards: 2})
			if err := r1.engine.Start(ctx); err != nil {
				t.Fatal(err)
			}
			s := waitStatus(t, r0.engine, "fleet", campaigns.StatusCompleted)
			seen := map[string]int{}
			for _, r := range []*rig{r0, r1} {
				for _, k := range r.keys(channels.SMS) {
					seen[k]++
				}
			}
			want := 0
			for i := range all.members {
				want += min(1, len(all.members[i].Phone))
			}
			if len(seen) != want || len(r0.keys(channels.SMS)) != sent0 {
				t.Fatalf("%d distinct texts over the fleet, want %d; shard 0 sent %d, %d before the loss",
					len(seen), want, len(r0.keys(channels.SMS)), sent0)
			}
			for k, n := range seen {
				if n != 1 {
					t.Fatalf("%s sent %d times", k, n)
				}
			}
			if got := s.Counts[channels.SMS]["sent"]; got != int64(want) {
				t.Fatalf("counted %d sent, want %d (counts %v)", got, want, s.Counts)
			}
		})
	}
}
