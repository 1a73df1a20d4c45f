package email_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/email"
	"github.com/notifyd/notifyd/channels/sandbox"
)

// benchHTML and benchText make a ~3.5 KB multipart message, the size the
// issue measured with, personalised per recipient.
var (
	benchHTML = "<html><body><h1>Hello {{name}}</h1>" + strings.Repeat("<p>Our autumn collection is in: jackets, boots and scarves at member prices — see what is new this week in your store.</p>\n", 16) + "</body></html>"
	benchText = "Hello {{name}}\n" + strings.Repeat("Our autumn collection is in: jackets, boots and scarves at member prices.\n", 12)
)

func benchMessage(i int) *channels.Message {
	name := fmt.Sprintf("user%d", i)
	return &channels.Message{
		ID:             "m-" + name,
		IdempotencyKey: "camp1/" + name + "/email",
		To:             name + "@example.org",
		Mail: &channels.Mail{
			Subject:                 "Hello " + name + ", news",
			Text:                    strings.ReplaceAll(benchText, "{{name}}", name),
			HTML:                    strings.ReplaceAll(benchHTML, "{{name}}", name),
			ListUnsubscribe:         "https://example.com/unsub?u=" + name,
			ListUnsubscribeOneClick: true,
		},
	}
}

// BenchmarkSend sends multipart messages over STARTTLS + AUTH PLAIN to the
// loopback sandbox, interleaved in rounds with a reference client on the
// same sandbox: a minimal raw SMTP client (textproto over TLS, the same
// PIPELINING, one pre-built message, no MIME work, no result bookkeeping),
// i.e. the floor of this protocol on this machine in this run.
//
// One op is one message. ratio = notifyd's rate / the reference's rate;
// cpu-µs/msg and ref-cpu-µs/msg are process CPU (client and sandbox server
// together) per message; allocs/op is notifyd's (the reference runs outside
// the timed allocation count only in so far as it is small and constant).
//
// The sandbox offers CHUNKING: wire=bdat is the default (groups of
// MessagesPerWrite BDAT transactions per write), wire=data keeps to DATA as
// the reference does (as against smtp-sink, which offers no CHUNKING).
func BenchmarkSend(b *testing.B) {
	for _, bench := range []struct {
		conns int
		wire  wireMode
	}{{1, modePipelining}, {8, modePipelining}, {1, modeChunking}, {8, modeChunking}} {
		conns := bench.conns
		wire := map[wireMode]string{modePipelining: "data", modeChunking: "bdat"}[bench.wire]
		b.Run(fmt.Sprintf("conns=%d/wire=%s", conns, wire), func(b *testing.B) {
			sb := newSMTP(b, sandbox.SMTPOptions{RecorderLimit: -1})
			cfg := senderConfig(sb)
			bench.wire.apply(&cfg)
			cfg.Connections = conns
			cfg.MessagesPerConn = 1 << 30
			s := newSender(b, cfg)
			// As the daemon wires it: max(connections, 4) pool workers,
			// each sending batches of 50.
			const batchSize = 50
			callers := max(conns, 4)
			batches := make([][]*channels.Message, callers)
			for c := range batches {
				batches[c] = make([]*channels.Message, batchSize)
				for i := range batches[c] {
					batches[c][i] = benchMessage(c*batchSize + i)
				}
			}
			batch := batches[0]
			ref := newRefSMTP(b, sb, conns, batch[0])
			defer ref.close()
			ctx := context.Background()
			const round = 1024
			var own, refT roundTotals
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += round {
				n := min(round, b.N-done)
				b.StopTimer()
				refT.measure(func() { ref.send(b, n) })
				b.StartTimer()
				own.measure(func() {
					var next atomic.Int64
					var wg sync.WaitGroup
					for c := range callers {
						wg.Go(func() {
							for {
								sent := int(next.Add(batchSize)) - batchSize
								if sent >= n {
									return
								}
								for _, r := range s.Send(ctx, batches[c][:min(batchSize, n-sent)]) {
									if r.Err != nil {
										b.Error(r.Err)
										return
									}
								}
							}
						})
					}
					wg.Wait()
				})
			}
			b.StopTimer()
			own.report(b, "", b.N)
			refT.report(b, "ref-", b.N)
			b.ReportMetric(refT.wall.Seconds()/own.wall.Seconds(), "ratio")
		})
	}
}

