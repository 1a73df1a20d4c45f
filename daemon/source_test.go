package daemon

import (
	"context"
	"errors"
	"testing"

	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// writeRingShard publishes generation gen of shard `ring` at path: the
// users of the first n whom the ring gives to that shard.
func writeRingShard(t *testing.T, path string, gen uint64, ring shard.RingInfo, n int) {
	t.Helper()
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: gen, Ring: &ring})
	if err != nil {
		t.Fatal(err)
	}
	g := shardgen.New(3)
	var p shard.Profile
	for i := range uint64(n) {
		g.Profile(i, &p)
		if !ring.Owns(shard.Key(p.ID)) {
			continue
		}
		if err := w.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestShardSourceRefusesAnotherRing: a reshard publishes a file of another
// ring under the daemon; until it restarts (and joins the new ring) the
// source refuses it instead of mixing two rings' members in one part.
func TestShardSourceRefusesAnotherRing(t *testing.T) {
	path := t.TempDir() + "/members.shard"
	oldRing := shard.RingInfo{Version: 1, Shard: 0, Shards: 2, Scheme: shard.RingJump}
	writeRingShard(t, path, 1, oldRing, 400)
	st, err := shard.OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	src := NewShardSource(st).OnRing(oldRing)
	it, err := src.Members("all", 0, false)
	if err != nil {
		t.Fatalf("members on the daemon's own ring: %v", err)
	}
	_ = it.Close()

	writeRingShard(t, path, 2, shard.RingInfo{Version: 2, Shard: 0, Shards: 3, Scheme: shard.RingJump}, 400)
	if _, err := st.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Members("all", 0, false); !errors.Is(err, ErrRingChanged) {
		t.Fatalf("members after a reshard: %v, want ErrRingChanged", err)
	}
	if _, err := src.Pin(); !errors.Is(err, ErrRingChanged) {
		t.Fatalf("pin after a reshard: %v, want ErrRingChanged", err)
	}
}
