package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/store/deliverylog"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// abCampaignBody is an SMS A/B test whose body names its variant and user,
// so what the provider received can be checked message by message.
const abCampaignBody = `{"id": "ab-e2e", "segment": "all", "channels": ["sms"], "holdout": 10, "throttle_per_s": 400,
  "content": {"sms": {"body": "A|{{ profile.id }}|Spring sale"}},
  "variants": [
    {"id": "A", "weight": 50},
    {"id": "B", "weight": 30, "content": {"sms": {"body": "B|{{ profile.id }}|20% off today"}}},
    {"id": "C", "weight": 20, "content": {"sms": {"body": "C|{{ profile.id }}|Free shipping"}}}
  ]}`

// startSMSDaemon runs a daemon whose sms channel is the real Twilio
// provider pointed at tw, on Redis (prefix) and the shard at path, with the
// delivery log in logDir.
func startSMSDaemon(t *testing.T, path, redisURL, prefix, logDir string, tw *sandbox.Twilio) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	ca, token := filepath.Join(dir, "twilio-ca.pem"), filepath.Join(dir, "twilio-token")
	if err := os.WriteFile(ca, tw.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(token, []byte("sandboxtoken0123"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(fmt.Appendf(nil, `shard:
  path: %s
admin:
  token: %s
redis:
  url: %s
  prefix: %q
engine:
  batch_size: 50
  max_open_batches: 2
delivery_log:
  enabled: true
  dir: %s
  fsync: always
channels:
  sms:
    account_sid: %s
    auth_token: {file: %s}
    from: "+15005550006"
    base_url: %s
    tls: {ca_file: %s}
`, path, testToken, redisURL, prefix, logDir, tw.AccountSID(), token, tw.URL(), ca))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	td := &testDaemon{base: "http://" + ln.Addr().String(), log: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(td.log, nil))
	chans, err := BuildChannels(cfg.Channels, logger)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), cfg, Deps{Channels: chans, Logger: logger, Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	td.stop = runDaemon(t, d)
	return td
}

// TestABTestEndToEnd runs an A/B campaign with a holdout through a daemon
// on Redis and the real SMS provider against the Twilio sandbox, stops the
// daemon mid-campaign and resumes it with a new one: every user who got a
// message got their variant's content (the same assignment before and
// after the restart), holdout members got nothing, the per-variant counts
// equal what the sandbox received per variant, and the delivery log names
// each message's variant.
func TestABTestEndToEnd(t *testing.T) {
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it)")
	}
	const members = 600
	path := writeTestShard(t, members)
	prefix := redisPrefix(t, redisURL)
	logDir := t.TempDir()
	tw, err := sandbox.NewTwilio(sandbox.TwilioOptions{AuthToken: "sandboxtoken0123"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tw.Close() })

	c, err := campaigns.DecodeCampaign([]byte(abCampaignBody))
	if err != nil {
		t.Fatal(err)
	}
	// The members as the shard has them: their user keys and phones.
	g := shardgen.New(3)
	var p shard.Profile
	group := map[string]string{} // user id → variant
	byPhone := map[string]string{}
	want := map[string]int64{}
	for i := range uint64(members) {
		g.Profile(i, &p)
		v := c.AssignVariant(shard.Key(p.ID))
		group[p.ID] = v
		want[v]++
		if p.Phone != "" {
			byPhone[p.Phone] = p.ID
		}
	}
	if len(want) != 4 || want[campaigns.HoldoutVariant] == 0 {
		t.Fatalf("groups %v: the test needs members in A, B, C and the holdout", want)
	}

	td := startSMSDaemon(t, path, redisURL, prefix, logDir, tw)
	if status, body := td.do(t, "POST", "/v1/campaigns?dry_run=true", testToken, "application/json", []byte(abCampaignBody)); status != 200 {
		t.Fatalf("dry run: %d %v", status, body)
	} else if vp, _ := body["variant_previews"].([]any); len(vp) != 3 {
		t.Fatalf("dry run previews %d variants, want 3: %v", len(vp), body)
	}
	if status, body := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(abCampaignBody)); status != 201 {
		t.Fatalf("create: %d %v", status, body)
	}
	// Stopped mid-campaign (the throttle makes it take over a second).
	for deadline := time.Now().Add(20 * time.Second); tw.Recorder.Count() < 100; {
		if time.Now().After(deadline) {
			t.Fatalf("the campaign never got going: %d received", tw.Recorder.Count())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := td.stop(); err != nil {
		t.Fatal(err)
	}
	atStop := tw.Recorder.Count()
	if atStop >= int(members) {
		t.Fatalf("the campaign finished before the stop (%d received)", atStop)
	}
	td = startSMSDaemon(t, path, redisURL, prefix, logDir, tw)
	var st map[string]any
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, st = td.do(t, "GET", "/v1/campaigns/ab-e2e", testToken, "", nil)
		if st["status"] == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never completed: %v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if atStop == tw.Recorder.Count() {
		t.Fatal("the resumed daemon sent nothing")
	}

	received := map[string]int64{}
	seen := map[string]bool{}
	for _, rec := range tw.Recorder.All() {
		form, err := url.ParseQuery(string(rec.Body))
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.SplitN(form.Get("Body"), "|", 3)
		if len(parts) != 3 {
			t.Fatalf("body %q", form.Get("Body"))
		}
		v, user := parts[0], parts[1]
		if byPhone[rec.Address] != user {
			t.Fatalf("%s received %s's message", rec.Address, user)
		}
		if group[user] != v {
			t.Errorf("%s received variant %s, is in %s", user, v, group[user])
		}
		if seen[user] {
			t.Errorf("%s received twice", user)
		}
		seen[user] = true
		received[v]++
	}
	variants, _ := st["variants"].(map[string]any)
	count := func(v, reason string) int64 {
		byCh, _ := variants[v].(map[string]any)
		m, _ := byCh["sms"].(map[string]any)
		n, _ := m[reason].(float64)
		return int64(n)
	}
	for _, v := range []string{"A", "B", "C"} {
		if got := count(v, "sent"); got != received[v] || got == 0 {
			t.Errorf("variant %s: counted %d sent, the sandbox received %d", v, got, received[v])
		}
	}
	if got := count(campaigns.HoldoutVariant, campaigns.ReasonHoldout); got != want[campaigns.HoldoutVariant] {
		t.Errorf("holdout counted %d, want %d", got, want[campaigns.HoldoutVariant])
	}
	if received[campaigns.HoldoutVariant] != 0 {
		t.Errorf("holdout members received %d messages", received[campaigns.HoldoutVariant])
	}
	// Every member is counted once, in its own group.
	for v, n := range want {
		var total int64
		byCh, _ := variants[v].(map[string]any)
		m, _ := byCh["sms"].(map[string]any)
		for _, x := range m {
			total += int64(x.(float64))
		}
		if total != n {
			t.Errorf("group %s: %d counted, %d members", v, total, n)
		}
	}

	// The delivery log names each message's variant.
	if err := td.stop(); err != nil {
		t.Fatal(err)
	}
	segs, err := deliverylog.ListSegments(logDir)
	if err != nil {
		t.Fatal(err)
	}
	logged := map[string]int64{}
	for _, s := range segs {
		if _, err := deliverylog.ScanFile(s.Path, true, func(r *deliverylog.Record) error {
			if r.Outcome == "accepted" {
				if group[r.UserID] != r.Variant {
					t.Errorf("log: %s's message has variant %q, want %q", r.UserID, r.Variant, group[r.UserID])
				}
				logged[r.Variant]++
			}
			return nil
		}); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	for _, v := range []string{"A", "B", "C"} {
		if logged[v] != received[v] {
			t.Errorf("log: %d accepted messages of variant %s, the sandbox received %d", logged[v], v, received[v])
		}
	}
}

// TestABWinnerEndToEnd: a test with a winner phase through a daemon on
// Redis and the Twilio sandbox, where the sandbox refuses half of variant
// B's numbers as invalid: the test reaches its test group only, then the
// daemon's own tick chooses A by dead_address_rate and sends it to the
// rest of the segment, keeping the holdout out.
func TestABWinnerEndToEnd(t *testing.T) {
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it)")
	}
	const members = 400
	const body = `{"id": "ab-winner", "segment": "all", "channels": ["sms"], "holdout": 10,
  "content": {"sms": {"body": "A|{{ profile.id }}"}},
  "variants": [{"id": "A", "weight": 1}, {"id": "B", "weight": 1, "content": {"sms": {"body": "B|{{ profile.id }}"}}}],
  "winner": {"after": "1s", "metric": "dead_address_rate", "test_percent": 40}}`
	path := writeTestShard(t, members)
	tw, err := sandbox.NewTwilio(sandbox.TwilioOptions{AuthToken: "sandboxtoken0123"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tw.Close() })
	c, err := campaigns.DecodeCampaign([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	g := shardgen.New(3)
	var p shard.Profile
	type member struct {
		key   uint64
		phone string
	}
	users := map[string]member{}
	for i := range uint64(members) {
		g.Profile(i, &p)
		k := shard.Key(p.ID)
		phone := p.Phone
		if p.Consent.SMS == shard.ConsentDenied {
			phone = "" // never texted: no_consent
		}
		users[p.ID] = member{k, phone}
		if p.Phone != "" && c.InTestGroup(k) && c.AssignVariant(k) == "B" && i%2 == 0 {
			tw.Faults.Add(sandbox.Fault{Match: p.Phone, Reason: "21211"})
		}
	}
	td := startSMSDaemon(t, path, redisURL, redisPrefix(t, redisURL), t.TempDir(), tw)
	if status, out := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(body)); status != 201 {
		t.Fatalf("create: %d %v", status, out)
	}
	var st map[string]any
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, st = td.do(t, "GET", "/v1/campaigns/ab-winner.winner", testToken, "", nil)
		if st["status"] == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the winner campaign never completed: %v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, parent := td.do(t, "GET", "/v1/campaigns/ab-winner", testToken, "", nil)
	if w, _ := parent["winner"].(map[string]any); w["variant"] != "A" || w["phase"] != "sent" {
		t.Fatalf("parent winner %v, want A sent", parent["winner"])
	}
	got := map[string][]string{}
	for _, rec := range tw.Recorder.All() {
		if rec.Status != 201 {
			continue
		}
		form, err := url.ParseQuery(string(rec.Body))
		if err != nil {
			t.Fatal(err)
		}
		v, user, _ := strings.Cut(form.Get("Body"), "|")
		got[user] = append(got[user], v)
	}
	var rest int64
	for id, m := range users {
		v := c.AssignVariant(m.key)
		switch {
		case m.phone == "" || v == campaigns.HoldoutVariant:
			if len(got[id]) != 0 {
				t.Errorf("%s (holdout or no phone) received %v", id, got[id])
			}
		case c.InTestGroup(m.key):
			if len(got[id]) > 1 || (len(got[id]) == 1 && got[id][0] != v) {
				t.Errorf("%s of the test (%s) received %v", id, v, got[id])
			}
		default:
			rest++
			if len(got[id]) != 1 || got[id][0] != "A" {
				t.Errorf("%s of the rest received %v, want the winner A once", id, got[id])
			}
		}
	}
	variants, _ := st["variants"].(map[string]any)
	a, _ := variants["A"].(map[string]any)
	sms, _ := a["sms"].(map[string]any)
	if sent, _ := sms["sent"].(float64); int64(sent) != rest || rest == 0 {
		t.Errorf("the winner campaign counted %v sent for A, the rest with a phone is %d", sms["sent"], rest)
	}
}
