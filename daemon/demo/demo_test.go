package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
)

// TestDemoDeliversOverEveryChannel runs the embedded default end to end: a
// generated shard, every real provider client against its sandbox, the
// daemon's admin API, and the summary a newcomer sees.
func TestDemoDeliversOverEveryChannel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	s, err := Run(ctx, Options{Profiles: 1500, Seed: 7, Out: &out})
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
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
		if total != int64(s.Members) {
			t.Errorf("%s: counts %v add up to %d, want every member (%d)", ch, counts, total, s.Members)
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
