package apns

import (
	"context"
	"log/slog"
	"testing"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/sandbox"
)

// BenchmarkAPNsSend pushes through each transport to an in-process
// sandbox over loopback HTTP/2+TLS. ns/op and allocs/op are per push and
// include the sandbox's share (same process); TestAPNsLoad separates them.
func BenchmarkAPNsSend(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"direct", []Option{WithTransport(TransportDirect)}},
		{"apns2-coalesced", []Option{WithTransport(TransportAPNs2), WithWriteCoalescing(true)}},
		{"apns2-plain", []Option{WithTransport(TransportAPNs2), WithWriteCoalescing(false)}},
	} {
		b.Run(tc.name, func(b *testing.B) { benchmarkSend(b, tc.opts...) })
	}
}

func benchmarkSend(b *testing.B, opts ...Option) {
	key, keyPEM := newP8(b)
	fake, err := sandbox.NewAPNs(sandbox.APNsOptions{TokenKey: &key.PublicKey, KeyID: testKeyID, TeamID: testTeamID, RecordLimit: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer fake.Close()
	s, err := New(Config{Topic: testTopic, Host: fake.URL(), KeyID: testKeyID, TeamID: testTeamID, Key: keyPEM, TLS: channels.TLS{RootCAs: fake.CertPool()}},
		append([]Option{WithConnections(4), WithMaxInFlight(400), WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	msg := loadMessage()
	batch := make([]*channels.Message, 4000)
	for i := range batch {
		batch[i] = msg
	}
	for _, r := range s.Send(context.Background(), batch[:400]) {
		if r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		k := min(len(batch), b.N-done)
		for _, r := range s.Send(context.Background(), batch[:k]) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		done += k
	}
}

// BenchmarkPayload is the part of a push that is ours alone: payload,
// headers' inputs and the apns-id.
func BenchmarkPayload(b *testing.B) {
	msg := loadMessage()
	msg.IdempotencyKey = "campaign-42/user-1234567/apns"
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		out, err := appendPayload(buf[:0], msg.Push, "alert")
		if err != nil {
			b.Fatal(err)
		}
		_ = apnsID(msg.IdempotencyKey)
		buf = out
	}
}
