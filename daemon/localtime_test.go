package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// TestDeferredCampaignsEndToEnd runs a 09:00 local-time campaign, and a
// campaign whose quiet hours delay, through the daemon as deployed: the
// shard file (ten zones, Kolkata's half-hour among them), Redis, and the
// Twilio fake behind the real SMS channel. A fake clock walks across the
// day; each zone's texts arrive when they are due there and not before,
// the daemon is replaced by a new one while members wait, and every member
// gets exactly one text.
func TestDeferredCampaignsEndToEnd(t *testing.T) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it)")
	}
	tests := []struct {
		name  string
		extra string
		// due is the oracle: when each zone's members are due after 2036-12-05T07:00Z.
		due map[string]string
		// steps are the clock's stops and the next pass named then; the
		// daemon is replaced before the step at restart.
		steps   []struct{ at, next string }
		restart int
	}{
		{
			name: "local time 09:00", extra: `"local_time":"09:00","local_time_zone":"Europe/Paris"`,
			due: map[string]string{
				"Africa/Cairo":        "05T07:00:00Z", // 09:00 there, now
				"Europe/Berlin":       "05T08:00:00Z",
				"Europe/Paris":        "05T08:00:00Z",
				"":                    "05T08:00:00Z", // no zone: local_time_zone, Paris
				"America/Sao_Paulo":   "05T12:00:00Z",
				"America/New_York":    "05T14:00:00Z",
				"America/Los_Angeles": "05T17:00:00Z",
				"Asia/Tokyo":          "06T00:00:00Z", // 16:00 there: tomorrow
				"Asia/Shanghai":       "06T01:00:00Z",
				"Asia/Kolkata":        "06T03:30:00Z",
				"Europe/Moscow":       "06T06:00:00Z",
			},
			steps: []struct{ at, next string }{
				{"05T07:00:00Z", "05T08:00:00Z"}, {"05T08:00:00Z", "05T12:00:00Z"},
				{"05T12:00:00Z", "05T14:00:00Z"}, {"05T13:59:59Z", "05T14:00:00Z"}, {"05T14:00:00Z", "05T17:00:00Z"},
				{"05T17:00:00Z", "06T00:00:00Z"}, {"06T00:00:00Z", "06T01:00:00Z"}, {"06T01:00:00Z", "06T03:30:00Z"},
				{"06T03:30:00Z", "06T06:00:00Z"}, {"06T06:00:00Z", ""},
			},
			restart: 2,
		},
		{
			name: "quiet hours 21:00-08:00, delay", extra: `"quiet_hours":{"start":"21:00","end":"08:00","zone":"Europe/Paris","mode":"delay"}`,
			due: map[string]string{
				"Africa/Cairo": "05T07:00:00Z", "Europe/Berlin": "05T07:00:00Z", "Europe/Paris": "05T07:00:00Z", "": "05T07:00:00Z",
				"Asia/Tokyo": "05T07:00:00Z", "Asia/Shanghai": "05T07:00:00Z", "Asia/Kolkata": "05T07:00:00Z", "Europe/Moscow": "05T07:00:00Z",
				"America/Sao_Paulo":   "05T11:00:00Z", // 04:00 there
				"America/New_York":    "05T13:00:00Z", // 02:00 there
				"America/Los_Angeles": "05T16:00:00Z", // 23:00 the day before
			},
			steps: []struct{ at, next string }{
				{"05T07:00:00Z", "05T11:00:00Z"}, {"05T11:00:00Z", "05T13:00:00Z"}, {"05T12:59:00Z", "05T13:00:00Z"},
				{"05T13:00:00Z", "05T16:00:00Z"}, {"05T16:00:00Z", ""},
			},
			restart: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { testDeferredEndToEnd(t, url, tc.extra, tc.due, tc.steps, tc.restart) })
	}
}

