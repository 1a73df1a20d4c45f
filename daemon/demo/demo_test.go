package demo

import (
	"bytes"
	"context"
	"encoding/json"
	neturl "net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/daemon"
	"github.com/notifyd/notifyd/store/shard"
)

// TestDemoDeliversOverEveryChannel runs the embedded default end to end: a
// generated shard, every real provider client against its sandbox, the
// daemon's admin API, and the summary a newcomer sees.
func TestDemoDeliversOverEveryChannel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	s, err := Run(ctx, Options{Profiles: 1500, Seed: 7, Out: &out, Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	want, err := daemon.ExpectedCounts(s.ShardPath, "all", s.Campaign.Channels, false)
	if err != nil {
		t.Fatal(err)
	}
	if s.Campaign.Status != campaigns.StatusCompleted {
		t.Fatalf("campaign %s, want completed", s.Campaign.Status)
	}
	for _, ch := range []string{"apns", "fcm", "email", "sms", "webpush", "webhook"} {
		counts := s.Campaign.Counts[ch]
		var total int64
		for _, n := range counts {
			total += n
		}
		if total != want[ch] || total < int64(s.Members) {
			t.Errorf("%s: counts %v add up to %d, want every member once per address (%d for %d members)", ch, counts, total, want[ch], s.Members)
		}
		if counts[campaigns.ReasonSent] == 0 {
			t.Errorf("%s: nothing sent: %v", ch, counts)
		}
		if int64(s.Received[ch]) < counts[campaigns.ReasonSent] {
			t.Errorf("%s: sandbox received %d requests, fewer than the %d counted sent", ch, s.Received[ch], counts[campaigns.ReasonSent])
		}
		smp := s.Samples[ch]
		if smp == "" || strings.Contains(smp, "{{") {
			t.Errorf("%s: sample %q is missing or unrendered", ch, smp)
		}
	}
	if s.Feedback == 0 {
		t.Error("injected dead addresses produced no feedback records")
	}
	for _, want := range []string{"completed", "dead-address feedback records", "samples"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

// TestDemoOverRedisDeliversExactlyOnce is the end-to-end check with real
// Redis state: every eligible recipient received exactly one message per
// channel, personalised from their own profile, and everyone else has a reason.
func TestDemoOverRedisDeliversExactlyOnce(t *testing.T) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it)")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { // after the demo's daemon stopped; the client closes last
		defer rdb.Close()
		keys, _ := rdb.Keys(context.Background(), "notifyd-demo:*").Result()
		if len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 2000
	s, err := Run(ctx, Options{Profiles: n, Seed: 11, Dir: t.TempDir(), RedisURL: url, RecordLimit: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	// Profiles by external id, and by phone, from the shard the demo wrote.
	want, err := daemon.ExpectedCounts(s.ShardPath, "all", s.Campaign.Channels, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := shard.Open(s.ShardPath)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tierID, _ := r.AttrID("tier")
	firstID, _ := r.AttrID("first_name")
	tierOf, firstByPhone := map[string]string{}, map[string]string{}
	for i := range uint32(r.Rows()) {
		row, err := r.Row(i)
		if err != nil {
			t.Fatal(err)
		}
		tier, ok := row.StringAttr(tierID)
		if !ok {
			tier = "none"
		}
		tierOf[row.ID()] = tier
		first, ok := row.StringAttr(firstID)
		if !ok {
			first = "there"
		}
		firstByPhone[row.Phone()] = first
	}

	for ch, recs := range s.Records {
		if ch == "webpush" {
			continue // the demo's 64 browser subscriptions are shared by many users
		}
		seen := map[string]int{}
		for _, rec := range recs {
			if rec.Status/100 != 2 {
				continue
			}
			key := rec.Address
			switch ch {
			case "webhook":
				var body struct{ User, Tier string }
				if err := json.Unmarshal(rec.Body, &body); err != nil {
					t.Fatalf("webhook body %q: %v", rec.Body, err)
				}
				key = body.User
				if body.Tier != tierOf[body.User] {
					t.Errorf("webhook for %s says tier %q, profile has %q", body.User, body.Tier, tierOf[body.User])
				}
			case "sms":
				form, err := neturl.ParseQuery(string(rec.Body))
				if err != nil {
					t.Fatal(err)
				}
				key = form.Get("To")
				if want := "hi " + firstByPhone[key] + ","; !strings.Contains(form.Get("Body"), want) {
					t.Errorf("sms to %s: %q lacks %q", key, form.Get("Body"), want)
				}
			}
			seen[key]++
		}
		for k, c := range seen {
			if c > 1 {
				t.Errorf("%s: %s received %d messages", ch, k, c)
			}
		}
		if int64(len(seen)) < s.Campaign.Counts[ch]["sent"] {
			t.Errorf("%s: %d distinct recipients received, %d counted sent", ch, len(seen), s.Campaign.Counts[ch]["sent"])
		}
		var total int64
		for _, v := range s.Campaign.Counts[ch] {
			total += v
		}
		if total != want[ch] {
			t.Errorf("%s: counts %v add up to %d, want %d (every member once per address)", ch, s.Campaign.Counts[ch], total, want[ch])
		}
	}
}
