//go:build unix

package main

// The fleet end to end: three `notifyd serve` processes, one per shard of a
// three-shard ring, sharing one Redis and one webhook provider. One campaign
// created through one daemon reaches every member of every shard once; a
// daemon SIGKILLed mid-campaign resumes its own shard's part and no other
// daemon runs it; triggers for users of every shard, sent to one daemon or
// put on the intake stream, are each delivered once, by their shard.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/channels/sandbox"
)

const (
	fleetShards  = 3
	fleetMembers = 6000 // over all shards
)

// fleetTally counts webhook deliveries per user and kind.
type fleetTally struct {
	mu   sync.Mutex
	seen map[string]int // "<kind>/<user>" → copies
}

func (f *fleetTally) add(rec sandbox.Received) {
	var body struct{ User, Kind string }
	if json.Unmarshal(rec.Body, &body) != nil || rec.Status/100 != 2 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen[body.Kind+"/"+body.User]++
}

func (f *fleetTally) count(kind string) (distinct, copies int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, n := range f.seen {
		if strings.HasPrefix(k, kind+"/") {
			distinct++
			copies += n
		}
	}
	return distinct, copies
}

// fleetRig is what the fleet end-to-end tests share: the binary, a key
// prefix on the test Redis, and the webhook provider every daemon sends to,
// tallied per user and kind.
type fleetRig struct {
	bin, dir, prefix, secret, token string
	rdb                             *redis.Client
	wh                              *sandbox.Webhook
	tally                           *fleetTally
	env                             []string
}

func newFleetRig(t *testing.T, name string) *fleetRig {
	t.Helper()
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		t.Skip("REDIS_URL not set: the fleet end-to-end tests need a real Redis (.ci/run starts one and sets it)")
	}
	if testing.Short() {
		t.Skip("-short: skipping the fleet end-to-end tests")
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal("parse REDIS_URL: not a valid redis:// URL")
	}
	f := &fleetRig{dir: t.TempDir(), rdb: redis.NewClient(opt), tally: &fleetTally{seen: map[string]int{}},
		prefix: fmt.Sprintf("notifyd-%s:%d:", name, time.Now().UnixNano()),
		secret: fmt.Sprintf("%s-webhook-secret-%d", name, time.Now().UnixNano()),
		token:  fmt.Sprintf("%s-admin-token-%d", name, time.Now().UnixNano()),
		env:    append(os.Environ(), "NOTIFYD_E2E_REDIS_URL="+redisURL)}
	t.Cleanup(func() { _ = f.rdb.Close() })
	f.bin = buildNotifyd(t, f.dir)
	t.Cleanup(func() { deleteKeys(t, f.rdb, f.prefix) })
	if f.wh, err = sandbox.NewWebhook(sandbox.WebhookOptions{Secret: f.secret, RecorderLimit: 10}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.wh.Close() })
	f.wh.Faults.Add(sandbox.Fault{Match: "/hooks/*", Latency: e2eLatency}) // campaigns last a few seconds
	f.wh.Recorder.SetObserver(f.tally.add)
	return f
}

