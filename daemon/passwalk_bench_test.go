package daemon

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// BenchmarkSegmentWalk is the walk of a segment that every pass of a
// local-time or quiet-hours-delay campaign makes (ns/op is per member):
// members read from the memory-mapped shard file into the pipeline's
// Member, and the zone read as the pass filter reads it. Compare with
// campaigns' BenchmarkPassFilter (what the filter adds) to price a pass.
func BenchmarkSegmentWalk(b *testing.B) {
	const n = 100_000
	path := filepath.Join(b.TempDir(), "walk.shard")
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: 1})
	if err != nil {
		b.Fatal(err)
	}
	g := shardgen.New(3)
	var p shard.Profile
	for i := range uint64(n) {
		g.Profile(i, &p)
		if err := w.Add(&p); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		b.Fatal(err)
	}
	st, err := shard.OpenStore(path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	src := NewShardSource(st)
	buf := make([]campaigns.Member, 1000)
	zones := 0
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		it, err := src.Members("all", 0, false)
		if err != nil {
			b.Fatal(err)
		}
		for done < b.N {
			k, err := it.Next(buf)
			if err != nil {
				b.Fatal(err)
			}
			if k == 0 {
				break
			}
			for i := range buf[:k] {
				if buf[i].Profile.TimeZone() == "Asia/Kolkata" {
					zones++
				}
			}
			done += k
		}
		_ = it.Close()
	}
	if zones == 0 {
		b.Fatal("no member in Asia/Kolkata")
	}
}
