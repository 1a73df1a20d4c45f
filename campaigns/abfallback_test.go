package campaigns_test

import (
	"context"
	"maps"
	"sync"
	"testing"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/store/memstate"
)

// abFallbackBody is an A/B test (holdout 10%) whose delivery falls back
// push → email → sms; variant B has its own email subject and SMS text.
const abFallbackBody = `{
  "id": "ab-fb", "segment": "all", "channels": ["apns", "email", "sms"], "holdout": 10,
  "tracking": {"opens": true, "clicks": true},
  "delivery": {"mode": "fallback", "wait": "1h"},
  "content": {
    "email": {"from": "shop@example.test", "subject": "A subject", "text": "Hello"},
    "sms": {"body": "A text"},
    "push": {"title": "Sale", "body": "Hi"}
  },
  "variants": [
    {"id": "A", "weight": 50},
    {"id": "B", "weight": 50, "content": {"email": {"from": "shop@example.test", "subject": "B subject", "text": "Hello"}, "sms": {"body": "B text"}}}
  ]
}`

// TestFallbackWithVariants: each member falls back along the order with
// their own variant's content and the campaign's email tracking, the
// holdout gets nothing on any channel,
// and the per-variant counts add up to the campaign's.
func TestFallbackWithVariants(t *testing.T) {
	src := newSource(1200)
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{})
	c := abCampaign(t, abFallbackBody)
	for i, m := range src.members {
		if i%6 == 0 { // has a token (i%3==0); every other one is dead
			r.chans[channels.APNs].Script(m.APNs[0], channelstest.Answer{Err: deadToken})
		}
	}
	type got struct {
		channel, variant, content string
		track                     channels.Track
	}
	var mu sync.Mutex
	sends := map[string][]got{} // user → what reached a provider, in order
	for _, ch := range []string{channels.APNs, channels.Email, channels.SMS} {
		r.chans[ch].OnSend(func(batch []*channels.Message) {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range batch {
				g := got{channel: ch, variant: m.Variant, track: m.Track}
				switch {
				case m.Mail != nil:
					g.content = m.Mail.Subject
				case m.Text != nil:
					g.content = m.Text.Body
				case m.Push != nil:
					g.content = m.Push.Title
				}
				sends[m.UserID] = append(sends[m.UserID], g)
			}
		})
	}
	if _, _, err := r.engine.Create(context.Background(), []byte(abFallbackBody)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, r.engine, "ab-fb", campaigns.StatusCompleted)

	// Every message carries the campaign's opt-in; the email sender is the
	// one that applies it.
	tracked := channels.TrackOpens | channels.TrackClicks
	held, byVariant := 0, map[string]int{}
	for i, m := range src.members {
		v := c.AssignVariant(m.Key)
		s := sends[m.ID]
		if v == campaigns.HoldoutVariant {
			held++
			if len(s) != 0 {
				t.Errorf("%s is held out but got %+v", m.ID, s)
			}
			continue
		}
		byVariant[v]++
		emailOK := m.Email != "" && i%11 != 0
		var want []got
		if len(m.APNs) > 0 {
			want = append(want, got{channels.APNs, v, "Sale", tracked})
		}
		if len(m.APNs) == 0 || i%6 == 0 {
			switch {
			case emailOK:
				want = append(want, got{channels.Email, v, v + " subject", tracked})
			case m.Phone != "":
				want = append(want, got{channels.SMS, v, v + " text", tracked})
			}
		}
		if !slicesEqual(s, want) {
			t.Errorf("%s (variant %s): sends %+v, want %+v", m.ID, v, s, want)
		}
	}
	if held == 0 || byVariant["A"] == 0 || byVariant["B"] == 0 {
		t.Fatalf("split held %d, variants %v: the test needs all three", held, byVariant)
	}
	// Per-variant counts: holdout once per channel per member, and the
	// variants' counts sum to the campaign's for every channel and reason.
	for _, ch := range []string{channels.APNs, channels.Email, channels.SMS} {
		if n := st.Variants[campaigns.HoldoutVariant][ch][campaigns.ReasonHoldout]; n != int64(held) {
			t.Errorf("%s: holdout counted %d, want %d", ch, n, held)
		}
		sum := map[string]int64{}
		for _, byCh := range st.Variants {
			for reason, n := range byCh[ch] {
				sum[reason] += n
			}
		}
		if !maps.Equal(sum, st.Counts[ch]) {
			t.Errorf("%s: variants sum to %v, campaign counts %v", ch, sum, st.Counts[ch])
		}
	}
	for v, n := range byVariant {
		var members int64
		for _, k := range st.Variants[v][channels.SMS] {
			members += k // one final reason per member per channel
		}
		if members != int64(n) {
			t.Errorf("variant %s: sms counts %v cover %d members, want %d", v, st.Variants[v][channels.SMS], members, n)
		}
	}
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
