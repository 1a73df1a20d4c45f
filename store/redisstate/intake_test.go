package redisstate_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestEnqueueShards(t *testing.T) { onEachBackend(t, testEnqueueShards) }

// testEnqueueShards hands three shards their payloads in one call and reads
// each shard's stream back through the Store ForShard gives that shard's
// daemon: every shard gets its own payload, once, and no other.
func testEnqueueShards(t *testing.T, c redis.UniversalClient) {
	ctx := context.Background()
	s, _ := newStore(t, c)
	if err := s.EnqueueShards(ctx, map[int][]byte{0: []byte("for-0"), 1: []byte("for-1"), 4: []byte("for-4")}); err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueueShards(ctx, nil); err != nil {
		t.Fatalf("nothing to enqueue: %v", err)
	}
	for _, tc := range []struct {
		shard int
		want  []string
	}{{0, []string{"for-0"}}, {1, []string{"for-1"}}, {2, nil}, {4, []string{"for-4"}}} {
		entries, err := s.ForShard(tc.shard).Read(ctx, "c", 10, 10*time.Millisecond)
		if err != nil {
			t.Fatalf("read shard %d: %v", tc.shard, err)
		}
		var got []string
		for _, e := range entries {
			got = append(got, string(e.Payload))
		}
		if len(got) != len(tc.want) || (len(got) == 1 && got[0] != tc.want[0]) {
			t.Fatalf("shard %d's stream holds %q, want %q", tc.shard, got, tc.want)
		}
	}
}
