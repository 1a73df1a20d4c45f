package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestBuildChannelsAPNsTransport(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	tests := []struct {
		transport string
		wantErr   string
	}{
		{transport: ""},
		{transport: "direct"},
		{transport: "apns2"},
		{transport: "http1", wantErr: "transport"},
	}
	for _, tc := range tests {
		t.Run("transport="+tc.transport, func(t *testing.T) {
			cfg := ChannelsConfig{APNs: &APNsConfig{Topic: "com.example.app", KeyID: "ABC123DEFG", TeamID: "TEAM123456",
				Key: Secret{value: keyPEM, source: "test"}, Transport: tc.transport}}
			specs, err := BuildChannels(cfg, slog.New(slog.DiscardHandler))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("BuildChannels = %v, want an error about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if specs["apns"].Channel == nil {
				t.Fatal("no apns channel built")
			}
		})
	}
}

// The email pool gets a worker per SMTP session, the default count included.
func TestBuildChannelsEmailWorkers(t *testing.T) {
	tests := []struct {
		connections, wantWorkers int
	}{
		{connections: 0, wantWorkers: 8},
		{connections: 2, wantWorkers: 4},
		{connections: 16, wantWorkers: 16},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint("connections=", tc.connections), func(t *testing.T) {
			cfg := ChannelsConfig{Email: &EmailConfig{Host: "smtp.example.com", TLSMode: "none", From: "a@example.com", Connections: tc.connections, DisablePipelining: true}}
			specs, err := BuildChannels(cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if got := specs["email"].Pool.Workers; got != tc.wantWorkers {
				t.Fatalf("workers = %d, want %d", got, tc.wantWorkers)
			}
		})
	}
}
