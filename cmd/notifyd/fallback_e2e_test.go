package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/daemon"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/redis/go-redis/v9"
)

// Fault patterns of TestFallbackEndToEnd: APNs tokens starting with 0-7
// (about half) and FCM tokens starting with a-m (a fifth) are dead; email
// addresses of profiles whose number ends in 3 or 7 bounce at RCPT (a fifth).
const (
	e2eDeadAPNs  = "[0-7]*"
	e2eDeadFCM   = "[a-m]*"
	e2eDeadEmail = "*[37]@*"
)

// TestFallbackEndToEnd runs a push → email → sms fallback campaign through
// the real daemon: the sandbox's generated shard, Redis (REDIS_URL, db 3 in
// this project), and the provider fakes, which answer dead tokens (APNs 410
// Unregistered, FCM UNREGISTERED) and unknown mailboxes (SMTP 550). Every
// member gets at most one step: exactly the addresses the test derives from
// the shard and the fault patterns reach each fake, once, and the campaign
// counts what the fakes accepted.
func TestFallbackEndToEnd(t *testing.T) {
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		t.Skip("REDIS_URL not set: the fallback end-to-end test needs a real Redis")
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("parse REDIS_URL: not a valid redis:// URL")
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	dir := t.TempDir()
	sb, err := startSandbox(sandboxOptions{Dir: dir, Ports: map[string]int{}, Profiles: 600, Faults: []faultSpec{
		{Channel: "apns", Match: e2eDeadAPNs, Status: 410, Reason: "Unregistered"},
		{Channel: "fcm", Match: e2eDeadFCM, Status: 404, Reason: "UNREGISTERED"},
		{Channel: "email", Match: e2eDeadEmail, Status: 550, Reason: "5.1.1 no such user"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	ctl := newSandboxClient(sb.ControlURL())

	addr := freeAddr(t)
	prefix := fmt.Sprintf("notifyd-fallback-test:%d:", time.Now().UnixNano())
	extra := filepath.Join(dir, "extra.yaml")
	writeFile(t, extra, fmt.Sprintf("admin:\n  listen: %s\nredis:\n  url: %s\n  prefix: %q\n", addr, redisURL, prefix))
	t.Cleanup(func() { deleteKeys(t, rdb, prefix) }) // runs after the daemon stopped
	cfg, chans, err := loadDaemon([]string{"../../examples/local.yaml", filepath.Join(dir, sandboxFragment), extra}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, chans, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Errorf("serve did not stop within 30s of its context ending")
		}
	})
	token, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	api := func(method, p string, body []byte) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+addr+p, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.Bytes()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 90s", what)
			}
			time.Sleep(50 * time.Millisecond) // polling the daemon's API
		}
	}
	waitFor("daemon ready", func() bool { s, _ := api("GET", "/readyz", nil); return s == 200 })

	id := fmt.Sprintf("fallback-e2e-%d", time.Now().UnixNano())
	body := fmt.Sprintf(`{
	  "id": %q, "segment": "all", "channels": ["apns", "fcm", "email", "sms"],
	  "delivery": {"mode": "fallback", "order": ["push", "email", "sms"], "wait": "10m"},
	  "content": {
	    "push": {"title": "Hi", "body": "Your perks are waiting."},
	    "email": {"from": "Shop <shop@notifyd.test>", "subject": "Your perks", "text": "Hi {{ profile.first_name | default: 'there' }}"},
	    "sms": {"body": "Shop: your perks are waiting."}
	  }
	}`, id)
	if s, b := api("POST", "/v1/campaigns", []byte(body)); s != 201 {
		t.Fatalf("create: %d %s", s, b)
	}
	var st campaigns.CampaignStatus
	waitFor("campaign completes", func() bool {
		s, b := api("GET", "/v1/campaigns/"+id, nil)
		return s == 200 && json.Unmarshal(b, &st) == nil && st.Status == campaigns.StatusCompleted
	})

	// What each fake must have received, from the shard and the faults.
	exp := expectFallback(t, filepath.Join(dir, sandboxShard))
	stats := ctl.stats(t)
	for _, ch := range []string{"apns", "fcm", "email", "sms"} {
		g := stats[ch]
		if g.Received != int64(len(exp.received[ch])) || g.Accepted != exp.accepted[ch] || g.Duplicates != 0 {
			t.Errorf("%s: the fake received %d, accepted %d (%d duplicates); want %d received, %d accepted, none twice",
				ch, g.Received, g.Accepted, g.Duplicates, len(exp.received[ch]), exp.accepted[ch])
		}
		if st.Counts[ch]["sent"] != exp.accepted[ch] {
			t.Errorf("%s: the campaign counted %d sent, the fake accepted %d", ch, st.Counts[ch]["sent"], exp.accepted[ch])
		}
		var rec struct {
			Received []receivedView `json:"received"`
		}
		ctl.call(t, http.MethodGet, "/received?channel="+ch+"&limit=2000", nil, &rec)
		got := map[string]int{}
		for _, r := range rec.Received {
			got[r.Address]++
		}
		if !maps.Equal(got, exp.received[ch]) {
			t.Errorf("%s: the fake received %d addresses, not the %d expected (first differences: %s)", ch, len(got), len(exp.received[ch]), firstDiff(got, exp.received[ch]))
		}
	}
	if st.Counts["email"][campaigns.ReasonDeadAddress] != exp.bounced {
		t.Errorf("email dead_address = %d, want %d", st.Counts["email"][campaigns.ReasonDeadAddress], exp.bounced)
	}
	if !maps.EqualFunc(st.Fallback, exp.fallback, maps.Equal) {
		t.Errorf("fallback = %v, want %v", st.Fallback, exp.fallback)
	}
	// Not vacuous: every cause happened.
	for _, c := range [][2]string{{"push", "no_address"}, {"push", "no_consent"}, {"push", "dead_address"}, {"email", "dead_address"}, {"email", "no_address"}} {
		if exp.fallback[c[0]][c[1]] == 0 {
			t.Errorf("the generated shard gave no fallback from %s for %s", c[0], c[1])
		}
	}
	// The metric says the same, once the events hub has sampled the campaign.
	waitFor("notifyd_campaign_fallbacks_total", func() bool {
		_, b := api("GET", "/metrics", nil)
		for step, causes := range exp.fallback {
			for cause, n := range causes {
				if !strings.Contains(string(b), fmt.Sprintf("notifyd_campaign_fallbacks_total{cause=%q,step=%q} %d\n", cause, step, n)) {
					return false
				}
			}
		}
		return true
	})
	var table bytes.Buffer
	if _, b := api("GET", "/v1/campaigns/"+id, nil); campaignTable(&table, b) != nil || !strings.Contains(table.String(), "FALLBACKS") {
		t.Errorf("campaign get table without the fallbacks:\n%s", table.String())
	}
	t.Logf("accepted %v, fallback %v\n%s", exp.accepted, exp.fallback, table.String())
}

