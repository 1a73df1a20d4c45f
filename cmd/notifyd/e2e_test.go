//go:build unix

package main

// The end-to-end crash test: the real binary, a real Redis, the webhook
// sandbox as the provider, and a SIGKILL in the middle of a campaign. It is
// the test behind the promise "a kill -9 mid-campaign has a defined, tested
// outcome" (DESIGN.md §4).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/store/shard"
)

const (
	// e2eMembers is the segment size: big enough that the campaign runs for
	// seconds behind the latency fault, small enough for a 2-core CI box.
	e2eMembers = 20000
	// e2eLatency slows every webhook request so the kill lands mid-campaign:
	// 8 workers × 1/2ms is at most ~4,000 requests/s, ≥ 5 s for the segment.
	e2eLatency   = 2 * time.Millisecond
	e2eWorkers   = 8
	e2eBatchSize = 500
	e2eMaxOpen   = 4
	e2eLeaseTTL  = 3 * time.Second
	// e2eShutdown is the daemon's drain deadline (engine.shutdown_timeout).
	e2eShutdown = 10 * time.Second
	// e2eInFlightBound is the most positions that can be dispatched but not
	// final at the kill: MaxOpenBatches batches queued for the finisher, plus
	// the one it is waiting on and the one the producer is handing over.
	// Only these may be re-sent after the restart.
	e2eInFlightBound = (e2eMaxOpen + 2) * e2eBatchSize
)

func TestKill9MidCampaignResumes(t *testing.T) {
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		t.Skip("REDIS_URL not set: the kill -9 end-to-end test needs a real Redis (.ci/run starts one and sets it)")
	}
	if testing.Short() {
		t.Skip("-short: skipping the kill -9 end-to-end test (builds the binary, runs campaigns for ~30 s)")
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("parse REDIS_URL: not a valid redis:// URL")
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	pingCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		t.Fatalf("REDIS_URL is set but Redis does not answer: %v", err)
	}

	dir := t.TempDir()
	bin := buildNotifyd(t, dir)
	shardPath := filepath.Join(dir, "members.shard")
	runBin(t, bin, "shard", "generate", "--profiles", fmt.Sprint(e2eMembers), "--seed", "7", "--out", shardPath, "--format", "shard")
	members := segmentMembers(t, shardPath, "all")
	if len(members) != e2eMembers {
		t.Fatalf("segment all has %d members, want %d", len(members), e2eMembers)
	}

	tests := []struct {
		name string
		// owner is engine.owner. The same on every incarnation: a restart
		// re-acquires the lease at once with a new fencing token. Empty: the
		// default host/pid, so the restarted daemon is a stranger that must
		// wait for the dead one's lease (3 s) to expire.
		owner string
		// stops end one incarnation each; the next resumes. The last
		// incarnation runs the campaign to completion.
		stops []e2eStop
	}{
		{name: "kill -9, same owner re-acquires its lease", owner: "e2e-node-1",
			stops: []e2eStop{{at: e2eMembers / 3, kill: true}}},
		{name: "kill -9, new owner takes over after lease expiry",
			stops: []e2eStop{{at: e2eMembers / 3, kill: true}}},
		{name: "kill -9, then SIGTERM mid-campaign drains", owner: "e2e-node-1",
			stops: []e2eStop{{at: e2eMembers / 3, kill: true}, {at: 2 * e2eMembers / 3}}},
		{name: "kill -9 three times at different points", owner: "e2e-node-1",
			stops: []e2eStop{{at: e2eMembers / 5, kill: true}, {at: e2eMembers / 2, kill: true}, {at: 4 * e2eMembers / 5, kill: true}}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			testCrashResume(t, rdb, redisURL, bin, shardPath, members, tc.owner, fmt.Sprintf("e2e-kill9-%d", i), tc.stops)
		})
	}
	t.Run("kill -9 with delayed triggers pending: each sent once by the next incarnation", func(t *testing.T) {
		testDelayedTriggersSurviveKill(t, rdb, redisURL, bin, shardPath, members)
	})
}

