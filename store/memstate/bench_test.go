package memstate_test

import (
	"context"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/memstate"
)

// BenchmarkDedupClaimConfirm: one op = 1,000 per-message claims and confirms.
func BenchmarkDedupClaimConfirm(b *testing.B) {
	ctx := context.Background()
	d := memstate.New().Dedup("bench")
	keys := make([]campaigns.DedupKey, 1000)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for j := range keys {
			keys[j] = campaigns.DedupKey{Scope: "f:bench", User: uint64(i*len(keys) + j), Channel: "email"}
		}
		if _, err := d.Claim(ctx, keys, time.Minute, time.Hour); err != nil {
			b.Fatal(err)
		}
		if err := d.Confirm(ctx, keys, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(keys))/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkCampaignBatch: one op = a batch of 1,000 users × 6 channels
// claimed, marked dispatched and closed.
func BenchmarkCampaignBatch(b *testing.B) {
	ctx := context.Background()
	s := memstate.New()
	r, err := s.Acquire(ctx, "bench", "bench", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	const slots = 6000
	all := campaigns.NewBitmap(slots)
	for i := range slots {
		all.Set(i)
	}
	counts := []campaigns.Count{{Channel: "email", Reason: "sent", N: slots}}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		first := uint64(i) * 10_000
		seq, err := s.ClaimBatch(ctx, r.Lease, first, first+9_999, slots)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.ReportBatch(ctx, r.Lease, campaigns.BatchReport{Seq: seq, Dispatched: all}); err != nil {
			b.Fatal(err)
		}
		if _, err := s.ReportBatch(ctx, r.Lease, campaigns.BatchReport{Seq: seq, Confirmed: all, Done: all, Counts: counts, Final: true}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*slots)/b.Elapsed().Seconds(), "msgs/s")
}
