package webhook_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/channels/webhook"
)

// BenchmarkSend measures signed JSON webhooks to the loopback sandbox, which
// verifies every signature. One op is one request; req/s is the figure the
// issue's ≥ 20,000 target is about.
func BenchmarkSend(b *testing.B) {
	for _, conc := range []int{4, 8, 16, 64} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			sb := newSandbox(b, sandbox.WebhookOptions{RecorderLimit: -1})
			s := newSender(b, webhook.Config{URL: sb.URL() + "/hook", Concurrency: conc, MaxConnsPerHost: conc})
			const batchSize = 256
			batch := make([]*channels.Message, batchSize)
			for i := range batch {
				batch[i] = &channels.Message{
					ID:             fmt.Sprint(i),
					IdempotencyKey: fmt.Sprintf("bench/%d", i),
					Hook:           &channels.Hook{Body: []byte(`{"event":"campaign.sent","user":"u-0001","campaign":"c-42","data":{"title":"Hello","n":1}}`)},
				}
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu0 := time.Now(), processCPU()
			for sent := 0; sent < b.N; sent += batchSize {
				n := min(batchSize, b.N-sent)
				for _, r := range s.Send(ctx, batch[:n]) {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/req")
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
			b.ReportMetric(float64(sb.Connections()), "conns")
		})
	}
}

func BenchmarkSign(b *testing.B) {
	body := []byte(`{"event":"campaign.sent","user":"u-0001","campaign":"c-42","data":{"title":"Hello","n":1}}`)
	at := time.Unix(1_700_000_000, 0)
	b.ReportAllocs()
	for b.Loop() {
		_ = webhook.Sign(testSecret, at, body)
	}
}

// processCPU is user+system CPU of the whole test process (sender and
// sandbox together): on a shared machine CPU per op is steadier than
// wall-clock throughput.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