// testDelayedTriggersSurviveKill fires triggers at a flow with a delay,
// SIGKILLs the daemon before they are due, and checks that the next
// incarnation sends every one of them exactly once.
func testDelayedTriggersSurviveKill(t *testing.T, rdb *redis.Client, redisURL, bin, shardPath string, members map[string]bool) {
	const n = 200
	dir := t.TempDir()
	rig := newE2ERig(t, rdb, redisURL, dir, shardPath, "e2e-node-1", 4*n)
	wh, api, cfgPath, env, token, secret := rig.wh, rig.api, rig.cfgPath, rig.env, rig.token, rig.secret

	d := startDaemon(t, bin, cfgPath, env, filepath.Join(dir, "daemon-1.log"))
	api.waitReady(t, d)
	flow := fmt.Sprintf(`{"id":"later","trigger":{"event":"signup"},"channels":["webhook"],"delay":"4s","reentry":"0s",`+
		`"content":{"webhook":{"url":%q,"body":{"user":"{{ profile.id }}","kind":"delayed"}}}}`, wh.URL()+"/hooks/notifyd")
	if status, body := api.do(t, http.MethodPost, "/v1/flows", []byte(flow)); status != http.StatusCreated {
		t.Fatalf("create flow: %d %s", status, body)
	}
	var users []string
	for u := range members {
		if users = append(users, u); len(users) == n {
			break
		}
	}
	var trig strings.Builder
	trig.WriteString(`{"triggers":[`)
	for i, u := range users {
		if i > 0 {
			trig.WriteByte(',')
		}
		fmt.Fprintf(&trig, `{"event":"signup","user_id":%q}`, u)
	}
	trig.WriteString(`]}`)
	if status, body := api.do(t, http.MethodPost, "/v1/triggers", []byte(trig.String())); status != http.StatusOK && status != http.StatusAccepted {
		t.Fatalf("fire triggers: %d %s", status, body)
	}
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL notifyd: %v", err)
	}
	d.wait(t, 10*time.Second)
	if got := wh.Recorder.Count(); got != 0 {
		t.Fatalf("%d delayed messages sent before their delay", got)
	}

	next := startDaemon(t, bin, cfgPath, env, filepath.Join(dir, "daemon-2.log"))
	api.waitReady(t, next)
	poll(t, fmt.Sprintf("%d delayed messages", n), 60*time.Second, 20*time.Millisecond, next, func() (bool, string) {
		got := wh.Recorder.Count()
		return got >= n, fmt.Sprintf("%d received", got)
	})
	waitQuiet(t, wh)
	stopGracefully(t, next, "after the delayed sends")
	seen := map[string]int{}
	for i, rec := range wh.Recorder.All() {
		var body struct {
			User string `json:"user"`
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal(rec.Body, &body); err != nil || body.Kind != "delayed" {
			t.Fatalf("request %d is not the flow's rendering (%v): %q", i, err, rec.Body)
		}
		seen[body.User]++
	}
	for _, u := range users {
		if seen[u] != 1 {
			t.Errorf("user %s got %d delayed messages, want 1", u, seen[u])
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct users received a message, want %d", len(seen), n)
	}
	channelstest.AssertNoSecret(t, []string{token, secret}, d.logs(), next.logs())
}

// e2eStop ends one daemon incarnation once the sandbox has received at
// least `at` requests: with SIGKILL, or (kill false) with SIGTERM.
type e2eStop struct {
	at   int
	kill bool
}

func (s e2eStop) String() string {
	if s.kill {
		return "SIGKILL"
	}
	return "SIGTERM"
}

func testCrashResume(t *testing.T, rdb *redis.Client, redisURL, bin, shardPath string, members map[string]bool, owner, campaignID string, stops []e2eStop) {
	dir := t.TempDir()
	rig := newE2ERig(t, rdb, redisURL, dir, shardPath, owner, 4*e2eMembers)
	wh, api, cfgPath, env, token, secret := rig.wh, rig.api, rig.cfgPath, rig.env, rig.token, rig.secret
	wh.Faults.Add(sandbox.Fault{Latency: e2eLatency})
	// The campaign names the URL although the config has one: campaign
	// templates insist on content.webhook.url (see the report).
	campaign := fmt.Sprintf(`{"id":%q,"segment":"all","channels":["webhook"],`+
		`"content":{"webhook":{"url":%q,"body":{"user":"{{ profile.id }}","kind":"e2e"}}}}`, campaignID, wh.URL()+"/hooks/notifyd")

	var (
		ends  []int // sandbox record count at the end of each stopped incarnation
		procs []*daemonProc
	)
	for n, stop := range stops {
		d := startDaemon(t, bin, cfgPath, env, filepath.Join(dir, fmt.Sprintf("daemon-%d.log", n+1)))
		procs = append(procs, d)
		started := time.Now()
		api.waitReady(t, d)
		if n == 0 {
			if status, body := api.do(t, http.MethodPost, "/v1/campaigns", []byte(campaign)); status != http.StatusCreated {
				t.Fatalf("create campaign: %d %s", status, body)
			}
		}
		poll(t, fmt.Sprintf("%d requests at the sandbox", stop.at), 60*time.Second, 2*time.Millisecond, d, func() (bool, string) {
			n := wh.Recorder.Count()
			return n >= stop.at, fmt.Sprintf("%d received", n)
		})
		t.Logf("incarnation %d reached %d requests %s after it started; sending %s", n+1, wh.Recorder.Count(), time.Since(started).Round(time.Millisecond), stop)
		if stop.kill {
			if err := d.cmd.Process.Kill(); err != nil {
				t.Fatalf("SIGKILL notifyd: %v", err)
			}
			d.wait(t, 10*time.Second)
			var ee *exec.ExitError
			if !errors.As(d.err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("notifyd ended with %v, want death by SIGKILL", d.err)
			}
		} else {
			stopGracefully(t, d, "mid-campaign")
		}
		ends = append(ends, waitQuiet(t, wh))
		if ends[n] >= e2eMembers {
			t.Fatalf("the campaign had reached all %d members before the %s; raise the latency fault so the stop lands mid-campaign", e2eMembers, stop)
		}
	}

	// The last incarnation: same config, resumes from the Redis checkpoint and completes.
	last := startDaemon(t, bin, cfgPath, env, filepath.Join(dir, fmt.Sprintf("daemon-%d.log", len(stops)+1)))
	procs = append(procs, last)
	restarted := time.Now()
	api.waitReady(t, last)
	var final campaignView
	poll(t, "the resumed campaign to complete", 90*time.Second, 50*time.Millisecond, last, func() (bool, string) {
		status, body := api.do(t, http.MethodGet, "/v1/campaigns/"+campaignID, nil)
		if status != http.StatusOK {
			return false, fmt.Sprintf("GET campaign: %d %s", status, body)
		}
		final = campaignView{}
		if err := json.Unmarshal(body, &final); err != nil {
			t.Fatalf("decode campaign status: %v: %s", err, body)
		}
		switch final.Status {
		case "paused", "failed", "cancelled":
			t.Fatalf("resumed campaign ended %s: %s", final.Status, body)
		}
		return final.Status == "completed", string(body)
	})
	t.Logf("resumed campaign completed %s after the last restart; counts %v", time.Since(restarted).Round(time.Millisecond), final.Counts)
	stopGracefully(t, last, "after completion")

	checkDeliveries(t, wh, members, stops, ends, final)
	logs := make([]string, len(procs))
	for i, d := range procs {
		logs[i] = d.logs()
	}
	channelstest.AssertNoSecret(t, []string{token, secret}, logs...)
}

// e2eRig is one daemon's surroundings: a webhook sandbox, its config and
// secrets in dir, an API client, and a Redis prefix deleted at the end.
type e2eRig struct {
	wh            *sandbox.Webhook
	api           *e2eAPI
	cfgPath       string
	env           []string
	token, secret string
}

func newE2ERig(t *testing.T, rdb *redis.Client, redisURL, dir, shardPath, owner string, recorderLimit int) *e2eRig {
	t.Helper()
	prefix := fmt.Sprintf("notifyd-e2e:%d:", time.Now().UnixNano())
	t.Cleanup(func() { deleteKeys(t, rdb, prefix) })
	r := &e2eRig{
		token:  "e2e-admin-token-" + fmt.Sprint(time.Now().UnixNano()),
		secret: "e2e-webhook-secret-" + fmt.Sprint(time.Now().UnixNano()),
		env:    append(os.Environ(), "NOTIFYD_E2E_REDIS_URL="+redisURL),
	}
	wh, err := sandbox.NewWebhook(sandbox.WebhookOptions{Secret: r.secret, RecorderLimit: recorderLimit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wh.Close() })
	r.wh = wh
	cfgPath, addr := writeE2EConfig(t, dir, shardPath, prefix, owner, r.token, r.secret, wh.URL()+"/hooks/notifyd")
	r.cfgPath = cfgPath
	r.api = &e2eAPI{base: "http://" + addr, token: r.token, http: &http.Client{Timeout: 5 * time.Second}}
	return r
}

// writeE2EConfig writes the daemon's config (Redis from
// NOTIFYD_E2E_REDIS_URL, one webhook channel to hookURL) and its secret
// files into dir, and returns the config path and the admin address.
func writeE2EConfig(t *testing.T, dir, shardPath, prefix, owner, token, secret, hookURL string) (cfgPath, addr string) {
	t.Helper()
	cfgPath = filepath.Join(dir, "notifyd.yaml")
	writeFile(t, filepath.Join(dir, "admin.token"), token)
	writeFile(t, filepath.Join(dir, "webhook.secret"), secret)
	addr = freeAddr(t)
	writeFile(t, cfgPath, fmt.Sprintf(`shard:
  path: %q
  poll_interval: 1s
redis:
  url: {env: NOTIFYD_E2E_REDIS_URL}
  prefix: %q
admin:
  listen: %q
  token: {file: %q}
engine:
  owner: %q
  batch_size: %d
  max_open_batches: %d
  lease_ttl: %s
  drain_timeout: 5s
  shutdown_timeout: %s
channels:
  webhook:
    url: %q
    secret: {file: %q}
    timeout: 10s
    allow_networks: [127.0.0.0/8]
    pool: {workers: %d, batch_size: 1}
`, shardPath, prefix, addr, filepath.Join(dir, "admin.token"), owner, e2eBatchSize, e2eMaxOpen, e2eLeaseTTL, e2eShutdown,
		hookURL, filepath.Join(dir, "webhook.secret"), e2eWorkers))
	return cfgPath, addr
}

// waitQuiet waits until the sandbox has recorded nothing new for a while
// and returns its count. After a SIGKILL the sandbox only learns that a
// client went away when it next reads the socket, so a request inside the
// latency fault may still be answered and recorded a moment after the
// process is reaped; it must be counted with the incarnation that sent it.
func waitQuiet(t *testing.T, wh *sandbox.Webhook) int {
	t.Helper()
	const quiet = 100 * e2eLatency
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(e2eLatency)
	defer tick.Stop()
	n, since := wh.Recorder.Count(), time.Now()
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			t.Fatalf("the sandbox kept receiving requests with no daemon running (%d so far)", n)
		}
		<-tick.C
		if m := wh.Recorder.Count(); m != n {
			n, since = m, time.Now()
		}
	}
	return n
}

