package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "token")
	if err := os.WriteFile(secretFile, []byte("file-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFYD_TEST_TOKEN", "env-token-0123456789")
	tests := []struct {
		name    string
		yaml    string
		wantErr string
		check   func(t *testing.T, c *Config)
	}{
		{
			name: "defaults", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\n",
			check: func(t *testing.T, c *Config) {
				if c.Admin.Listen != "127.0.0.1:8080" || c.Redis.Prefix != "notifyd:" || time.Duration(c.Shard.PollInterval) != 2*time.Second {
					t.Fatalf("defaults not applied: %+v", c)
				}
			},
		},
		{
			name: "token from env", yaml: "shard: {path: /x}\nadmin: {token: {env: NOTIFYD_TEST_TOKEN}}\n",
			check: func(t *testing.T, c *Config) {
				if c.Admin.Token.Value() != "env-token-0123456789" {
					t.Fatal("env secret not read")
				}
			},
		},
		{
			name: "token from file", yaml: fmt.Sprintf("shard: {path: /x}\nadmin: {token: {file: %s}}\n", secretFile),
			check: func(t *testing.T, c *Config) {
				if c.Admin.Token.Value() != "file-token-0123456789" {
					t.Fatalf("file secret = %q", c.Admin.Token.Value())
				}
			},
		},
		{name: "missing env var", yaml: "shard: {path: /x}\nadmin: {token: {env: NOTIFYD_NOT_SET_ANYWHERE}}\n", wantErr: "NOTIFYD_NOT_SET_ANYWHERE is not set"},
		{name: "missing shard", yaml: "admin: {token: inline-token-0123456789}\n", wantErr: "shard.path"},
		{name: "missing token", yaml: "shard: {path: /x}\n", wantErr: "admin.token"},
		{name: "short token", yaml: "shard: {path: /x}\nadmin: {token: short}\n", wantErr: "at least 16"},
		{
			name: "frequency caps", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\npolicies:\n  frequency_caps:\n    - {channel: all, limit: 3, window: 24h}\n    - {channel: sms, limit: 1, window: 1h}\n",
			check: func(t *testing.T, c *Config) {
				if got := fmt.Sprint(c.Policies.CapRules()); got != "[{all 3 86400000000000} {sms 1 3600000000000}]" {
					t.Fatalf("cap rules = %s", got)
				}
			},
		},
		{name: "frequency cap without a limit", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\npolicies: {frequency_caps: [{channel: all, window: 24h}]}\n", wantErr: "policies.frequency_caps[0].limit"},
		{name: "frequency cap on an unknown channel", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\npolicies: {frequency_caps: [{channel: fax, limit: 1, window: 1h}]}\n", wantErr: "policies.frequency_caps[0].channel"},
		{name: "frequency cap with a typo", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\npolicies: {frequency_caps: [{channel: all, limt: 1, window: 1h}]}\n", wantErr: "limt"},
		{name: "typo in a key", yaml: "shard: {path: /x, pol_interval: 1s}\nadmin: {token: inline-token-0123456789}\n", wantErr: "pol_interval"},
		{name: "bad duration", yaml: "shard: {path: /x, poll_interval: soon}\nadmin: {token: inline-token-0123456789}\n", wantErr: "parse duration"},
		{
			name: "redis cluster", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\nredis: {cluster_addrs: [10.0.0.1:7000, 'redis-b:7001'], password: cluster-pass}\n",
			check: func(t *testing.T, c *Config) {
				if !c.Redis.Enabled() || len(c.Redis.ClusterAddrs) != 2 || c.Redis.Password.Value() != "cluster-pass" {
					t.Fatalf("cluster config: %+v", c.Redis)
				}
			},
		},
		{name: "redis url and cluster", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\nredis: {url: redis://h:6379/0, cluster_addrs: [h:7000]}\n", wantErr: "url and cluster_addrs are both set"},
		{name: "redis cluster address without port", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\nredis: {cluster_addrs: [h]}\n", wantErr: "redis.cluster_addrs[0]"},
		{name: "cap group bits out of range", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\nredis: {url: redis://h:6379/0, cap_group_bits: 40}\n", wantErr: "redis.cap_group_bits"},
		{
			name: "cap group bits", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\nredis: {url: redis://h:6379/0, cap_group_bits: 20}\n",
			check: func(t *testing.T, c *Config) {
				if c.Redis.CapGroupBits != 20 {
					t.Fatalf("cap_group_bits %d, want 20", c.Redis.CapGroupBits)
				}
			},
		},
		{name: "redis url with password", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\nredis: {url: redis://h:6379/0, password: p}\n", wantErr: "go with cluster_addrs"},
		{name: "apns without topic", yaml: "shard: {path: /x}\nadmin: {token: inline-token-0123456789}\nchannels: {apns: {key_id: K}}\n", wantErr: "channels.apns.topic"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	c, err := ParseConfig([]byte("shard: {path: /x}\nadmin: {token: super-secret-token-42}\nredis: {url: redis://:hunter2-password@127.0.0.1:6379/0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "admin", c.Admin, "redis", c.Redis, "token", c.Admin.Token)
	for _, text := range []string{fmt.Sprintf("%v %+v %#v", c, c, c), logged.String()} {
		for _, secret := range []string{"super-secret-token-42", "hunter2-password"} {
			if strings.Contains(text, secret) {
				t.Fatalf("secret %q printed: %s", secret, text)
			}
		}
	}
}

func TestExampleConfigParses(t *testing.T) {
	for _, v := range []string{"NOTIFYD_ADMIN_TOKEN", "TWILIO_AUTH_TOKEN", "SMTP_PASSWORD", "WEBHOOK_SECRET", "VAPID_PRIVATE_KEY", "NOTIFYD_REDIS_URL"} {
		t.Setenv(v, "example-value-0123456789")
	}
	example, err := os.ReadFile("../notifyd.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The example's secret files live under /run/secrets; stand them in.
	dir := t.TempDir()
	for _, name := range []string{"apns-key.p8", "fcm-service-account.json"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := ParseConfig([]byte(strings.ReplaceAll(string(example), "/run/secrets/", dir+"/")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Channels.APNs == nil || c.Channels.FCM == nil || c.Channels.Email == nil || c.Channels.SMS == nil || c.Channels.WebPush == nil || c.Channels.Webhook == nil {
		t.Fatalf("example does not configure every channel: %+v", c.Channels)
	}
}

func TestComposeConfigParses(t *testing.T) {
	t.Setenv("NOTIFYD_REDIS_URL", "redis://redis:6379/0")
	t.Setenv("NOTIFYD_ADMIN_TOKEN", "compose-token-0123456789")
	t.Setenv("WEBHOOK_SECRET", "s3cret")
	c, err := LoadConfig("../deploy/notifyd.compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Shard.Path != "/var/lib/notifyd/shard.bin" || !c.Redis.URL.Set() || c.Channels.Webhook == nil {
		t.Fatalf("compose config: %+v", c)
	}
}
