package email_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/sandbox"
)

// BenchmarkSend measures multipart messages over STARTTLS + AUTH PLAIN to the
// loopback sandbox with 1 and 8 pooled sessions. One op is one message;
// msgs/s and msgs/conn are the figures the issue asks for.
func BenchmarkSend(b *testing.B) {
	for _, conns := range []int{1, 8} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			sb := newSMTP(b, sandbox.SMTPOptions{RecorderLimit: -1})
			cfg := senderConfig(sb)
			cfg.Connections = conns
			cfg.MessagesPerConn = 1 << 30
			s := newSender(b, cfg)
			const batchSize = 64
			batch := make([]*channels.Message, batchSize)
			for i := range batch {
				batch[i] = mailMsg(fmt.Sprintf("user%d@example.org", i))
				batch[i].Mail.ListUnsubscribe = "https://example.com/unsub?u=1"
				batch[i].Mail.ListUnsubscribeOneClick = true
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
			elapsed := time.Since(start)
			b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/msg")
			b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/msg")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(sb.Accepted())/float64(max(sb.Connections(), 1)), "msgs/conn")
		})
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