// stopGracefully sends SIGTERM and holds the daemon to its promise: it
// drains and exits 0 within engine.shutdown_timeout.
func stopGracefully(t *testing.T, d *daemonProc, when string) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM notifyd %s: %v", when, err)
	}
	start := time.Now()
	d.wait(t, e2eShutdown+5*time.Second)
	took := time.Since(start)
	if d.err != nil {
		t.Fatalf("SIGTERM %s: notifyd exited with %v, want status 0", when, d.err)
	}
	if took > e2eShutdown {
		t.Fatalf("SIGTERM %s: shutdown took %s, over the %s drain deadline", when, took, e2eShutdown)
	}
	t.Logf("SIGTERM %s: exited 0 in %s", when, took.Round(time.Millisecond))
}

// campaignView is the part of GET /v1/campaigns/{id} the test reads.
type campaignView struct {
	Status string                      `json:"status"`
	Counts map[string]map[string]int64 `json:"counts"`
	Owner  string                      `json:"owner"`
}

// checkDeliveries holds the sandbox's record against the promise: every
// member reached; a member gets a second copy only when an incarnation was
// killed with it in flight, always under the key of the first attempt, and
// never after a graceful stop; counts add up. ends[i] is the record count
// when incarnation i+1 was stopped by stops[i].
func checkDeliveries(t *testing.T, wh *sandbox.Webhook, members map[string]bool, stops []e2eStop, ends []int, final campaignView) {
	t.Helper()
	if n := wh.BadSignatures(); n != 0 {
		t.Errorf("%d requests failed the sandbox's signature check", n)
	}
	recs := wh.Recorder.All()
	if len(recs) != wh.Recorder.Count() {
		t.Fatalf("recorder kept %d of %d requests; raise RecorderLimit", len(recs), wh.Recorder.Count())
	}
	type copyOf struct {
		key         string
		incarnation int // 0-based
	}
	byUser := make(map[string][]copyOf, len(members))
	userOfKey := make(map[string]string, len(members))
	accepted := make(map[string]bool, len(members))
	inc := 0
	for i, rec := range recs {
		for inc < len(ends) && i >= ends[inc] {
			inc++
		}
		var body struct {
			User string `json:"user"`
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal(rec.Body, &body); err != nil || body.Kind != "e2e" {
			t.Fatalf("request %d: body is not the campaign's rendering (%v): %q", i, err, rec.Body)
		}
		if !members[body.User] {
			t.Fatalf("request %d: user %q is not in the segment", i, body.User)
		}
		key := rec.Headers["Idempotency-Key"]
		if key == "" {
			t.Fatalf("request %d for %s carries no Idempotency-Key; headers %v", i, body.User, rec.Headers)
		}
		// Two users under one key would be collapsed into one by the provider:
		// a lost message.
		if u, seen := userOfKey[key]; seen && u != body.User {
			t.Fatalf("Idempotency-Key %q used for both %s and %s", key, u, body.User)
		}
		userOfKey[key] = body.User
		byUser[body.User] = append(byUser[body.User], copyOf{key: key, incarnation: inc})
		if rec.Status/100 == 2 {
			accepted[body.User] = true
		}
	}

	var missing []string
	for id := range members {
		if !accepted[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Errorf("%d of %d members never got an accepted request, e.g. %v", len(missing), len(members), missing[:min(len(missing), 5)])
	}

	// resentAfter[i] counts members whose copy from incarnation i was
	// re-sent by a later one: the in-doubt window left by stops[i].
	resentAfter := make([]int, len(stops))
	for user, copies := range byUser {
		for j, c := range copies {
			if c.key != copies[0].key {
				t.Errorf("user %s got copies under different Idempotency-Keys %q and %q: a provider would deliver both", user, copies[0].key, c.key)
			}
			if j == 0 {
				continue
			}
			prev := copies[j-1].incarnation
			if prev == c.incarnation {
				// No faults are injected, so nothing is retried within an
				// incarnation: a second copy must come from a restart.
				t.Errorf("user %s received two copies from incarnation %d", user, c.incarnation+1)
				continue
			}
			resentAfter[prev]++
		}
	}
	var summary []string
	for i, stop := range stops {
		from := 0
		if i > 0 {
			from = ends[i-1]
		}
		summary = append(summary, fmt.Sprintf("incarnation %d sent %d, %s, %d of its members re-sent", i+1, ends[i]-from, stop, resentAfter[i]))
		switch {
		case stop.kill && resentAfter[i] > e2eInFlightBound:
			t.Errorf("%d members re-sent after the %s, more than the %d positions that can be in flight: the restart did not resume from the checkpoint", resentAfter[i], stop, e2eInFlightBound)
		case !stop.kill && resentAfter[i] > 0:
			// A graceful stop drains: every message handed to a provider has
			// its outcome recorded before exit, so nothing is in doubt.
			t.Errorf("%d members re-sent after a graceful %s; a drained stop leaves nothing in doubt", resentAfter[i], stop)
		}
	}
	t.Logf("%d requests for %d members: %s; the last incarnation sent %d (re-sends always under the first key)",
		len(recs), len(byUser), strings.Join(summary, "; "), len(recs)-ends[len(ends)-1])

	counts := final.Counts["webhook"]
	var total int64
	for reason, n := range counts {
		total += n
		switch reason {
		case "sent":
		case "in_doubt":
			// Webhooks carry an Idempotency-Key: an in-doubt message is
			// re-sent under it, never left in doubt.
			t.Errorf("webhook in_doubt = %d: in-doubt webhooks must be re-sent with their key", n)
		default:
			// Nothing here makes the sandbox refuse a request.
			t.Errorf("webhook count %q = %d: no faults were injected that could cause it", reason, n)
		}
	}
	if total != int64(len(members)) {
		t.Errorf("webhook counts %v add up to %d, want the segment size %d", counts, total, len(members))
	}
	if sent := counts["sent"]; sent != int64(len(accepted)) {
		t.Errorf("counted %d sent, but the sandbox accepted requests for %d members", sent, len(accepted))
	}
	if len(final.Counts) != 1 {
		t.Errorf("counts for channels other than webhook: %v", final.Counts)
	}
}

// buildNotifyd builds the binary once, from this package's directory (the
// test's working directory).
func buildNotifyd(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "notifyd")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/notifyd: %v\n%s", err, out)
	}
	t.Logf("built notifyd in %s", time.Since(start).Round(time.Millisecond))
	return bin
}

