package channels_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
)

// countSink counts outcomes and closes done at target.
type countSink struct {
	n      atomic.Int64
	target int64
	done   chan struct{}
}

func (c *countSink) Outcomes(_ context.Context, outs []channels.Outcome) {
	if c.n.Add(int64(len(outs))) == c.target {
		close(c.done)
	}
}

func benchMessages(n int, campaigns int) []*channels.Message {
	msgs := make([]*channels.Message, n)
	for i := range msgs {
		msgs[i] = &channels.Message{ID: fmt.Sprint(i), To: "token", Campaign: fmt.Sprintf("c%d", i%campaigns)}
	}
	return msgs
}

func benchPool(b *testing.B, batch, workers int, campaignLimit bool) (*channels.Pool, *countSink) {
	b.Helper()
	sink := &countSink{target: int64(b.N), done: make(chan struct{})}
	// A limiter that never makes anyone wait but does its arithmetic: the
	// overhead of the limiter is part of what is measured.
	account := rate.NewLimiter(rate.Limit(1e12), 1<<20)
	p, err := channels.NewWorkerPool(channelstest.NewNoop("noop", batch),
		channels.PoolConfig{Workers: workers, BatchSize: batch, QueueSize: 8192, Outcomes: sink},
		channels.WithAccountLimiter(account), channels.WithLogger(quiet()))
	if err != nil {
		b.Fatal(err)
	}
	if campaignLimit {
		for i := range 4 {
			if err := p.SetCampaignRate(fmt.Sprintf("c%d", i), rate.Limit(1e12), 1<<20); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := p.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	return p, sink
}

// cpuTime is the process's user+system CPU time. Reported per message it is
// the pool's cost independent of how busy the shared machine is.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/msg")
}

// BenchmarkPoolNoop measures the pool's own cost per message (queue, round
// robin, account and campaign limiters, classification, outcome, metrics)
// with a provider that answers instantly. ns/op is ns per message.
func BenchmarkPoolNoop(b *testing.B) {
	for _, bc := range []struct {
		batch, workers int
		campaignLimit  bool
	}{
		{1, 1, false}, {1, runtime.GOMAXPROCS(0), false}, {1, 1, true},
		{100, 1, false}, {100, runtime.GOMAXPROCS(0), false}, {100, 1, true},
	} {
		b.Run(fmt.Sprintf("batch=%d/workers=%d/campaign_limit=%v", bc.batch, bc.workers, bc.campaignLimit), func(b *testing.B) {
			msgs := benchMessages(4096, 4)
			p, sink := benchPool(b, bc.batch, bc.workers, bc.campaignLimit)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime(b)
			for sent := 0; sent < b.N; {
				n := min(256, b.N-sent)
				off := sent % (len(msgs) - 256)
				if _, err := p.Submit(ctx, channels.LaneNormal, msgs[off:off+n]...); err != nil {
					b.Fatal(err)
				}
				sent += n
			}
			<-sink.done
			b.StopTimer()
			reportCPU(b, cpu)
			if err := p.Close(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkPoolContention has GOMAXPROCS*4 goroutines submitting one message
// at a time into one pool: the worst case for the pool's lock.
func BenchmarkPoolContention(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			msgs := benchMessages(1024, 16)
			p, sink := benchPool(b, batch, runtime.GOMAXPROCS(0), false)
			ctx := context.Background()
			var next atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(4)
			b.ResetTimer()
			cpu := cpuTime(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					m := msgs[next.Add(1)%int64(len(msgs))]
					if _, err := p.Submit(ctx, channels.LaneNormal, m); err != nil {
						b.Error(err)
						return
					}
				}
			})
			<-sink.done
			b.StopTimer()
			reportCPU(b, cpu)
			if err := p.Close(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}
