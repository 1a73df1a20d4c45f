package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/notifyd/notifyd/store/deliverylog"
)

// TestDeliveryLogRecordsEveryOutcome runs a campaign through a daemon with
// the delivery log on, looks a user up through GET /v1/messages, and checks
// that the scheduled export puts every sent message into the lake once.
func TestDeliveryLogRecordsEveryOutcome(t *testing.T) {
	dir, lake := t.TempDir(), t.TempDir()
	td := startDaemon(t, fmt.Sprintf("delivery_log:\n  enabled: true\n  dir: %s\n  fsync: always\n  segment_age: 200ms\n  address:\n    salt: pepper\n  export:\n    interval: 100ms\n    dir: %s\n", dir, lake))
	if status, body := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(smsCampaign)); status != 201 && status != 200 {
		t.Fatalf("create: %d %v", status, body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body := td.do(t, "GET", "/v1/campaigns/api-test", testToken, "", nil)
		if body["status"] == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never completed: %v", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sent := int(td.sms.n.Load())
	if sent == 0 {
		t.Fatal("nothing sent")
	}
	// fsync always: outcomes reach the campaign only after their records
	// are on disk, so a completed campaign's records are all readable now.
	var recs []deliverylog.Record
	segs, err := deliverylog.ListSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range segs {
		if _, err := deliverylog.ScanFile(s.Path, true, func(r *deliverylog.Record) error { recs = append(recs, *r); return nil }); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if len(recs) != sent {
		t.Fatalf("%d records in the log, %d messages sent", len(recs), sent)
	}
	hashed := regexp.MustCompile(`^[0-9a-f]{24}$`)
	for _, r := range recs {
		if r.Channel != "sms" || r.Outcome != "accepted" || r.Campaign != "api-test" || r.Kind != "campaign" || r.Attempt != 1 || r.AnsweredAt == 0 || r.QueuedAt > r.AnsweredAt {
			t.Fatalf("record %+v", r)
		}
		if !hashed.MatchString(r.Address) {
			t.Fatalf("phone %q is not hashed (default address.phone: hash)", r.Address)
		}
	}
	user := recs[0].UserID
	status, body := td.do(t, "GET", "/v1/messages?user="+user+"&campaign=api-test", testToken, "", nil)
	msgs, _ := body["messages"].([]any)
	if status != 200 || len(msgs) != 1 || msgs[0].(map[string]any)["user_id"] != user {
		t.Fatalf("GET /v1/messages: %d %v", status, body)
	}
	if status, _ := td.do(t, "GET", "/v1/messages?user="+user, "", "", nil); status != 401 {
		t.Fatalf("GET /v1/messages without the token: %d, want 401", status)
	}
	if status, body := td.do(t, "GET", "/v1/messages", testToken, "", nil); status != 400 || errField(body) != "user" {
		t.Fatalf("GET /v1/messages without a user: %d %v", status, body)
	}
	// The schedule seals the segment by age and exports it while the daemon runs.
	for deadline := time.Now().Add(10 * time.Second); ; {
		segs, _ := deliverylog.ListSegments(dir)
		if len(segs) > 0 && segs[0].State == "exported" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scheduled export never ran: %+v", segs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := td.stop(); err != nil {
		t.Fatal(err)
	}
	// Whatever the schedule had not exported yet, the CLI's export does.
	ex, err := deliverylog.NewExporter(deliverylog.ExporterConfig{Dir: dir, Target: deliverylog.LocalTarget{Dir: lake}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ex.Export(context.Background()); err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	_ = filepath.Walk(lake, func(p string, info os.FileInfo, err error) error {
		if err == nil && filepath.Ext(p) == ".parquet" {
			rows, err := readParquet(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rows {
				ids[r.MessageID]++
			}
		}
		return nil
	})
	if len(ids) != sent {
		t.Fatalf("%d message ids in the lake, %d sent", len(ids), sent)
	}
	for id, n := range ids {
		if n != 1 {
			t.Fatalf("%s in the lake %d times", id, n)
		}
	}
}

func TestDeliveryLogConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"delivery_log:\n  enabled: true\n", "delivery_log.dir: required"},
		{"delivery_log:\n  enabled: true\n  dir: /tmp/x\n  fsync: sometimes\n", "delivery_log.fsync"},
		{"delivery_log:\n  enabled: true\n  dir: /tmp/x\n  address:\n    email: scramble\n", "delivery_log.address.email"},
		{"delivery_log:\n  enabled: true\n  dir: /tmp/x\n  export:\n    interval: 1m\n", "neither dir nor s3"},
		{"delivery_log:\n  enabled: true\n  dir: /tmp/x\n  export:\n    s3:\n      endpoint: https://s3.example.com\n      bucket: b\n", "without a scheme"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := ParseConfig([]byte("shard:\n  path: /x\nadmin:\n  token: " + testToken + "\n" + tc.yaml))
			if err == nil || !regexp.MustCompile(regexp.QuoteMeta(tc.want)).MatchString(err.Error()) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestFlowTrigger(t *testing.T) {
	for _, tc := range []struct{ id, flow, want string }{
		{"f:welcome:k:order:1:1f:sms:0", "welcome", "k:order:1"},
		{"f:welcome:t:abc:ff:apns:2", "welcome", "t:abc"},
		{"bad", "welcome", ""},
	} {
		if got := flowTrigger(tc.id, tc.flow); got != tc.want {
			t.Errorf("flowTrigger(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
}

func readParquet(path string) ([]deliverylog.Record, error) {
	return parquetReadFile(path)
}
