package campaigns_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/memstate"
)

func capEngine(t *testing.T, r *rig, state *memstate.Store, rules []campaigns.CapRule) *campaigns.Engine {
	t.Helper()
	e := campaigns.NewEngine(state, state, r.src, campaigns.NewPoolDispatcher(r.pools), campaigns.EngineConfig{BatchSize: 100},
		campaigns.WithFrequencyCaps(state.Caps(), rules))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Close(ctx)
	})
	return e
}

// TestFrequencyCapsAcrossCampaigns: a global cap of 2 messages per day over
// every channel, then three campaigns. The counts are computed from the
// source's rules, member by member.
func TestFrequencyCapsAcrossCampaigns(t *testing.T) {
	src := newSource(600)
	state := memstate.New()
	r := newRig(t, state, src, campaigns.EngineConfig{})
	e := capEngine(t, r, state, []campaigns.CapRule{{Channel: campaigns.CapAll, Limit: 2, Window: campaigns.Duration(24 * time.Hour)}})
	ctx := context.Background()
	run := func(b string) campaigns.CampaignStatus {
		t.Helper()
		st, _, err := e.Create(ctx, []byte(b))
		if err != nil {
			t.Fatal(err)
		}
		return waitStatus(t, e, st.ID, campaigns.StatusCompleted)
	}
	// First: email and sms. Nobody reaches the cap within it.
	first := run(`{"id":"c1","segment":"all","channels":["email","sms"],"content":{"email":{"subject":"s","text":"t"},"sms":{"body":"one"}}}`)
	if first.Counts[channels.Email][campaigns.ReasonCapped]+first.Counts[channels.SMS][campaigns.ReasonCapped] != 0 {
		t.Fatalf("first campaign capped: %v", first.Counts)
	}
	got := map[string]int{} // messages per user so far
	for i, m := range src.members {
		if i%11 != 0 && m.Email != "" {
			got[m.ID]++
		}
		if m.Phone != "" {
			got[m.ID]++
		}
	}
	// Second: apns then sms; the dry run first says exactly what the run will.
	second := `{"id":"c2","segment":"all","channels":["apns","sms"],"content":{"push":{"title":"t","body":"b"},"sms":{"body":"two"}}}`
	rep, err := e.DryRun(ctx, []byte(second), campaigns.DryRunOptions{Sample: 0})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]int64{channels.APNs: {}, channels.SMS: {}}
	for _, m := range src.members {
		n := got[m.ID]
		for _, ch := range []string{channels.APNs, channels.SMS} {
			has := (ch == channels.APNs && len(m.APNs) > 0) || (ch == channels.SMS && m.Phone != "")
			switch {
			case !has:
				want[ch][campaigns.ReasonNoAddress]++
			case n >= 2:
				want[ch][campaigns.ReasonCapped]++
			default:
				want[ch][campaigns.ReasonSent]++
				n++
			}
		}
	}
	if want[channels.SMS][campaigns.ReasonCapped] == 0 || want[channels.APNs][campaigns.ReasonSent] == 0 {
		t.Fatalf("the source gives no capped or no sent messages: %v", want)
	}
	for ch, m := range want {
		dry := map[string]int64{}
		for k, v := range rep.Audience[ch] {
			if k == campaigns.ReasonWouldSend {
				k = campaigns.ReasonSent
			}
			dry[k] = v
		}
		if fmt.Sprint(dry) != fmt.Sprint(m) {
			t.Errorf("dry run %s: %v, want %v", ch, dry, m)
		}
	}
	st := run(second)
	for ch, m := range want {
		if fmt.Sprint(st.Counts[ch]) != fmt.Sprint(m) {
			t.Errorf("run %s: %v, want %v", ch, st.Counts[ch], m)
		}
	}
	// Third, exempt: nobody is capped, and it does not count against the caps.
	third := run(`{"id":"c3","segment":"all","channels":["sms"],"frequency_cap":{"exempt":true},"content":{"sms":{"body":"three"}}}`)
	if third.Counts[channels.SMS][campaigns.ReasonCapped] != 0 || third.Counts[channels.SMS][campaigns.ReasonSent] == 0 {
		t.Fatalf("exempt campaign: %v", third.Counts)
	}
	// Fourth replaces the rule with a looser one: 10 per day lets everyone through.
	fourth := run(`{"id":"c4","segment":"all","channels":["sms"],"frequency_cap":{"rules":[{"limit":10,"window":"24h"}]},"content":{"sms":{"body":"four"}}}`)
	if fourth.Counts[channels.SMS][campaigns.ReasonCapped] != 0 {
		t.Fatalf("campaign with its own looser cap was capped: %v", fourth.Counts)
	}
	// Exactly the uncapped messages reached the channel: no capped one leaked.
	sms := 0
	for _, k := range r.keys(channels.SMS) {
		if strings.HasPrefix(k, "c2:") {
			sms++
		}
	}
	if int64(sms) != want[channels.SMS][campaigns.ReasonSent] {
		t.Fatalf("%d c2 sms sent, want %d", sms, want[channels.SMS][campaigns.ReasonSent])
	}
}

func TestFrequencyCapValidation(t *testing.T) {
	tests := []struct{ name, capJSON, field string }{
		{"limit 0", `{"rules":[{"limit":0,"window":"1h"}]}`, "frequency_cap.rules[0].limit"},
		{"no window", `{"rules":[{"limit":1}]}`, "frequency_cap.rules[0].window"},
		{"window too long", `{"rules":[{"limit":1,"window":"800h"}]}`, "frequency_cap.rules[0].window"},
		{"unknown channel", `{"rules":[{"channel":"fax","limit":1,"window":"1h"}]}`, "frequency_cap.rules[0].channel"},
		{"exempt with rules", `{"exempt":true,"rules":[{"limit":1,"window":"1h"}]}`, "frequency_cap"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := campaigns.DecodeCampaign([]byte(`{"id":"x","segment":"all","channels":["sms"],"content":{"sms":{"body":"a"}},"frequency_cap":` + tc.capJSON + `}`))
			fe, ok := err.(*campaigns.FieldError)
			if !ok || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError on %s", err, tc.field)
			}
		})
	}
}