func runBin(t *testing.T, bin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("notifyd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// segmentMembers reads the external ids of a segment's members: the ground
// truth the sandbox's record is checked against.
func segmentMembers(t *testing.T, path, name string) map[string]bool {
	t.Helper()
	r, err := shard.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	seg, err := r.Segment(name)
	if err != nil {
		t.Fatal(err)
	}
	ids := make(map[string]bool, seg.Members())
	it := seg.Iter()
	buf := make([]uint32, 1024)
	for n := it.Next(buf); n > 0; n = it.Next(buf) {
		for _, idx := range buf[:n] {
			row, err := r.Row(idx)
			if err != nil {
				t.Fatalf("read row %d: %v", idx, err)
			}
			ids[strings.Clone(row.ID())] = true // the row's strings live in the mapping
		}
	}
	return ids
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// freeAddr picks a free loopback port. It is released before the daemon
// binds it; both incarnations reuse it (a dead process's listener is gone).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// deleteKeys removes every key under prefix (SCAN, bounded).
func deleteKeys(t *testing.T, rdb *redis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cursor uint64
	for range 10000 {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			t.Logf("clean up redis keys %s*: %v", prefix, err)
			return
		}
		if len(keys) > 0 {
			if err := rdb.Unlink(ctx, keys...).Err(); err != nil {
				t.Logf("clean up redis keys %s*: %v", prefix, err)
				return
			}
		}
		if cursor = next; cursor == 0 {
			return
		}
	}
}

// daemonProc is one running `notifyd serve`.
type daemonProc struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error // from Wait; read after exited is closed
}

func startDaemon(t *testing.T, bin, cfgPath string, env []string, logPath string) *daemonProc {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath, "--log-level", "info")
	cmd.Stdout, cmd.Stderr, cmd.Env = f, f, env
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start notifyd serve: %v", err)
	}
	d := &daemonProc{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		f.Close()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("--- %s (pid %d), last lines:\n%s", filepath.Base(logPath), cmd.Process.Pid, tail(d.logs(), 60))
		}
	})
	return d
}

