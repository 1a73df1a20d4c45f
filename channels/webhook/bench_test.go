package webhook_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/channels/webhook"
)

var benchBody = []byte(`{"event":"campaign.sent","user":"u-0001","campaign":"c-42","data":{"title":"Hello","n":1}}`)

// BenchmarkSend sends signed JSON webhooks to the loopback sandbox (which
// verifies every signature) as the daemon wires it — conc pool workers, one
// message per Send — interleaved in rounds with a reference client on the
// same sandbox: a raw net/http loop (conc goroutines, a keep-alive transport
// of conc connections, a pre-signed body, no classification), the floor of
// net/http on this machine in this run.
//
// One op is one request. ratio = notifyd's rate / the reference's rate;
// cpu-µs/req and ref-cpu-µs/req are process CPU (client and sandbox receiver
// together) per request.
func BenchmarkSend(b *testing.B) {
	for _, conc := range []int{8, 64} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			sb := newSandbox(b, sandbox.WebhookOptions{RecorderLimit: -1})
			url := sb.URL() + "/hook"
			s := newSender(b, webhook.Config{URL: url, MaxConnsPerHost: conc})
			msgs := make([]*channels.Message, conc)
			for i := range msgs {
				msgs[i] = &channels.Message{ID: fmt.Sprint(i), IdempotencyKey: fmt.Sprintf("bench/%d", i), Hook: &channels.Hook{Body: benchBody}}
			}
			ref := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}}
			defer ref.CloseIdleConnections()
			sig := webhook.Sign(testSecret, time.Now(), benchBody)
			ctx := context.Background()
			const round = 2000
			var own, refT roundTotals
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += round {
				n := min(round, b.N-done)
				b.StopTimer()
				refT.measure(func() {
					parallel(conc, n, func(int) error {
						req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(benchBody))
						req.Header.Set("Content-Type", "application/json")
						req.Header.Set(webhook.DefaultSignatureHeader, sig)
						resp, err := ref.Do(req)
						if err != nil {
							return err
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						_ = resp.Body.Close()
						if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusAccepted {
							return fmt.Errorf("reference: status %d", resp.StatusCode)
						}
						return nil
					})
				})
				b.StartTimer()
				own.measure(func() {
					parallel(conc, n, func(w int) error {
						return s.Send(ctx, msgs[w:w+1])[0].Err
					})
				})
			}
			b.StopTimer()
			own.report(b, "", b.N)
			refT.report(b, "ref-", b.N)
			b.ReportMetric(refT.wall.Seconds()/own.wall.Seconds(), "ratio")
			b.ReportMetric(float64(sb.Connections()), "conns")
		})
	}
}

// parallel runs n calls of f over workers goroutines; f gets its worker's index.
func parallel(workers, n int, f func(w int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	for w := range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := f(w); err != nil {
					once.Do(func() { panic(err) })
				}
			}
		})
	}
	wg.Wait()
}

type roundTotals struct{ wall, cpu time.Duration }

func (t *roundTotals) measure(f func()) {
	start, cpu0 := time.Now(), processCPU()
	f()
	t.wall += time.Since(start)
	t.cpu += processCPU() - cpu0
}

func (t *roundTotals) report(b *testing.B, prefix string, n int) {
	b.ReportMetric(float64(t.cpu)/float64(time.Microsecond)/float64(n), prefix+"cpu-µs/req")
	b.ReportMetric(float64(n)/t.wall.Seconds(), prefix+"req/s")
}

func BenchmarkSign(b *testing.B) {
	at := time.Unix(1_700_000_000, 0)
	b.ReportAllocs()
	for b.Loop() {
		_ = webhook.Sign(testSecret, at, benchBody)
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
