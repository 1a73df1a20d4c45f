package shard_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// TestShardOfVectors pins Jump consistent hash to values computed with the
// Python jump() of docs/shard-format.md (TestSpecPythonWriter checks whole
// files; these keep a change of the Go side visible on its own).
func TestShardOfVectors(t *testing.T) {
	tests := []struct {
		key    uint64
		shards int
		want   int
	}{
		{0, 1, 0},
		{0, 0, 0}, // fewer than one shard is one shard
		{0x821A0434B1F1DD6A, 2, 0},
		{0x821A0434B1F1DD6A, 3, 2},
		{0x821A0434B1F1DD6A, 10, 2},
		{0xEF46DB3751D8E999, 2, 1},
		{0xEF46DB3751D8E999, 3, 2},
		{0xEF46DB3751D8E999, 12, 7},
		{^uint64(0), 1000, 313},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%016x of %d", tc.key, tc.shards), func(t *testing.T) {
			if got := shard.ShardOf(tc.key, tc.shards); got != tc.want {
				t.Fatalf("ShardOf = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestShardOfMovesOnlyToTheNewShard is the property resharding relies on:
// going from N to N+1 shards, a user either stays or moves to shard N, and
// about 1/(N+1) of them move.
func TestShardOfMovesOnlyToTheNewShard(t *testing.T) {
	const users = 60000
	for _, n := range []int{1, 2, 3, 10} {
		t.Run(fmt.Sprintf("%d to %d", n, n+1), func(t *testing.T) {
			moved := 0
			for i := range users {
				k := shard.Key(fmt.Sprintf("u-%d", i))
				a, b := shard.ShardOf(k, n), shard.ShardOf(k, n+1)
				if a != b {
					if b != n {
						t.Fatalf("key %016x moved from %d to %d, not to the new shard %d", k, a, b, n)
					}
					moved++
				}
			}
			want := float64(users) / float64(n+1)
			if f := float64(moved); f < 0.95*want || f > 1.05*want {
				t.Fatalf("%d of %d users moved, want about %.0f", moved, users, want)
			}
		})
	}
}

// TestRingPartitionsAPopulation: N writers fed the same profiles, each
// keeping its shard's, publish files that hold every user exactly once, and
// each file reports its place in the ring.
func TestRingPartitionsAPopulation(t *testing.T) {
	const n, shards = 500, 3
	dir := t.TempDir()
	seen := map[string]int{}
	for s := range shards {
		ring := shard.RingInfo{Version: 7, Shard: s, Shards: shards}
		path := filepath.Join(dir, fmt.Sprintf("s%d.shard", s))
		w, err := shard.NewWriter(path, shard.WriterOptions{BlockRows: 16, Ring: &ring})
		if err != nil {
			t.Fatal(err)
		}
		g := shardgen.New(5)
		var p shard.Profile
		for i := range uint64(n) {
			g.Profile(i, &p)
			err := w.Add(&p)
			switch owned := ring.Owns(shard.Key(p.ID)); {
			case owned && err != nil:
				t.Fatal(err)
			case !owned && !errors.Is(err, shard.ErrNotInShard):
				t.Fatalf("Add of a user of another shard: %v, want ErrNotInShard", err)
			}
		}
		if _, err := w.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		r := openVerified(t, path)
		want := shard.RingInfo{Version: 7, Shard: s, Shards: shards, Scheme: shard.RingJump}
		if r.Ring() != want {
			t.Fatalf("ring %+v, want %+v", r.Ring(), want)
		}
		for i := range uint32(r.Rows()) {
			row, err := r.Row(i)
			if err != nil {
				t.Fatal(err)
			}
			if shard.ShardOf(row.Key(), shards) != s {
				t.Fatalf("row %d of shard %d has key %016x of shard %d", i, s, row.Key(), shard.ShardOf(row.Key(), shards))
			}
			seen[strings.Clone(row.ID())]++
		}
	}
	if len(seen) != n {
		t.Fatalf("%d distinct users across the shards, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("user %s is in %d shards", id, c)
		}
	}
}

func TestWriterRefusesABadRing(t *testing.T) {
	tests := []struct {
		name string
		ring shard.RingInfo
	}{
		{"no shards", shard.RingInfo{Shard: 0, Shards: 0}},
		{"id past the count", shard.RingInfo{Shard: 3, Shards: 3}},
		{"negative id", shard.RingInfo{Shard: -1, Shards: 3}},
		{"unknown scheme", shard.RingInfo{Shard: 0, Shards: 3, Scheme: 9}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := shard.NewWriter(filepath.Join(t.TempDir(), "x.shard"), shard.WriterOptions{Ring: &tc.ring})
			if err == nil {
				w.Abort()
				t.Fatal("NewWriter accepted the ring")
			}
		})
	}
}

// TestVersion2ReadsAsShardZeroOfOne: a file of the previous format version
// (no ring section) opens and reads as the whole population.
func TestVersion2ReadsAsShardZeroOfOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v3.shard")
	w, err := shard.NewWriter(path, shard.WriterOptions{BlockRows: 16})
	if err != nil {
		t.Fatal(err)
	}
	g := shardgen.New(2)
	var p shard.Profile
	for i := range uint64(100) {
		g.Profile(i, &p)
		if err := w.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v2 := filepath.Join(t.TempDir(), "v2.shard")
	if err := os.WriteFile(v2, shard.DowngradeToV2(b), 0o644); err != nil {
		t.Fatal(err)
	}
	r := openVerified(t, v2)
	if want := (shard.RingInfo{Shards: 1, Scheme: shard.RingJump}); r.Ring() != want || r.Rows() != 100 {
		t.Fatalf("v2 file: ring %+v, %d rows; want %+v, 100 rows", r.Ring(), r.Rows(), want)
	}
}