func TestFleetOfThreeDaemons(t *testing.T) {
	f := newFleetRig(t, "fleet")
	bin, dir, prefix, secret, token, wh, tally, rdb, env := f.bin, f.dir, f.prefix, f.secret, f.token, f.wh, f.tally, f.rdb, f.env
	type node struct {
		dir, cfg, shard string
		api             *e2eAPI
		proc            *daemonProc
		members         map[string]bool
		starts          int
	}
	nodes := make([]*node, fleetShards)
	all := map[string]int{} // user → shard
	for k := range nodes {
		n := &node{dir: filepath.Join(dir, fmt.Sprintf("shard-%d", k))}
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		n.shard = filepath.Join(n.dir, "members.shard")
		runBin(t, bin, "shard", "generate", "--profiles", fmt.Sprint(fleetMembers), "--seed", "7", "--out", n.shard, "--format", "shard",
			"--shard-id", fmt.Sprint(k), "--shards", fmt.Sprint(fleetShards))
		n.members = segmentMembers(t, n.shard, "all")
		for u := range n.members {
			if s, dup := all[u]; dup {
				t.Fatalf("user %s is in shard %d and shard %d", u, s, k)
			}
			all[u] = k
		}
		var addr string
		n.cfg, addr = writeE2EConfig(t, n.dir, n.shard, prefix, fmt.Sprintf("fleet-node-%d", k), token, secret, wh.URL()+"/hooks/notifyd")
		n.api = &e2eAPI{base: "http://" + addr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
		nodes[k] = n
	}
	if len(all) != fleetMembers {
		t.Fatalf("the shards hold %d users together, want %d", len(all), fleetMembers)
	}
	start := func(n *node) {
		n.starts++
		n.proc = startDaemon(t, bin, n.cfg, env, filepath.Join(n.dir, fmt.Sprintf("daemon-%d.log", n.starts)))
		n.api.waitReady(t, n.proc)
	}
	for _, n := range nodes {
		start(n)
	}

	// One campaign, created through shard 0's daemon only.
	campaign := fmt.Sprintf(`{"id":"fleet-wide","segment":"all","channels":["webhook"],`+
		`"content":{"webhook":{"url":%q,"body":{"user":"{{ profile.id }}","kind":"campaign"}}}}`, wh.URL()+"/hooks/notifyd")
	if status, body := nodes[0].api.do(t, http.MethodPost, "/v1/campaigns", []byte(campaign)); status != http.StatusCreated {
		t.Fatalf("create campaign: %d %s", status, body)
	}
	// Kill shard 1's daemon once its part is under way, then restart it.
	poll(t, "shard 1's part under way", 60*time.Second, 20*time.Millisecond, nodes[1].proc, func() (bool, string) {
		status, body := nodes[0].api.do(t, http.MethodGet, "/v1/campaigns/fleet-wide", nil)
		var st struct {
			Shards []struct{ Messages int64 } `json:"shards"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &st) != nil || len(st.Shards) != fleetShards {
			return false, fmt.Sprintf("%d %s", status, body)
		}
		return st.Shards[1].Messages >= 300, fmt.Sprintf("shard 1 has %d messages recorded", st.Shards[1].Messages)
	})
	_ = nodes[1].proc.cmd.Process.Kill()
	nodes[1].proc.wait(t, 10*time.Second)
	killedAt, _ := tally.count("campaign")
	// While it is down, the status says which shard's part waits.
	status, body := nodes[0].api.do(t, http.MethodGet, "/v1/campaigns/fleet-wide", nil)
	var st struct {
		Status string `json:"status"`
		Shards []struct {
			Shard int    `json:"shard"`
			State string `json:"state"`
		} `json:"shards"`
		Counts map[string]map[string]int64 `json:"counts"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &st) != nil || len(st.Shards) != fleetShards {
		t.Fatalf("campaign status with a daemon down: %d %s", status, body)
	}
	t.Logf("shard 1's daemon killed at %d deliveries; status %s, shards %+v", killedAt, st.Status, st.Shards)
	start(nodes[1])

	poll(t, "the campaign completes on every shard", 120*time.Second, 100*time.Millisecond, nodes[0].proc, func() (bool, string) {
		status, body := nodes[0].api.do(t, http.MethodGet, "/v1/campaigns/fleet-wide", nil)
		if status != http.StatusOK || json.Unmarshal(body, &st) != nil {
			return false, fmt.Sprintf("%d %s", status, body)
		}
		return st.Status == "completed", string(body)
	})
	distinct, copies := tally.count("campaign")
	t.Logf("campaign: %d of %d users reached, %d requests (%d re-sends after the kill, bound: %d workers of the killed daemon)", distinct, fleetMembers, copies, copies-distinct, e2eWorkers)
	if distinct != fleetMembers {
		t.Fatalf("campaign reached %d of %d users", distinct, fleetMembers)
	}
	if copies-distinct > e2eWorkers {
		t.Fatalf("%d re-sends, more than the %d requests the killed daemon had on the wire", copies-distinct, e2eWorkers)
	}
	if got := st.Counts["webhook"]["sent"]; got != fleetMembers {
		t.Fatalf("counted sent %d, want %d", got, fleetMembers)
	}
	for _, sp := range st.Shards {
		if sp.State != "completed" {
			t.Fatalf("shard %d: %s", sp.Shard, sp.State)
		}
	}

	// A flow defined through shard 2's daemon reaches the others live; then
	// triggers for users of every shard go to shard 0's daemon and to the
	// intake stream.
	flow := fmt.Sprintf(`{"id":"welcome","trigger":{"event":"signup"},"channels":["webhook"],"reentry":"0s",`+
		`"content":{"webhook":{"url":%q,"body":{"user":"{{ profile.id }}","kind":"{{ event.kind }}"}}}}`, wh.URL()+"/hooks/notifyd")
	if status, body := nodes[2].api.do(t, http.MethodPost, "/v1/flows", []byte(flow)); status != http.StatusCreated {
		t.Fatalf("create flow: %d %s", status, body)
	}
	for _, n := range nodes[:2] {
		poll(t, "the flow reaches every daemon", 10*time.Second, 50*time.Millisecond, n.proc, func() (bool, string) {
			status, body := n.api.do(t, http.MethodGet, "/v1/flows/welcome", nil)
			return status == http.StatusOK, fmt.Sprintf("%d %s", status, body)
		})
	}
	var users []string
	perShard := map[int]int{}
	for u, k := range all {
		if perShard[k] < 50 {
			perShard[k]++
			users = append(users, u)
		}
	}
	trig := func(kind string, us []string) string {
		var b strings.Builder
		b.WriteString(`{"triggers":[`)
		for i, u := range us {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"event":"signup","user_id":%q,"properties":{"kind":%q}}`, u, kind)
		}
		b.WriteString(`]}`)
		return b.String()
	}
	if status, body := nodes[0].api.do(t, http.MethodPost, "/v1/triggers", []byte(trig("api", users))); status != http.StatusAccepted {
		t.Fatalf("fire triggers: %d %s", status, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: prefix + "intake", Values: []any{"p", trig("stream", users)}}).Err(); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"api", "stream"} {
		poll(t, kind+" triggers delivered", 30*time.Second, 50*time.Millisecond, nodes[0].proc, func() (bool, string) {
			d, _ := tally.count(kind)
			return d == len(users), fmt.Sprintf("%d of %d", d, len(users))
		})
		d, c := tally.count(kind)
		if d != len(users) || c != len(users) {
			t.Fatalf("%s triggers: %d users reached with %d requests, want %d once each", kind, d, c, len(users))
		}
	}
	// Nobody answered unknown_user for a user of another shard.
	for k, n := range nodes {
		status, body := n.api.do(t, http.MethodGet, "/v1/flows/welcome", nil)
		if status != http.StatusOK || strings.Contains(string(body), "unknown_user") {
			t.Fatalf("shard %d's flow status: %d %s", k, status, body)
		}
	}
}

// TestFleetReshardTwoToThree: the store grows the fleet from 2 to 3 shards
// while a campaign runs. The old daemons stop (SIGTERM); the new ring's
// daemons start, the first two keeping their old shard file (shard.retained).
// The running campaign finishes on its ring — every user once, including
// those who moved to the new shard — and a campaign created afterwards runs
// on the new ring.
func TestFleetReshardTwoToThree(t *testing.T) {
	f := newFleetRig(t, "reshard")
	bin, dir, prefix, secret, token, wh, tally, env := f.bin, f.dir, f.prefix, f.secret, f.token, f.wh, f.tally, f.env
	gen := func(name string, version, shard, shards int) string {
		p := filepath.Join(dir, name)
		runBin(t, bin, "shard", "generate", "--profiles", fmt.Sprint(fleetMembers), "--seed", "7", "--out", p, "--format", "shard",
			"--ring-version", fmt.Sprint(version), "--shard-id", fmt.Sprint(shard), "--shards", fmt.Sprint(shards))
		return p
	}
	type node struct {
		api  *e2eAPI
		proc *daemonProc
	}
	start := func(name, shardPath, retained string) *node {
		ndir := filepath.Join(dir, name)
		if err := os.MkdirAll(ndir, 0o755); err != nil {
			t.Fatal(err)
		}
		cfg, addr := writeE2EConfig(t, ndir, shardPath, prefix, name, token, secret, wh.URL()+"/hooks/notifyd")
		if retained != "" {
			b, err := os.ReadFile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			b = []byte(strings.Replace(string(b), "  poll_interval: 1s\n", fmt.Sprintf("  poll_interval: 1s\n  retained: [%q]\n", retained), 1))
			writeFile(t, cfg, string(b))
		}
		n := &node{api: &e2eAPI{base: "http://" + addr, token: token, http: &http.Client{Timeout: 5 * time.Second}}}
		n.proc = startDaemon(t, bin, cfg, env, filepath.Join(ndir, "daemon.log"))
		n.api.waitReady(t, n.proc)
		return n
	}
	old := []string{gen("old0.shard", 1, 0, 2), gen("old1.shard", 1, 1, 2)}
	oldNodes := []*node{start("old-0", old[0], ""), start("old-1", old[1], "")}
	campaign := func(id, kind string) []byte {
		return []byte(fmt.Sprintf(`{"id":%q,"segment":"all","channels":["webhook"],`+
			`"content":{"webhook":{"url":%q,"body":{"user":"{{ profile.id }}","kind":%q}}}}`, id, wh.URL()+"/hooks/notifyd", kind))
	}
	if status, body := oldNodes[0].api.do(t, http.MethodPost, "/v1/campaigns", campaign("before", "before")); status != http.StatusCreated {
		t.Fatalf("create campaign: %d %s", status, body)
	}
	poll(t, "the old ring under way", 60*time.Second, 20*time.Millisecond, oldNodes[0].proc, func() (bool, string) {
		d, _ := tally.count("before")
		return d > fleetMembers/3, fmt.Sprintf("%d delivered", d)
	})
	// The reshard: the store publishes the new ring; the old daemons stop.
	newFiles := []string{gen("new0.shard", 2, 0, 3), gen("new1.shard", 2, 1, 3), gen("new2.shard", 2, 2, 3)}
	for _, n := range oldNodes {
		_ = n.proc.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, n := range oldNodes {
		n.proc.wait(t, 30*time.Second)
	}
	atStop, _ := tally.count("before")
	newNodes := []*node{start("new-0", newFiles[0], old[0]), start("new-1", newFiles[1], old[1]), start("new-2", newFiles[2], "")}
	var st struct {
		Status string                      `json:"status"`
		Ring   string                      `json:"ring"`
		Counts map[string]map[string]int64 `json:"counts"`
	}
	waitDone := func(id string) {
		poll(t, id+" completes", 120*time.Second, 100*time.Millisecond, newNodes[2].proc, func() (bool, string) {
			status, body := newNodes[2].api.do(t, http.MethodGet, "/v1/campaigns/"+id, nil)
			if status != http.StatusOK || json.Unmarshal(body, &st) != nil {
				return false, fmt.Sprintf("%d %s", status, body)
			}
			return st.Status == "completed", string(body)
		})
	}
	waitDone("before")
	d, c := tally.count("before")
	t.Logf("campaign before the reshard: %d delivered by the old ring, %d users reached with %d requests in all (ring %s)", atStop, d, c, st.Ring)
	if d != fleetMembers || c != fleetMembers || st.Ring != "1:2" {
		t.Fatalf("across the reshard: %d of %d users with %d requests, ring %s; want each once on ring 1:2", d, fleetMembers, c, st.Ring)
	}
	if status, body := newNodes[2].api.do(t, http.MethodPost, "/v1/campaigns", campaign("after", "after")); status != http.StatusCreated {
		t.Fatalf("create campaign after the reshard: %d %s", status, body)
	}
	waitDone("after")
	d, c = tally.count("after")
	if d != fleetMembers || c != fleetMembers || st.Ring != "2:3" {
		t.Fatalf("after the reshard: %d of %d users with %d requests, ring %s; want each once on ring 2:3", d, fleetMembers, c, st.Ring)
	}
}
