package daemon

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/deliverylog"
)

// BenchmarkOutcomeLogger is the delivery log's cost on a pool worker: one
// batch of 1,000 outcomes of the fan-out benchmark's kind (push, email,
// webhook) per iteration, reported per message.
func BenchmarkOutcomeLogger(b *testing.B) {
	for _, policy := range []deliverylog.FsyncPolicy{deliverylog.FsyncNone, deliverylog.FsyncInterval} {
		b.Run(string(policy), func(b *testing.B) {
			l, err := deliverylog.Open(deliverylog.Config{Dir: b.TempDir(), Fsync: policy, MaxDisk: 1 << 40})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close(context.Background())
			var n int
			next := channels.OutcomeFunc(func(context.Context, []channels.Outcome) { n++ })
			sinks := map[string]*OutcomeLogger{}
			for _, ch := range []string{"apns", "email", "webhook"} {
				sinks[ch] = &OutcomeLogger{Log: l, Masker: DeliveryLogConfig{}.Masker(), Channel: ch, Now: time.Now, Next: next}
			}
			batches := map[string][]channels.Outcome{}
			for ch := range sinks {
				outs := make([]channels.Outcome, 1000)
				for i := range outs {
					to := fmt.Sprintf("%064x", i)
					if ch == "email" {
						to = fmt.Sprintf("user%d@example.com", i)
					}
					outs[i] = channels.Outcome{Message: &channels.Message{ID: fmt.Sprintf("fanout-abc:%x:%s:0", i*7919, ch), Campaign: "fanout-abc",
						UserID: fmt.Sprintf("u%07d", i), UserKey: uint64(i * 7919), To: to}, Status: channels.OutcomeAccepted, Attempts: 1, Latency: time.Millisecond}
				}
				batches[ch] = outs
			}
			b.ReportAllocs()
			b.ResetTimer()
			chs := []string{"apns", "email", "webhook"}
			for i := range b.N {
				ch := chs[i%3]
				sinks[ch].Outcomes(context.Background(), batches[ch])
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/msg")
		})
	}
}
