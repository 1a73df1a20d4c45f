package campaigns_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/memstate"
)

// dryBody is body with a quiet-hours window that covers "now" for members
// in Pacific/Kiritimati (UTC+14) only, and missing "skip" on push.
func dryBody(id string) string {
	loc, _ := time.LoadLocation("Pacific/Kiritimati")
	now := time.Now().In(loc)
	start, end := now.Add(-time.Hour).Format("15:04"), now.Add(time.Hour).Format("15:04")
	return fmt.Sprintf(`{
  "id": %q, "segment": "all", "channels": ["email", "sms", "apns"],
  "quiet_hours": {"start": %q, "end": %q},
  "content": {
    "missing": "skip",
    "email": {"from": "shop@example.test", "subject": "Hi {{ profile.first_name | default: 'you' }}", "text": "Hello"},
    "sms": {"body": "Sale! {{ profile.first_name | default: 'friend' }}"},
    "push": {"title": "Sale", "body": "Hi {{ profile.first_name }}"}
  }
}`, id, start, end)
}

func drySource(n int) *source {
	src := newSource(n)
	src.corrupt[src.members[5].Key] = true
	for i := range src.members {
		p := src.members[i].Profile.(*profile)
		if i%4 == 1 {
			p.zone = "Pacific/Kiritimati"
		}
		if i%6 == 0 {
			delete(p.attrs, "first_name") // push renders fail: missing variable, skipped
		}
	}
	return src
}

func TestDryRunCountsEqualTheRealRunAndSendNothing(t *testing.T) {
	src := drySource(1000)
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{})
	ctx := context.Background()
	id := "dry-equal"

	rep, err := r.engine.DryRun(ctx, []byte(dryBody(id)), campaigns.DryRunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || !rep.DryRun || rep.Members != 1000 {
		t.Fatalf("report ok=%v dry_run=%v members=%d errors=%v", rep.OK, rep.DryRun, rep.Members, rep.Errors)
	}
	for _, ch := range []string{channels.Email, channels.SMS, channels.APNs} {
		if n := len(r.keys(ch)); n != 0 {
			t.Fatalf("dry run sent %d %s messages", n, ch)
		}
	}
	if _, err := r.engine.Get(ctx, id); !errors.Is(err, campaigns.ErrNotFound) {
		t.Fatalf("dry run stored the campaign: err = %v", err)
	}
	// Every reason the rules produce is present, so the comparison is not vacuous.
	for _, want := range []struct{ ch, reason string }{
		{channels.Email, campaigns.ReasonNoConsent}, {channels.Email, campaigns.ReasonNoAddress},
		{channels.SMS, campaigns.ReasonQuietHours}, {channels.APNs, campaigns.ReasonRenderError},
		{channels.APNs, campaigns.ReasonCorruptRow}, {channels.APNs, campaigns.ReasonWouldSend},
	} {
		if rep.Audience[want.ch][want.reason] == 0 {
			t.Errorf("dry run counted no %s/%s: %v", want.ch, want.reason, rep.Audience)
		}
	}
	if len(rep.Errors) != 1 || rep.Errors[0].Reason != "missing_variable" || rep.Errors[0].Field != "content.push.body" {
		t.Errorf("errors = %+v, want one missing_variable on content.push.body", rep.Errors)
	}
	if len(rep.Previews) != campaigns.DefaultPreviewSample {
		t.Errorf("%d previews, want %d", len(rep.Previews), campaigns.DefaultPreviewSample)
	}

	st, _, err := r.engine.Create(ctx, []byte(dryBody(id)))
	if err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, r.engine, st.ID, campaigns.StatusCompleted)
	for _, ch := range []string{channels.Email, channels.SMS, channels.APNs} {
		want := map[string]int64{}
		for reason, n := range rep.Audience[ch] {
			if reason == campaigns.ReasonWouldSend {
				reason = campaigns.ReasonSent
			}
			want[reason] = n
		}
		if fmt.Sprint(want) != fmt.Sprint(st.Counts[ch]) {
			t.Errorf("%s: dry run %v, real run %v", ch, want, st.Counts[ch])
		}
		if int64(len(r.keys(ch))) != want[campaigns.ReasonSent] {
			t.Errorf("%s: %d sent, dry run said %d", ch, len(r.keys(ch)), want[campaigns.ReasonSent])
		}
	}
}

