package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// TestFrequencyCapsAcrossDaemons: two daemons share one Redis and a global
// cap of 2 messages per user per day. A campaign on each daemon reaches
// every SMS recipient twice; a flow on top is then capped for every user
// who has a phone, and an exempt flow is not.
func TestFrequencyCapsAcrossDaemons(t *testing.T) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it)")
	}
	prefix := redisPrefix(t, url)
	conf := func(owner string) string {
		return fmt.Sprintf("redis:\n  url: %s\n  prefix: %q\nengine: {owner: %s}\npolicies:\n  frequency_caps:\n    - {channel: all, limit: 2, window: 24h}\n", url, prefix, owner)
	}
	a, b := startDaemon(t, conf("daemon-a")), startDaemon(t, conf("daemon-b"))

	waitDone := func(td *testDaemon, path string, n float64) map[string]any {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, body := td.do(t, "GET", path, testToken, "", nil)
			counts, _ := body["counts"].(map[string]any)
			sms, _ := counts["sms"].(map[string]any)
			var total float64
			for _, v := range sms {
				total += v.(float64)
			}
			if (body["status"] == "completed" || n > 0) && total >= n && (n > 0 || total > 0) {
				return sms
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never settled: %v", path, body)
			}
			time.Sleep(20 * time.Millisecond) // polling the API
		}
	}
	campaign := func(td *testDaemon, id string) map[string]any {
		t.Helper()
		body := `{"id":"` + id + `","segment":"all","channels":["sms"],"content":{"sms":{"body":"Hi {{ profile.first_name | default: 'there' }}"}}}`
		if status, resp := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(body)); status != 201 {
			t.Fatalf("create %s: %d %v", id, status, resp)
		}
		return waitDone(td, "/v1/campaigns/"+id, 300)
	}
	first := campaign(a, "caps-1")
	second := campaign(b, "caps-2")
	sent := first["sent"].(float64)
	if sent == 0 || second["sent"] != sent || second["capped"] != nil {
		t.Fatalf("second campaign (the second message per user): %v, first %v", second, first)
	}

	flow := func(id, capJSON string) map[string]any {
		t.Helper()
		body := `{"id":"` + id + `","trigger":{"event":"ping"},"channels":["sms"],"reentry":"0s"` + capJSON + `,"content":{"sms":{"body":"ping"}}}`
		if status, resp := a.do(t, "POST", "/v1/flows", testToken, "application/json", []byte(body)); status != 201 {
			t.Fatalf("create flow %s: %d %v", id, status, resp)
		}
		var batch []map[string]any
		for i := range 20 {
			batch = append(batch, map[string]any{"flow": id, "user_id": shardgen.ID(uint64(i))})
		}
		raw, _ := json.Marshal(map[string]any{"triggers": batch})
		if status, resp := a.do(t, "POST", "/v1/triggers", testToken, "application/json", raw); status != 202 {
			t.Fatalf("fire %s: %d %v", id, status, resp)
		}
		return waitDone(a, "/v1/flows/"+id, 20)
	}
	capped := flow("ping", "")
	if capped["sent"] != nil || capped["capped"] == nil {
		t.Fatalf("flow after two campaigns: %v, want every user with a phone capped", capped)
	}
	exempt := flow("ping-exempt", `,"frequency_cap":{"exempt":true}`)
	if exempt["capped"] != nil || exempt["sent"] != capped["capped"] {
		t.Fatalf("exempt flow: %v, want %v sent", exempt, capped["capped"])
	}
	if got, want := a.sms.n.Load()+b.sms.n.Load(), int64(2*sent+exempt["sent"].(float64)); got != want {
		t.Fatalf("the SMS channels saw %d messages, want %d: a capped message leaked", got, want)
	}
}
