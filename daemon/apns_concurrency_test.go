package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/sandbox"
)

// TestAPNsConcurrencyFollowsServerStreams drives the APNs channel as the
// daemon builds it (default pool) against the APNs fake, which holds every
// push for a while: the pushes in flight at once must reach what the
// server's SETTINGS_MAX_CONCURRENT_STREAMS allows over the connections —
// the pool's workers must not be the cap, as 256 single-push workers were —
// and never exceed it.
func TestAPNsConcurrencyFollowsServerStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("holds pushes for a second")
	}
	tests := []struct {
		name           string
		streamsPerConn uint32
		connections    int
		// latency holds each push: long enough that the first pushes are
		// still held when the last of the streams' worth start, even on a
		// loaded machine (2,000 starts take a while).
		latency time.Duration
	}{
		{"APNs' 1000 streams, 2 connections", 1000, 2, time.Second},
		{"a server granting 150 streams, 2 connections", 150, 2, 250 * time.Millisecond},
		{"a server granting 300 streams, 3 connections", 300, 3, 250 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				t.Fatal(err)
			}
			fake, err := sandbox.NewAPNs(sandbox.APNsOptions{TokenKey: &key.PublicKey, KeyID: "KEY1234567", TeamID: "TEAM123456",
				MaxConcurrentStreams: tc.streamsPerConn, RecordLimit: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer fake.Close()
			fake.Faults.Add(sandbox.Fault{Match: "*", Latency: tc.latency})
			dir := t.TempDir()
			keyFile, caFile := filepath.Join(dir, "key.p8"), filepath.Join(dir, "ca.pem")
			if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(caFile, fake.CertPEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := ParseConfig([]byte(fmt.Sprintf("shard: {path: /x}\nadmin: {token: 0123456789abcdef0123}\nchannels:\n  apns:\n    topic: com.example.app\n    host: %s\n    key_id: KEY1234567\n    team_id: TEAM123456\n    key: {file: %q}\n    connections: %d\n    tls: {ca_file: %q}\n",
				fake.URL(), keyFile, tc.connections, caFile)))
			if err != nil {
				t.Fatal(err)
			}
			chans, err := BuildChannels(cfg.Channels, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			spec := chans[channels.APNs]
			defer spec.Channel.(interface{ Close() }).Close()

			want := int(tc.streamsPerConn) * tc.connections
			n := spec.Pool.Workers*spec.Pool.BatchSize + want
			var done, accepted atomic.Int64
			finished := make(chan struct{})
			pool, err := channels.NewWorkerPool(spec.Channel, channels.PoolConfig{
				Workers: spec.Pool.Workers, BatchSize: spec.Pool.BatchSize, QueueSize: n, MaxAttempts: 1,
				Outcomes: channels.OutcomeFunc(func(_ context.Context, outs []channels.Outcome) {
					for _, o := range outs {
						if o.Status == channels.OutcomeAccepted {
							accepted.Add(1)
						}
					}
					if done.Add(int64(len(outs))) == int64(n) {
						close(finished)
					}
				}),
			})
			if err != nil {
				t.Fatal(err)
			}
			msgs := make([]*channels.Message, n)
			push := &channels.Push{Title: "Hi"}
			for i := range msgs {
				msgs[i] = &channels.Message{ID: fmt.Sprint(i), To: fmt.Sprintf("%064x", i+1), Push: push}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if _, err := pool.Submit(ctx, channels.LaneNormal, msgs...); err != nil {
				t.Fatal(err)
			}
			if err := pool.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer pool.Close(context.Background())
			select {
			case <-finished:
			case <-ctx.Done():
				t.Fatalf("%d of %d outcomes after 60s", done.Load(), n)
			}
			if accepted.Load() != int64(n) {
				t.Fatalf("%d of %d pushes accepted", accepted.Load(), n)
			}
			// Never more than the server allows; at least 95% of it (the
			// old default, 256 single-push workers, reached 256 of 300).
			// Not exactly all of it: on a loaded machine a Send's last
			// few pushes may start after its first ones were answered.
			if peak := fake.PeakInFlight(); peak > want || peak < want*95/100 {
				t.Errorf("peak pushes in flight %d, want %d or a little less (%d connections × %d streams; pool %d workers × batch %d)",
					peak, want, tc.connections, tc.streamsPerConn, spec.Pool.Workers, spec.Pool.BatchSize)
			}
		})
	}
}