type roundTotals struct{ wall, cpu time.Duration }

func (t *roundTotals) measure(f func()) {
	start, cpu0 := time.Now(), processCPU()
	f()
	t.wall += time.Since(start)
	t.cpu += processCPU() - cpu0
}

func (t *roundTotals) report(b *testing.B, prefix string, n int) {
	b.ReportMetric(float64(t.cpu)/float64(time.Microsecond)/float64(n), prefix+"cpu-µs/msg")
	b.ReportMetric(float64(n)/t.wall.Seconds(), prefix+"msgs/s")
}

// refSMTP is the reference client: conns sessions, each sending a fixed
// message with MAIL/RCPT/DATA pipelined behind the previous end of data.
type refSMTP struct {
	conns []*refConn
	data  []byte
}

type refConn struct {
	c  net.Conn
	tp *textproto.Conn
	w  *bufio.Writer
}

func newRefSMTP(b *testing.B, sb *sandbox.SMTP, conns int, m *channels.Message) *refSMTP {
	b.Helper()
	// The reference sends what notifyd sends: capture one message's bytes.
	cap := newOpenSMTP(b, sandbox.SMTPOptions{TLS: sandbox.SMTPNoTLS})
	cs := newSender(b, email.Config{Host: cap.Host(), Port: cap.Port(), TLSMode: email.TLSNone, From: "Notifyd <news@example.com>"})
	if r := cs.Send(context.Background(), []*channels.Message{m}); r[0].Err != nil {
		b.Fatal(r[0].Err)
	}
	raw := cap.Messages()[0].Raw
	data := []byte(strings.ReplaceAll(strings.ReplaceAll(string(raw), "\r\n", "\n"), "\n", "\r\n"))
	r := &refSMTP{data: data}
	for range conns {
		c, err := net.Dial("tcp", sb.Addr())
		if err != nil {
			b.Fatal(err)
		}
		tp := textproto.NewConn(c)
		step := func(code int, format string, args ...any) {
			if format != "" {
				if err := tp.PrintfLine(format, args...); err != nil {
					b.Fatal(err)
				}
			}
			if _, _, err := tp.ReadResponse(code); err != nil {
				b.Fatal(err)
			}
		}
		step(220, "")
		step(250, "EHLO ref")
		step(220, "STARTTLS")
		tc := tls.Client(c, &tls.Config{RootCAs: sb.CertPool(), ServerName: sb.Host()})
		tp = textproto.NewConn(tc)
		step(250, "EHLO ref")
		step(235, "AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+testUser+"\x00"+testPass)))
		r.conns = append(r.conns, &refConn{c: tc, tp: tp, w: tp.W})
	}
	return r
}

const refEnvelope = "MAIL FROM:<news@example.com>\r\nRCPT TO:<user0@example.org>\r\nDATA\r\n"

func (r *refSMTP) send(b *testing.B, n int) {
	var wg sync.WaitGroup
	per := (n + len(r.conns) - 1) / len(r.conns)
	for k, c := range r.conns {
		cnt := min(per, n-k*per)
		if cnt <= 0 {
			break
		}
		wg.Go(func() {
			buf := []byte(refEnvelope)
			read := func(codes ...int) {
				for _, code := range codes {
					if _, _, err := c.tp.ReadResponse(code); err != nil {
						b.Error(err)
					}
				}
			}
			for i := range cnt {
				if _, err := c.w.Write(buf); err != nil {
					b.Error(err)
					return
				}
				_ = c.w.Flush()
				if i == 0 {
					read(250, 250, 354)
				}
				buf = append(append(buf[:0], r.data...), ".\r\n"...)
				if i+1 < cnt {
					buf = append(buf, refEnvelope...)
				}
				if _, err := c.w.Write(buf); err != nil {
					b.Error(err)
					return
				}
				_ = c.w.Flush()
				read(250)
				if i+1 < cnt {
					read(250, 250, 354)
				}
				buf = buf[:0]
			}
		})
	}
	wg.Wait()
}

func (r *refSMTP) close() {
	for _, c := range r.conns {
		_ = c.tp.PrintfLine("QUIT")
		_ = c.c.Close()
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
