package campaigns_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/memstate"
)

// abCampaign decodes and compiles a campaign body, as Create and a
// restarted daemon do.
func abCampaign(t *testing.T, body string) *campaigns.Campaign {
	t.Helper()
	c, err := campaigns.DecodeCampaign([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compile(time.Now); err != nil {
		t.Fatal(err)
	}
	return c
}

func abBody(id, extra string) string {
	return fmt.Sprintf(`{"id": %q, "segment": "all", "channels": ["sms", "email"],
  "content": {"sms": {"body": "Hi"}, "email": {"from": "shop@example.test", "subject": "Sale", "text": "Hello"}}%s}`, id, extra)
}

func TestVariantSplitWithinOnePercentOf100kUsers(t *testing.T) {
	const users = 100_000
	for _, tc := range []struct {
		name, extra string
		want        map[string]float64 // share of the audience
	}{
		{"two arms 50/50", `, "variants": [{"id": "A", "weight": 50}, {"id": "B", "weight": 50}]`,
			map[string]float64{"A": 0.5, "B": 0.5}},
		{"three arms 70/20/10 and a 10% holdout", `, "holdout": 10, "variants": [{"id": "A", "weight": 70}, {"id": "B", "weight": 20}, {"id": "C", "weight": 10}]`,
			map[string]float64{"A": 0.63, "B": 0.18, "C": 0.09, "holdout": 0.1}},
		{"relative weights 1/1/1", `, "variants": [{"id": "x", "weight": 1}, {"id": "y", "weight": 1}, {"id": "z", "weight": 1}]`,
			map[string]float64{"x": 1.0 / 3, "y": 1.0 / 3, "z": 1.0 / 3}},
		{"holdout only, 5%", `, "holdout": 5`, map[string]float64{"default": 0.95, "holdout": 0.05}},
		{"a small arm of 2%", `, "variants": [{"id": "big", "weight": 98}, {"id": "small", "weight": 2}]`,
			map[string]float64{"big": 0.98, "small": 0.02}},
	} {
		i := len(tc.want) * 10 // an id per case: assignments differ between campaigns
		t.Run(tc.name, func(t *testing.T) {
			body := abBody(fmt.Sprintf("split-%d", i), tc.extra)
			c := abCampaign(t, body)
			got := map[string]int{}
			first := make([]string, users)
			for i := range users {
				v := c.AssignVariant(xxhash.Sum64String(fmt.Sprintf("user-%d", i)))
				first[i] = v
				got[v]++
			}
			if len(got) != len(tc.want) {
				t.Fatalf("groups %v, want %v", got, tc.want)
			}
			for id, share := range tc.want {
				if d := math.Abs(float64(got[id])/users - share); d > 0.01 {
					t.Errorf("group %s: %d of %d (%.4f), want %.4f ± 0.01", id, got[id], users, float64(got[id])/users, share)
				}
			}
			// A restart: the definition as stored, decoded and compiled again.
			def, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			again := abCampaign(t, string(def))
			for i := range users {
				if v := again.AssignVariant(xxhash.Sum64String(fmt.Sprintf("user-%d", i))); v != first[i] {
					t.Fatalf("user-%d: %s before the restart, %s after", i, first[i], v)
				}
			}
		})
	}
}

// TestVariantAssignmentGolden pins the assignment function: a daemon of
// another version (or a Python job reproducing it) must put the same user
// in the same group.
func TestVariantAssignmentGolden(t *testing.T) {
	c := abCampaign(t, abBody("golden-ab", `, "holdout": 25, "variants": [{"id": "A", "weight": 50}, {"id": "B", "weight": 30}, {"id": "C", "weight": 20}]`))
	want := map[string]string{
		"u-1": "B", "u-2": "A", "u-3": "A", "u-4": "B", "u-5": "holdout", "u-6": "holdout", "u-7": "B", "u-8": "B",
		"u-9": "C", "u-10": "B", "u-11": "B", "u-12": "C", "u-13": "holdout", "u-14": "A", "u-15": "holdout", "u-16": "A",
	}
	for user, v := range want {
		t.Run(user, func(t *testing.T) {
			if got := c.AssignVariant(xxhash.Sum64String(user)); got != v {
				t.Errorf("%s is in %s, want %s", user, got, v)
			}
		})
	}
	if got := (&campaigns.Campaign{ID: "plain"}).AssignVariant(42); got != "" {
		t.Errorf("a campaign without an A/B test assigned %q", got)
	}
}

func TestVariantValidationNamesTheField(t *testing.T) {
	for _, tc := range []struct{ name, extra, field string }{
		{"zero weight", `, "variants": [{"id": "A", "weight": 1}, {"id": "B", "weight": 0}]`, "variants[1].weight"},
		{"negative weight", `, "variants": [{"id": "A", "weight": -1}, {"id": "B", "weight": 1}]`, "variants[0].weight"},
		{"missing id", `, "variants": [{"id": "A", "weight": 1}, {"weight": 1}]`, "variants[1].id"},
		{"id with a colon", `, "variants": [{"id": "A:1", "weight": 1}, {"id": "B", "weight": 1}]`, "variants[0].id"},
		{"duplicate id", `, "variants": [{"id": "A", "weight": 1}, {"id": "A", "weight": 1}]`, "variants[1].id"},
		{"reserved id", `, "variants": [{"id": "A", "weight": 1}, {"id": "holdout", "weight": 1}]`, "variants[1].id"},
		{"one variant", `, "variants": [{"id": "A", "weight": 1}]`, "variants"},
		{"holdout of 100%", `, "holdout": 100`, "holdout"},
		{"negative holdout", `, "holdout": -1`, "holdout"},
		{"block of no channel", `, "variants": [{"id": "A", "weight": 1}, {"id": "B", "weight": 1, "content": {"push": {"title": "x"}}}]`, "variants[1].content.push"},
		{"unknown field", `, "variants": [{"id": "A", "weight": 1, "colour": "red"}, {"id": "B", "weight": 1}]`, "variants[0].colour"},
		{"limits", `, "variants": [{"id": "A", "weight": 1, "content": {"limits": {"max_steps": 5}}}, {"id": "B", "weight": 1}]`, "variants[0].content.limits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := campaigns.DecodeCampaign([]byte(abBody("bad", tc.extra)))
			var fe *campaigns.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
	t.Run("compile error in a variant", func(t *testing.T) {
		c, err := campaigns.DecodeCampaign([]byte(abBody("bad", `, "variants": [{"id": "A", "weight": 1}, {"id": "B", "weight": 1, "content": {"sms": {"body": "{{ oops"}}}]`)))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Compile(time.Now)
		var fe *campaigns.FieldError
		if !errors.As(err, &fe) || fe.Field != "variants[1].content.sms.body" {
			t.Fatalf("error %v, want one naming variants[1].content.sms.body", err)
		}
	})
}

const abRunBody = `{
  "id": "ab-run", "segment": "all", "channels": ["email", "sms", "apns"], "holdout": 10,
  "content": {
    "email": {"from": "shop@example.test", "subject": "Hi {{ profile.first_name }}", "text": "Hello"},
    "sms": {"body": "Sale! {{ profile.first_name }}"},
    "push": {"title": "Sale", "body": "Hi {{ profile.first_name }}"}
  },
  "variants": [
    {"id": "A", "weight": 60},
    {"id": "B", "weight": 40, "content": {"sms": {"body": "B: 20% off, {{ profile.first_name }}"}, "push": {"title": "B sale", "body": "B {{ profile.first_name }}"}}}
  ]
}`

// TestDryRunCountsPerVariantEqualTheRun: the dry run's per-variant audience
// is what the run then counts per variant, every holdout member is counted
// once per channel and never sent, and each variant is previewed with its
// own content.
func TestDryRunCountsPerVariantEqualTheRun(t *testing.T) {
	src := newSource(2000)
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{})
	ctx := context.Background()
	c := abCampaign(t, abRunBody)
	holdout := 0
	for _, m := range src.members {
		if c.AssignVariant(m.Key) == campaigns.HoldoutVariant {
			holdout++
		}
	}
	if holdout < 150 || holdout > 250 {
		t.Fatalf("%d of 2000 members held out, want about 200", holdout)
	}

	rep, err := r.engine.DryRun(ctx, []byte(abRunBody), campaigns.DryRunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Fatalf("dry run not ok: %v", rep.Errors)
	}
	for _, ch := range []string{channels.Email, channels.SMS, channels.APNs} {
		if got := rep.Variants[campaigns.HoldoutVariant][ch][campaigns.ReasonHoldout]; got != int64(holdout) {
			t.Errorf("dry run: %s holdout %d, want %d", ch, got, holdout)
		}
		if rep.Audience[ch][campaigns.ReasonHoldout] != int64(holdout) {
			t.Errorf("dry run audience: %s holdout %d, want %d", ch, rep.Audience[ch][campaigns.ReasonHoldout], holdout)
		}
	}
	if len(rep.VariantPreviews) != 2 {
		t.Fatalf("variant previews %+v, want one for A and one for B", rep.VariantPreviews)
	}
	for _, pv := range rep.VariantPreviews {
		var all string
		for _, cp := range pv.Channels {
			b, _ := json.Marshal(cp.Content)
			all += string(b)
		}
		isB := contains(all, `"B sale"`) || contains(all, "B: 20% off")
		if isB != (pv.Variant == "B") || (!isB && !contains(all, "Sale")) {
			t.Errorf("variant %s (user %s) previews %s", pv.Variant, pv.User, all)
		}
	}
	for _, pv := range rep.Previews {
		if want := c.AssignVariant(keyOf(src, pv.User)); pv.Variant != want {
			t.Errorf("preview of %s says variant %q, want %q", pv.User, pv.Variant, want)
		}
	}

	if _, _, err := r.engine.Create(ctx, []byte(abRunBody)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, r.engine, "ab-run", campaigns.StatusCompleted)
	for v, byCh := range rep.Variants {
		for ch, reasons := range byCh {
			for reason, n := range reasons {
				if reason == campaigns.ReasonWouldSend {
					reason = campaigns.ReasonSent
				}
				if got := st.Variants[v][ch][reason]; got != n {
					t.Errorf("variant %s %s/%s: run counted %d, dry run %d", v, ch, reason, got, n)
				}
			}
		}
	}
	if len(st.Variants) != 3 {
		t.Errorf("status variants %v, want A, B and holdout", st.Variants)
	}
	if sent := len(r.keys(channels.SMS)); int64(sent) != st.Counts[channels.SMS][campaigns.ReasonSent] ||
		int64(sent) != st.Variants["A"][channels.SMS][campaigns.ReasonSent]+st.Variants["B"][channels.SMS][campaigns.ReasonSent] {
		t.Errorf("sms sent %d, counted %v", sent, st.Variants)
	}
}

func keyOf(s *source, user string) uint64 {
	for _, m := range s.members {
		if m.ID == user {
			return m.Key
		}
	}
	return 0
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestVariantRenderErrorNamesTheVariant: a variant whose template compiles
// but cannot render is refused at create, and the dry run names the
// variant's field, not the campaign's.
func TestVariantRenderErrorNamesTheVariant(t *testing.T) {
	r := newRig(t, memstate.New(), newSource(200), campaigns.EngineConfig{})
	body := `{"id": "ab-bad-render", "segment": "all", "channels": ["apns"],
  "content": {"push": {"title": "Sale", "badge": "1"}},
  "variants": [{"id": "A", "weight": 1}, {"id": "B", "weight": 1, "content": {"push": {"title": "B", "badge": "{{ 'many' }}"}}}]}`
	rep, err := r.engine.DryRun(context.Background(), []byte(body), campaigns.DryRunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || len(rep.Errors) != 1 || rep.Errors[0].Field != "variants[1].content.push.badge" {
		t.Fatalf("dry run ok=%v errors %+v, want one on variants[1].content.push.badge", rep.OK, rep.Errors)
	}
	_, _, err = r.engine.Create(context.Background(), []byte(body))
	var fe *campaigns.FieldError
	if !errors.As(err, &fe) || fe.Field != "variants[1].content.push.badge" {
		t.Fatalf("create: %v, want a refusal naming variants[1].content.push.badge", err)
	}
}
