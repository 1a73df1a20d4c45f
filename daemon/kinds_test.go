package daemon

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/memstate"
	"github.com/notifyd/notifyd/store/redisstate"
)

// TestFlowsAreNotCampaigns: flows are a kind of their own in the state
// layer. A campaign operation on a flow's id finds nothing (it used to
// cancel the flow's record while the flow kept sending), and the campaign
// list does not show flows.
func TestFlowsAreNotCampaigns(t *testing.T) {
	td := startDaemon(t)
	flow := `{"id":"welcome","trigger":{"event":"signup"},"channels":["sms"],"reentry":"0s","content":{"sms":{"body":"Welcome!"}}}`
	if status, body := td.do(t, "POST", "/v1/flows", testToken, "application/json", []byte(flow)); status != 201 {
		t.Fatalf("create flow: %d %v", status, body)
	}
	for _, path := range []string{"/v1/campaigns/flow:welcome/cancel", "/v1/campaigns/flow:welcome/pause", "/v1/campaigns/welcome/cancel"} {
		if status, body := td.do(t, "POST", path, testToken, "", nil); status != 404 {
			t.Fatalf("POST %s: %d %v, want 404", path, status, body)
		}
	}
	if status, body := td.do(t, "GET", "/v1/campaigns/flow:welcome", testToken, "", nil); status != 404 {
		t.Fatalf("GET the flow as a campaign: %d %v", status, body)
	}
	status, body := td.do(t, "GET", "/v1/campaigns", testToken, "", nil)
	if list, ok := body["campaigns"].([]any); status != 200 || !ok || len(list) != 0 {
		t.Fatalf("campaign list with one flow and no campaign: %d %v", status, body)
	}
	status, body = td.do(t, "GET", "/v1/flows/welcome", testToken, "", nil)
	if status != 200 || body["status"] != "running" {
		t.Fatalf("the flow after campaign operations on its id: %d %v", status, body)
	}
}

// TestFlowsMigrateToTheirOwnKind: flows stored among the campaigns by an
// earlier version are picked up into the flow store at start, with their
// status.
func TestFlowsMigrateToTheirOwnKind(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		state func(t *testing.T) (campaigns.CampaignStore, campaigns.CampaignStore)
	}{
		{"memory", func(t *testing.T) (campaigns.CampaignStore, campaigns.CampaignStore) {
			ms := memstate.New()
			return ms, ms.Flows()
		}},
		{"redis", func(t *testing.T) (campaigns.CampaignStore, campaigns.CampaignStore) {
			raw := os.Getenv("REDIS_URL")
			if raw == "" {
				t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it)")
			}
			opt, err := redis.ParseURL(raw)
			if err != nil {
				t.Fatal(err)
			}
			rdb := redis.NewClient(opt)
			t.Cleanup(func() { _ = rdb.Close() })
			rs, err := redisstate.New(rdb, redisstate.WithPrefix(redisPrefix(t, raw)))
			if err != nil {
				t.Fatal(err)
			}
			return rs, rs.Flows()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, flows := tc.state(t)
			defs := map[string]campaigns.Status{"flow:a": campaigns.StatusRunning, "flow:b": campaigns.StatusPaused, "flow:c": campaigns.StatusScheduled}
			for id, st := range defs {
				def := fmt.Sprintf(`{"id":%q,"trigger":{"event":"e"},"channels":["sms"],"content":{"sms":{"body":"x"}}}`, id[5:])
				if _, _, err := old.Create(ctx, id, []byte(def)); err != nil {
					t.Fatal(err)
				}
				if st != campaigns.StatusScheduled {
					if _, err := old.Transition(ctx, id, campaigns.StatusScheduled, campaigns.StatusRunning); err != nil {
						t.Fatal(err)
					}
				}
				if st == campaigns.StatusPaused {
					if _, err := old.Transition(ctx, id, campaigns.StatusRunning, st); err != nil {
						t.Fatal(err)
					}
				}
			}
			for range 2 { // idempotent
				if err := migrateFlows(ctx, old, flows); err != nil {
					t.Fatal(err)
				}
			}
			for id, st := range defs {
				rec, err := flows.Get(ctx, id)
				if err != nil || rec.Status != st {
					t.Fatalf("%s in the flow store: %+v %v, want %s", id, rec, err, st)
				}
			}
		})
	}
}

// TestFlowsComeBackAfterRedisLostItsData: a Redis that comes back empty has
// lost the flow records too; the daemon, which holds every flow, writes them
// back with their status when it notices the lost epoch.
func TestFlowsComeBackAfterRedisLostItsData(t *testing.T) {
	raw := os.Getenv("REDIS_URL")
	if raw == "" {
		t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it)")
	}
	prefix := redisPrefix(t, raw)
	td := startDaemon(t, fmt.Sprintf("redis:\n  url: %s\n  prefix: %q\n", raw, prefix))
	for _, f := range []string{
		`{"id":"welcome","trigger":{"event":"signup"},"channels":["sms"],"reentry":"0s","content":{"sms":{"body":"Welcome!"}}}`,
		`{"id":"winback","trigger":{"event":"lapsed"},"channels":["sms"],"reentry":"0s","content":{"sms":{"body":"Come back"}}}`,
	} {
		if status, body := td.do(t, "POST", "/v1/flows", testToken, "application/json", []byte(f)); status != 201 {
			t.Fatalf("create flow: %d %v", status, body)
		}
	}
	if status, body := td.do(t, "POST", "/v1/flows/winback/pause", testToken, "", nil); status != 200 {
		t.Fatalf("pause flow: %d %v", status, body)
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx := context.Background()
	wipe := func() {
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	}
	wipe() // Redis restarted without its data
	status := func(id string) string {
		v, _ := rdb.HGet(ctx, prefix+"f:{f:flow:"+id+"}:rec", "st").Result()
		return v
	}
	waitFor(t, 15*time.Second, func() bool { return status("welcome") == "running" && status("winback") == "paused" },
		"the flows were not written back after Redis lost its data")
	if n, _ := rdb.ZCard(ctx, prefix+"flows").Result(); n != 2 {
		t.Fatalf("flows index holds %d entries after the restore, want 2", n)
	}
}
