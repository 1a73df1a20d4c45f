package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigReportsEveryProblemAtOnce: unknown keys, mistyped values,
// unset variables and missing secret files in one answer, each with its
// line and key path and no Go type name.
func TestConfigReportsEveryProblemAtOnce(t *testing.T) {
	yaml := `shard:
  path: /tmp/x
  poll_interval: soon
admin:
  token: {env: NOTIFYD_TEST_UNSET_TOKEN}
engine:
  batch_sise: 10
  max_open_batches: many
channels:
  apns:
    topic: com.example
    key: {file: /nonexistent/apns-key.p8}
  fcm:
    credentials: {file: /nonexistent/fcm.json}
  webhook:
    allowed_hosts: example.com
`
	_, err := ParseConfig([]byte(yaml))
	var errs ConfigErrors
	if !errors.As(err, &errs) {
		t.Fatalf("ParseConfig error %v (%T), want ConfigErrors", err, err)
	}
	want := []string{
		`line 3: shard.poll_interval: parse duration "soon"`,
		`line 5: admin.token: environment variable NOTIFYD_TEST_UNSET_TOKEN is not set`,
		`line 7: engine.batch_sise: unknown key batch_sise; did you mean batch_size?`,
		`line 8: engine.max_open_batches: "many" is not an integer`,
		`line 12: channels.apns.key: read secret file`,
		`line 14: channels.fcm.credentials: read secret file`,
		`line 16: channels.webhook.allowed_hosts: want a list`,
		`line 13: channels.fcm.project_id: required`,
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q:\n%s", w, msg)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(errs), len(want), msg)
	}
	for _, goName := range []string{"daemon.", "Config", "int64", "time.Duration"} {
		if strings.Contains(msg, goName) {
			t.Errorf("error names the Go type %q:\n%s", goName, msg)
		}
	}
}

// TestConfigLayersFiles: a later file fills and overrides an earlier one,
// and errors name the file they are in.
func TestConfigLayersFiles(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.yaml")
	frag := filepath.Join(dir, "frag.yaml")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(base, "admin:\n  listen: 127.0.0.1:9999\nengine:\n  batch_size: 10\n")
	write(frag, "shard:\n  path: /tmp/x\nadmin:\n  token: layered-token-0123456789\n")
	c, err := LoadConfig(base, frag)
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Listen != "127.0.0.1:9999" || c.Admin.Token.Value() != "layered-token-0123456789" || c.Engine.BatchSize != 10 {
		t.Errorf("layered config: listen %q, token set %v, batch %d", c.Admin.Listen, c.Admin.Token.Set(), c.Engine.BatchSize)
	}
	write(frag, "shard:\n  path: /tmp/x\n  colour: red\n")
	_, err = LoadConfig(base, frag)
	if err == nil || !strings.Contains(err.Error(), frag+":3: shard.colour: unknown key") {
		t.Errorf("error %v, want one located at %s:3", err, frag)
	}
}

// TestOptionalSecret: optional: true turns an unset variable into an unset
// secret, which is how the example leaves Redis out.
func TestOptionalSecret(t *testing.T) {
	c, err := ParseConfig([]byte("shard: {path: /x}\nadmin: {token: optional-test-token-0123}\nredis:\n  url: {env: NOTIFYD_TEST_UNSET_REDIS, optional: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.Enabled() {
		t.Errorf("redis enabled from an unset optional variable")
	}
}
