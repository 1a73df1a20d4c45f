package channels

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		tls     TLS
		wantErr string
	}{
		{name: "zero value uses system roots", tls: TLS{}},
		{name: "missing CA file", tls: TLS{CAFile: filepath.Join(dir, "missing.pem")}, wantErr: "read CA bundle"},
		{name: "CA file without certificates", tls: TLS{CAFile: bad}, wantErr: "no PEM certificates"},
		{name: "server name kept", tls: TLS{ServerName: "api.push.apple.com"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.tls.Config()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ServerName != tc.tls.ServerName {
				t.Fatalf("ServerName = %q", cfg.ServerName)
			}
		})
	}
}
