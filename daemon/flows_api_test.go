package daemon

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/notifyd/notifyd/store/shard/shardgen"
)

func TestFlowsAndTriggersAPI(t *testing.T) {
	td := startDaemon(t)
	flow := `{"id":"welcome","trigger":{"segment":"new_7d"},"channels":["sms"],"reentry":"0s",
	  "content":{"sms":{"body":"Welcome! {{ event.code | default: 'x' }}"}}}`
	if status, body := td.do(t, "POST", "/v1/flows", testToken, "application/json", []byte(flow)); status != 201 {
		t.Fatalf("create flow: %d %v", status, body)
	}
	if status, _ := td.do(t, "POST", "/v1/flows", testToken, "application/json", []byte(flow)); status != 200 {
		t.Fatalf("repeat create: %d", status)
	}
	tests := []struct {
		name, body string
		status     int
		field      string
	}{
		{"no user", `{"flow":"welcome"}`, 400, "user_id"},
		{"two targets", `{"flow":"welcome","segment":"x","user_id":"u-1"}`, 400, "flow"},
		{"unknown field", `{"flow":"welcome","user_id":"u-1","colour":1}`, 400, "colour"},
		{"empty batch", `{"triggers":[]}`, 400, "triggers"},
		{"bad entry in batch", `{"triggers":[{"flow":"welcome","user_id":"u-1"},{"flow":"welcome"}]}`, 400, "triggers[1].user_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := td.do(t, "POST", "/v1/triggers", testToken, "application/json", []byte(tc.body))
			if status != tc.status || errField(body) != tc.field {
				t.Fatalf("%d %v, want %d on %q", status, body, tc.status, tc.field)
			}
		})
	}

	var batch []map[string]any
	for i := range 20 {
		batch = append(batch, map[string]any{"flow": "welcome", "user_id": shardgen.ID(uint64(i)), "properties": map[string]any{"code": fmt.Sprint(i)}, "idempotency_key": fmt.Sprint("k", i)})
	}
	batch = append(batch, map[string]any{"flow": "welcome", "user_id": "nobody"})
	b, _ := json.Marshal(map[string]any{"triggers": batch})
	status, body := td.do(t, "POST", "/v1/triggers", testToken, "application/json", b)
	if status != 202 {
		t.Fatalf("fire: %d %v", status, body)
	}
	results := body["results"].([]any)
	if len(results) != 21 || results[20].(map[string]any)["status"] != "unknown_user" || results[0].(map[string]any)["status"] != "accepted" {
		t.Fatalf("results %v", results)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body = td.do(t, "GET", "/v1/flows/welcome", testToken, "", nil)
		counts, _ := body["counts"].(map[string]any)
		sms, _ := counts["sms"].(map[string]any)
		var settled float64
		for _, n := range sms {
			settled += n.(float64)
		}
		if settled >= 21 {
			if sms["unknown_user"] != 1.0 || sms["sent"].(float64)+sms["no_address"].(float64)+sms["no_consent"].(float64) < 20 {
				t.Fatalf("flow counts %v", sms)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("triggers never settled: %v", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if int64(td.sms.n.Load()) == 0 {
		t.Fatal("no SMS reached the channel")
	}
	if status, _ := td.do(t, "POST", "/v1/flows/welcome/pause", testToken, "", nil); status != 200 {
		t.Fatalf("pause flow: %d", status)
	}
	_, body = td.do(t, "POST", "/v1/triggers", testToken, "application/json", []byte(`{"flow":"welcome","user_id":"u-1"}`))
	if body["results"].([]any)[0].(map[string]any)["status"] != "unknown_flow" {
		t.Fatalf("paused flow took a trigger: %v", body)
	}
	if status, _ := td.do(t, "DELETE", "/v1/flows/welcome", testToken, "", nil); status != 200 {
		t.Fatalf("delete flow: %d", status)
	}
	if status, _ := td.do(t, "GET", "/v1/flows/welcome", testToken, "", nil); status != 404 {
		t.Fatalf("deleted flow: %d", status)
	}
}