func TestDryRunPreviews(t *testing.T) {
	src := drySource(50)
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{})
	rep, err := r.engine.DryRun(context.Background(), []byte(dryBody("prev")), campaigns.DryRunOptions{
		Users: []string{"u-00002", "u-00006", "nobody"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Previews) != 3 {
		t.Fatalf("previews = %+v, want the 3 named users only", rep.Previews)
	}
	byCh := func(p campaigns.Preview) map[string]campaigns.ChannelPreview {
		out := map[string]campaigns.ChannelPreview{}
		for _, c := range p.Channels {
			out[c.Channel] = c
		}
		return out
	}
	u2 := byCh(rep.Previews[0])
	if !rep.Previews[0].Found || !rep.Previews[0].Member {
		t.Fatalf("u-00002 not found as a member: %+v", rep.Previews[0])
	}
	if fmt.Sprintf("%+v", u2[channels.SMS].Content) != "{Body:Sale! Ann2 From: Encoding:GSM-7 Segments:1}" {
		t.Errorf("sms preview = %+v", u2[channels.SMS].Content)
	}
	if u2[channels.APNs].Skip != campaigns.ReasonNoAddress {
		t.Errorf("apns of u-00002 = %+v, want skipped no_address", u2[channels.APNs])
	}
	u6 := byCh(rep.Previews[1])
	if u6[channels.APNs].Skip != campaigns.ReasonRenderError || !strings.Contains(u6[channels.APNs].Error, "missing_variable profile.first_name") {
		t.Errorf("apns of u-00006 = %+v, want render_error naming the variable", u6[channels.APNs])
	}
	if u6[channels.APNs].Content != nil || u6[channels.Email].Addresses != 1 {
		t.Errorf("u-00006: %+v", u6)
	}
	if rep.Previews[2].Found || rep.Previews[2].User != "nobody" {
		t.Errorf("unknown user preview = %+v", rep.Previews[2])
	}
}

func TestBrokenTemplatesAreRefusedAtCreateAndReportedByDryRun(t *testing.T) {
	src := newSource(30)
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{})
	ctx := context.Background()
	tests := []struct {
		name, push, field, msg string
	}{
		{"unterminated tag", `"title": "Hi {{ profile.first_name", "body": "b"`, "content.push.title", `unterminated "{{"`},
		{"renders to a bad badge for every member", `"title": "t", "badge": "{{ profile.first_name }}"`, "content.push.badge", "not an integer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := `{"id":"broken","segment":"all","channels":["apns"],"content":{"push":{` + tc.push + `}}}`
			rep, err := r.engine.DryRun(ctx, []byte(b), campaigns.DryRunOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK || len(rep.Errors) == 0 || rep.Errors[0].Field != tc.field || !strings.Contains(rep.Errors[0].Message, tc.msg) {
				t.Fatalf("dry run ok=%v errors=%+v, want %s: %s", rep.OK, rep.Errors, tc.field, tc.msg)
			}
			_, _, err = r.engine.Create(ctx, []byte(b))
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("create: err = %v, want it refused with %q", err, tc.msg)
			}
			if _, err := r.engine.Get(ctx, "broken"); !errors.Is(err, campaigns.ErrNotFound) {
				t.Fatalf("refused campaign was stored: %v", err)
			}
		})
	}
	if n := len(r.keys(channels.APNs)); n != 0 {
		t.Fatalf("%d messages sent", n)
	}
}

func TestTestSendReachesNamedUsersOnly(t *testing.T) {
	src := newSource(40)
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{})
	ctx := context.Background()
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	b := strings.Replace(body, `"segment": "all",`, `"segment": "all", "send_at": "`+later+`",`, 1)
	if _, _, err := r.engine.Create(ctx, []byte(b)); err != nil {
		t.Fatal(err)
	}
	res, err := r.engine.TestSend(ctx, "spring-sale", []string{"u-00003", "u-00011", "ghost"})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{u-00003 true map[apns:sent email:sent sms:sent]} {u-00011 true map[apns:no_address email:no_consent sms:sent]} {ghost false map[]}]`
	if got := fmt.Sprint(res); got != want {
		t.Fatalf("results\n got %s\nwant %s", got, want)
	}
	if n := len(r.keys(channels.SMS)) + len(r.keys(channels.Email)) + len(r.keys(channels.APNs)); n != 4 {
		t.Fatalf("%d messages sent, want 4", n)
	}
	for _, k := range r.keys(channels.SMS) {
		if !strings.HasPrefix(k, "test:spring-sale:") {
			t.Errorf("test message key %q shares the campaign's scope", k)
		}
	}
	st, err := r.engine.Get(ctx, "spring-sale")
	if err != nil || st.Status != campaigns.StatusScheduled || len(st.Counts) != 0 {
		t.Fatalf("campaign after a test send: %+v %v", st, err)
	}
	if _, err := r.engine.TestSend(ctx, "nope", []string{"u-00003"}); !errors.Is(err, campaigns.ErrNotFound) {
		t.Fatalf("unknown campaign: err = %v", err)
	}
}
