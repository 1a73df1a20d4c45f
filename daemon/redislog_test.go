package daemon

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestRedisClientLogsAreStructured: what go-redis prints itself reaches the
// daemon's JSON log as JSON, not as a bare text line in the middle of it.
func TestRedisClientLogsAreStructured(t *testing.T) {
	var buf bytes.Buffer
	installRedisLogger(slog.New(slog.NewJSONHandler(&buf, nil)))
	// An unknown client-side cache strategy is one message go-redis logs
	// from NewClient, without a server.
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ClientSideCacheStrategy: 99})
	c.Close()
	out := strings.TrimSpace(buf.String())
	if !strings.Contains(out, "ClientSideCacheStrategy") {
		t.Fatalf("go-redis's message did not reach the slog logger: %q", out)
	}
	for _, line := range strings.Split(out, "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["level"] != "WARN" || rec["component"] != "go-redis" {
			t.Fatalf("record %v, want level WARN and component go-redis", rec)
		}
	}
}