type fallbackExpectation struct {
	received map[string]map[string]int // channel → address → requests
	accepted map[string]int64
	bounced  int64
	fallback map[string]map[string]int64
}

// expectFallback walks the shard (addresses are cloned: they point into
// the mapping, unmapped when the store closes) and applies the fallback rules by hand:
// push (every apns and fcm token) if the member has a token and no push
// "no"; email if push is unusable or every token is dead; sms after email.
func expectFallback(t *testing.T, shardPath string) fallbackExpectation {
	t.Helper()
	store, err := shard.OpenStore(shardPath)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	it, err := daemon.NewShardSource(store).Members("all", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	match := func(pattern, addr string) bool { ok, _ := path.Match(pattern, addr); return ok }
	e := fallbackExpectation{
		received: map[string]map[string]int{"apns": {}, "fcm": {}, "email": {}, "sms": {}},
		accepted: map[string]int64{},
		fallback: map[string]map[string]int64{},
	}
	count := func(step, cause string) {
		if e.fallback[step] == nil {
			e.fallback[step] = map[string]int64{}
		}
		e.fallback[step][cause]++
	}
	buf := make([]campaigns.Member, 256)
	for {
		n, err := it.Next(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return e
		}
		for i := range buf[:n] {
			m := &buf[i]
			type step struct {
				name, why string // why: the reason it is unusable, "" if usable
			}
			why := func(consent campaigns.Consent, has bool) string {
				switch {
				case consent == campaigns.ConsentDenied:
					return campaigns.ReasonNoConsent
				case !has:
					return campaigns.ReasonNoAddress
				}
				return ""
			}
			steps := []step{
				{"push", why(m.PushConsent, len(m.APNs)+len(m.FCM) > 0)},
				{"email", why(m.EmailConsent, m.Email != "")},
				{"sms", why(m.SMSConsent, m.Phone != "")},
			}
			counted := 0 // the steps before it are counted as fallbacks already
			for k, s := range steps {
				if s.why != "" {
					continue
				}
				// The steps passed over on the way here are fallbacks, counted
				// per step and cause, once a usable step follows them.
				for _, before := range steps[counted:k] {
					count(before.name, before.why)
				}
				counted = k + 1
				var reached bool
				switch s.name {
				case "push":
					for _, tok := range m.APNs {
						e.received["apns"][strings.Clone(tok)]++
						if !match(e2eDeadAPNs, tok) {
							e.accepted["apns"]++
							reached = true
						}
					}
					for _, tok := range m.FCM {
						e.received["fcm"][strings.Clone(tok)]++
						if !match(e2eDeadFCM, tok) {
							e.accepted["fcm"]++
							reached = true
						}
					}
				case "email":
					// A mailbox refused at RCPT TO never becomes a message:
					// the SMTP fake records only what got past it.
					if reached = !match(e2eDeadEmail, m.Email); reached {
						e.received["email"][strings.Clone(m.Email)]++
						e.accepted["email"]++
					} else {
						e.bounced++
					}
				case "sms":
					e.received["sms"][strings.Clone(m.Phone)]++
					e.accepted["sms"]++
					reached = true
				}
				if reached {
					break
				}
				// Failed permanently: counted if a later step is usable.
				for _, later := range steps[k+1:] {
					if later.why == "" {
						count(s.name, campaigns.ReasonDeadAddress)
						break
					}
				}
			}
		}
	}
}

// firstDiff names a few addresses whose counts differ.
func firstDiff(got, want map[string]int) string {
	var out []string
	for a, n := range want {
		if got[a] != n && len(out) < 3 {
			out = append(out, fmt.Sprintf("%s: got %d want %d", a, got[a], n))
		}
	}
	for a, n := range got {
		if _, ok := want[a]; !ok && len(out) < 6 {
			out = append(out, fmt.Sprintf("%s: got %d, not expected", a, n))
		}
	}
	return strings.Join(out, "; ")
}