func (d *daemonProc) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// wait waits for the process to exit, at most timeout.
func (d *daemonProc) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-d.exited:
	case <-timer.C:
		t.Fatalf("notifyd (pid %d) did not exit within %s", d.cmd.Process.Pid, timeout)
	}
}

func (d *daemonProc) logs() string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return "(read log: " + err.Error() + ")"
	}
	return string(b)
}

func tail(s string, lines int) string {
	s = strings.TrimRight(s, "\n")
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			if lines--; lines == 0 {
				return s[i+1:]
			}
		}
	}
	return s
}

// poll calls cond every interval until it reports true, failing the test at
// the deadline or as soon as the daemon d dies.
func poll(t *testing.T, what string, timeout, interval time.Duration, d *daemonProc, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if !d.running() {
			t.Fatalf("waiting for %s: notifyd exited (%v); last state: %s", what, d.err, state)
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after %s; last state: %s", what, timeout, state)
		}
		<-tick.C
	}
}

// e2eAPI is a minimal admin API client.
type e2eAPI struct {
	base, token string
	http        *http.Client
}

func (a *e2eAPI) do(t *testing.T, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, out
}

func (a *e2eAPI) waitReady(t *testing.T, d *daemonProc) {
	t.Helper()
	poll(t, "/readyz", 20*time.Second, 20*time.Millisecond, d, func() (bool, string) {
		status, body := a.do(t, http.MethodGet, "/readyz", nil)
		return status == http.StatusOK, fmt.Sprintf("%d %s", status, body)
	})
}
