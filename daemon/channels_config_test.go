package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
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
