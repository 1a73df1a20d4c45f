package redisstate_test

import (
	"context"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
)

// BenchmarkCapsAdmit is one batch of the fan-out benchmark's cap check:
// 2,000 users × 3 channels under a 3-per-day rule over all channels.
func BenchmarkCapsAdmit(b *testing.B) {
	s, _ := newStore(b, newClient(b))
	caps := s.Caps()
	rules := []campaigns.CapRule{{Channel: campaigns.CapAll, Limit: 3, Window: campaigns.Duration(24 * time.Hour)}}
	reqs := make([]campaigns.CapRequest, 0, 6000)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		reqs = reqs[:0]
		for u := range 2000 {
			for _, ch := range []string{"apns", "email", "webhook"} {
				reqs = append(reqs, campaigns.CapRequest{User: uint64(i*2000 + u), Channel: ch, Msg: "bench-campaign"})
			}
		}
		if _, err := caps.Admit(ctx, reqs, rules, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*2000)/b.Elapsed().Seconds(), "users/s")
}

// BenchmarkCapsAdmitHeld is the same batch for users who already hold two
// messages of an earlier campaign within the window (the script's general
// path): one channel each is admitted, two are capped.
func BenchmarkCapsAdmitHeld(b *testing.B) {
	s, _ := newStore(b, newClient(b))
	caps := s.Caps()
	rules := []campaigns.CapRule{{Channel: campaigns.CapAll, Limit: 3, Window: campaigns.Duration(24 * time.Hour)}}
	reqs := make([]campaigns.CapRequest, 0, 6000)
	ctx := context.Background()
	batch := func(i int, msg string, chs ...string) []campaigns.CapRequest {
		reqs = reqs[:0]
		for u := range 2000 {
			for _, ch := range chs {
				reqs = append(reqs, campaigns.CapRequest{User: uint64(i*2000 + u), Channel: ch, Msg: msg})
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
		b.StartTimer()
		if _, err := caps.Admit(ctx, batch(i, "bench-campaign", "apns", "email", "webhook"), rules, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*2000)/b.Elapsed().Seconds(), "users/s")
}
