package webpush_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	webpushgo "github.com/SherClockHolmes/webpush-go"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/channels/webpush"
)

const benchBatch = 64

var benchContent = channels.WebPushContent{
	Title: "Your order has shipped",
	Body:  "Order #123456 left our warehouse and arrives Thursday.",
	Icon:  "https://cdn.shop.test/icons/truck-192.png",
	URL:   "https://shop.test/orders/123456",
	Tag:   "order-123456",
}

// accepted answers every request 201 without a network, so a benchmark
// measures the sender's own cost: JSON, ECDH, HKDF, AES-GCM, VAPID, request.
type accepted struct{}

func (accepted) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	return &http.Response{StatusCode: http.StatusCreated, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

func (accepted) Do(r *http.Request) (*http.Response, error) { return accepted{}.RoundTrip(r) }

func benchBatchOf(b *testing.B, r *rig, plain bool) []*channels.Message {
	batch := make([]*channels.Message, benchBatch)
	for i := range batch {
		batch[i] = message(r.subscribe(b, "bench"+strconv.Itoa(i), plain), benchContent)
	}
	return batch
}

func runBatches(b *testing.B, s *webpush.Sender, batch []*channels.Message) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for sent := 0; sent < b.N; sent += len(batch) {
		res := s.Send(ctx, batch[:min(len(batch), b.N-sent)])
		for _, r := range res {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	reportCPU(b, cpu)
}

// reportCPU adds the process's CPU per op since start. Against the sandbox
// that is sender and push service together, both in this process.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkSend is one op per message, sent in batches of 64 to the sandbox
// push service, which verifies VAPID and decrypts each body in this process.
func BenchmarkSend(b *testing.B) {
	for _, tc := range []struct {
		name  string
		plain bool
	}{{name: "https-h2"}, {name: "http1", plain: true}} {
		b.Run(tc.name, func(b *testing.B) {
			r := newRig(b, sandbox.WebPushOptions{})
			r.sb.Recorder.Limit = -1
			runBatches(b, r.sender, benchBatchOf(b, r, tc.plain))
		})
	}
}

// BenchmarkSendNoNetwork is the sender's CPU per message without a push
// service: the number to multiply by millions.
func BenchmarkSendNoNetwork(b *testing.B) {
	r := newRig(b, sandbox.WebPushOptions{})
	s, err := webpush.New(r.cfg, webpush.WithHTTPClient(&http.Client{Transport: accepted{}}), webpush.WithParallelism(1))
	if err != nil {
		b.Fatal(err)
	}
	runBatches(b, s, benchBatchOf(b, r, false))
}

// BenchmarkWebpushGoNoNetwork is the same message through
// SherClockHolmes/webpush-go v1.4.0, the library this package replaces.
func BenchmarkWebpushGoNoNetwork(b *testing.B) {
	r := newRig(b, sandbox.WebPushOptions{})
	subs := make([]*webpushgo.Subscription, benchBatch)
	for i := range subs {
		s := r.subscribe(b, "bench", false)
		subs[i] = &webpushgo.Subscription{Endpoint: s.Endpoint, Keys: webpushgo.Keys{P256dh: s.P256dh, Auth: s.Auth}}
	}
	payload := []byte(`{"title":"Your order has shipped","body":"Order #123456 left our warehouse and arrives Thursday.","icon":"https://cdn.shop.test/icons/truck-192.png","url":"https://shop.test/orders/123456","tag":"order-123456"}`)
	opts := &webpushgo.Options{HTTPClient: accepted{}, Subscriber: "ops@notifyd.test", TTL: 86400, Topic: "order-123456",
		Urgency: webpushgo.UrgencyNormal, VAPIDPublicKey: r.keys.pub, VAPIDPrivateKey: r.keys.priv}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for i := range b.N {
		resp, err := webpushgo.SendNotificationWithContext(ctx, payload, subs[i%len(subs)], opts)
		if err != nil {
			b.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	reportCPU(b, cpu)
}

// TestWebpushGoTraps pins why this package does not use webpush-go v1.4.0:
// a "mailto:" subscriber is sent as "mailto:mailto:", and every body is
// padded to 4096 bytes. If an upgrade fixes both, reconsider the library.
func TestWebpushGoTraps(t *testing.T) {
	r := newRig(t, sandbox.WebPushOptions{})
	sub := r.subscribe(t, "lib", true)
	var bodySize int64
	client := &http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
		bodySize = req.ContentLength
		return http.DefaultTransport.RoundTrip(req)
	})}
	tests := []struct {
		name       string
		subscriber string
		wantSub    string
	}{
		{name: "mailto URI is doubled", subscriber: "mailto:ops@notifyd.test", wantSub: "mailto:mailto:ops@notifyd.test"},
		{name: "bare address is prefixed once", subscriber: "ops@notifyd.test", wantSub: "mailto:ops@notifyd.test"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r.sb.Recorder.Reset()
			resp, err := webpushgo.SendNotificationWithContext(context.Background(), []byte(`{"title":"t"}`),
				&webpushgo.Subscription{Endpoint: sub.Endpoint, Keys: webpushgo.Keys{P256dh: sub.P256dh, Auth: sub.Auth}},
				&webpushgo.Options{HTTPClient: client, Subscriber: tc.subscriber, TTL: 60, VAPIDPublicKey: r.keys.pub, VAPIDPrivateKey: r.keys.priv})
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			recs := r.sb.Recorder.All()
			if len(recs) != 1 || recs[0].Status != http.StatusCreated {
				t.Fatalf("recorded %+v", recs)
			}
			if got := recs[0].Headers["vapid.sub"]; got != tc.wantSub {
				t.Fatalf("sub = %q, want %q", got, tc.wantSub)
			}
			if bodySize != 4096 || !strings.HasPrefix(string(recs[0].Body), `{"title":"t"}`) {
				t.Fatalf("body %d bytes (%q)", bodySize, recs[0].Body)
			}
		})
	}
}
