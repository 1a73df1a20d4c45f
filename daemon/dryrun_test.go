package daemon

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestDryRunThroughTheAPI is the end-to-end dry run: shard file, daemon,
// admin API, SMS pool. The dry run sends nothing and stores nothing, its
// counts equal the real run's, and a test send reaches the named users only.
func TestDryRunThroughTheAPI(t *testing.T) {
	td := startDaemon(t)
	campaign := `{"id":"dry-e2e","segment":"all","channels":["sms"],"content":{"missing":"skip","sms":{"body":"Hi {{ profile.first_name }}"}}}`

	status, rep := td.do(t, "POST", "/v1/campaigns?dry_run=true&sample=2", testToken, "application/json", []byte(campaign))
	if status != 200 || rep["dry_run"] != true || rep["ok"] != true {
		t.Fatalf("dry run: %d %v", status, rep)
	}
	if n := td.sms.n.Load(); n != 0 {
		t.Fatalf("dry run sent %d messages", n)
	}
	if status, _ := td.do(t, "GET", "/v1/campaigns/dry-e2e", testToken, "", nil); status != 404 {
		t.Fatalf("dry run stored the campaign: %d", status)
	}
	previews := rep["previews"].([]any)
	if len(previews) != 2 {
		t.Fatalf("%d previews, want 2", len(previews))
	}
	user := previews[0].(map[string]any)["user"].(string)
	audience := rep["audience"].(map[string]any)["sms"].(map[string]any)
	if rep["members"].(float64) != 300 {
		t.Fatalf("members = %v, want 300", rep["members"])
	}

	status, body := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(campaign))
	if status != 201 {
		t.Fatalf("create: %d %v", status, body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for body["status"] != "completed" {
		if time.Now().After(deadline) {
			t.Fatalf("never completed: %v", body)
		}
		time.Sleep(20 * time.Millisecond) // polling the API
		_, body = td.do(t, "GET", "/v1/campaigns/dry-e2e", testToken, "", nil)
	}
	counts := body["counts"].(map[string]any)["sms"].(map[string]any)
	want := map[string]any{}
	for k, v := range audience {
		if k == "would_send" {
			k = "sent"
		}
		want[k] = v
	}
	if fmt.Sprint(want) != fmt.Sprint(counts) {
		t.Fatalf("dry run %v, real run %v", want, counts)
	}
	if int64(counts["sent"].(float64)) != td.sms.n.Load() {
		t.Fatalf("counted %v sent, channel saw %d", counts["sent"], td.sms.n.Load())
	}

	before := td.sms.n.Load()
	status, res := td.do(t, "POST", "/v1/campaigns/dry-e2e/test-send", testToken, "application/json", []byte(`{"users":["`+user+`","ghost"]}`))
	if status != 200 {
		t.Fatalf("test send: %d %v", status, res)
	}
	results := res["results"].([]any)
	first, second := results[0].(map[string]any), results[1].(map[string]any)
	sms := first["channels"].(map[string]any)["sms"]
	if first["found"] != true || second["found"] != false || (sms != "sent" && sms != "no_address" && sms != "no_consent" && sms != "render_error") {
		t.Fatalf("test send results %v", results)
	}
	if sent := td.sms.n.Load() - before; (sms == "sent") != (sent == 1) || sent > 1 {
		t.Fatalf("test send: %d messages reached the channel for result %v", sent, sms)
	}
	if status, res := td.do(t, "POST", "/v1/campaigns/dry-e2e/test-send", testToken, "application/json", []byte(`{"users":[]}`)); status != 400 || errField(res) != "users" {
		t.Fatalf("empty test send: %d %v", status, res)
	}
	if status, _ := td.do(t, "POST", "/v1/campaigns/nope/test-send", testToken, "application/json", []byte(`{"users":["a"]}`)); status != 404 {
		t.Fatalf("test send of an unknown campaign: %d", status)
	}

	bad := `{"id":"dry-bad","segment":"all","channels":["sms"],"content":{"sms":{"body":"Hi {{ profile.first_name"}}}`
	status, rep = td.do(t, "POST", "/v1/campaigns?dry_run=true", testToken, "application/json", []byte(bad))
	if status != 200 || rep["ok"] != false || !strings.Contains(fmt.Sprint(rep["errors"]), "unterminated") {
		t.Fatalf("dry run of a broken template: %d %v", status, rep)
	}
	if status, body := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(bad)); status != 400 || errField(body) != "content.sms.body" {
		t.Fatalf("create of a broken template: %d %v", status, body)
	}
}