func testDeferredEndToEnd(t *testing.T, url, extra string, due map[string]string, steps []struct{ at, next string }, restart int) {
	const profiles = 400
	shardPath := writeTestShard(t, profiles)
	zoneOf := map[string]string{} // phone → zone
	perZone := map[string]int{}
	g := shardgen.New(3)
	var p shard.Profile
	for i := range uint64(profiles) {
		g.Profile(i, &p)
		if _, ok := due[p.TimeZone]; !ok {
			t.Fatalf("profile %d in zone %q, which the oracle lacks", i, p.TimeZone)
		}
		if p.Phone != "" && p.Consent.SMS != shard.ConsentDenied {
			zoneOf[p.Phone] = p.TimeZone
			perZone[p.TimeZone]++
		}
	}

	fake, err := sandbox.NewTwilio(sandbox.TwilioOptions{AuthToken: "sandboxtoken0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	dir := t.TempDir()
	caFile := filepath.Join(dir, "twilio-ca.pem")
	if err := os.WriteFile(caFile, fake.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	var clockMu sync.Mutex
	now := time.Date(2036, 12, 5, 7, 0, 0, 0, time.UTC)
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	setClock := func(s string) {
		clockMu.Lock()
		defer clockMu.Unlock()
		now = at2036(t, s)
	}
	yaml := fmt.Sprintf("shard: {path: %q}\nadmin: {token: %s}\nredis: {url: %s, prefix: %q}\nengine: {owner: %%s}\n"+
		"channels:\n  sms:\n    account_sid: %s\n    auth_token: sandboxtoken0123456789\n    from: \"+15005550006\"\n    base_url: %s\n    tls: {ca_file: %q}\n",
		shardPath, testToken, url, redisPrefix(t, url), fake.AccountSID(), fake.URL(), caFile)
	start := func(owner string) *testDaemon {
		t.Helper()
		cfg, err := ParseConfig([]byte(fmt.Sprintf(yaml, owner)))
		if err != nil {
			t.Fatal(err)
		}
		log := slog.New(slog.DiscardHandler)
		chans, err := BuildChannels(cfg.Channels, log)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(context.Background(), cfg, Deps{Channels: chans, Logger: log, Listener: ln, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		td := &testDaemon{base: "http://" + ln.Addr().String()}
		var once sync.Once
		td.stop = func() error {
			var err error
			once.Do(func() { cancel(); err = <-done })
			return err
		}
		t.Cleanup(func() { _ = td.stop() })
		return td
	}

	// received counts the fake's texts by zone; a phone texted twice fails.
	received := func() map[string]int {
		t.Helper()
		seen := map[string]bool{}
		out := map[string]int{}
		for _, r := range fake.Recorder.All() {
			if seen[r.Address] {
				t.Fatalf("%s got two texts", r.Address)
			}
			seen[r.Address] = true
			out[zoneOf[r.Address]]++
		}
		return out
	}
	// expect waits for the texts due by `at` and for the status to name the
	// next pass (the pass is over: nothing more can arrive before it).
	expect := func(td *testDaemon, at, next string) {
		t.Helper()
		want := map[string]int{}
		for z, d := range due {
			if d <= at && perZone[z] > 0 {
				want[z] = perZone[z]
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := received()
			_, st := td.do(t, "GET", "/v1/campaigns/morning", testToken, "", nil)
			w, _ := st["waiting"].(map[string]any)
			nextDue, _ := w["next_due"].(string)
			wantStatus := "running"
			if next == "" {
				wantStatus = "completed"
			}
			if fmt.Sprint(got) == fmt.Sprint(want) && st["status"] == wantStatus && (next == "" || nextDue == "2036-12-"+next) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("at %s: received %v, want %v; status %v", at, got, want, st)
			}
			time.Sleep(20 * time.Millisecond) // polling the fake and the API
		}
	}

	td := start("daemon-a")
	body := `{"id":"morning","segment":"all","channels":["sms"],"send_at":"2036-12-05T07:00:00Z",` + extra + `,` +
		`"content":{"sms":{"body":"Good morning {{ profile.first_name | default: 'there' }}"}}}`
	if status, resp := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(body)); status != 201 {
		t.Fatalf("create: %d %v", status, resp)
	}
	for i, s := range steps {
		if i == restart {
			// The daemon is replaced while members wait.
			if err := td.stop(); err != nil {
				t.Fatal(err)
			}
			setClock(s.at)
			td = start("daemon-b")
		}
		setClock(s.at)
		expect(td, s.at, s.next)
	}
	_, st := td.do(t, "GET", "/v1/campaigns/morning", testToken, "", nil)
	sms := st["counts"].(map[string]any)["sms"].(map[string]any)
	if sms["sent"] != float64(len(zoneOf)) {
		t.Fatalf("counted %v, want %d sent", sms, len(zoneOf))
	}
}

func at2036(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, "2036-12-"+s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
