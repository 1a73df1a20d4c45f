package campaigns

import (
	"os"
	"testing"
	"time"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestLocalDue pins when a member is due for a local-time campaign: in
// whole-hour, half-hour and 45-minute zones, on both sides of the date
// line, across DST changes, with both policies for a time already passed.
func TestLocalDue(t *testing.T) {
	anchor := utc("2026-12-05T07:13:00Z")
	tests := []struct {
		name    string
		zone    string
		anchor  time.Time
		at      string // local_time
		sendNow bool
		date    string // local_date, if any
		want    time.Time
		late    bool
	}{
		{name: "UTC, later today", zone: "UTC", anchor: anchor, at: "09:00", want: utc("2026-12-05T09:00:00Z")},
		{name: "New York, later today", zone: "America/New_York", anchor: anchor, at: "09:00", want: utc("2026-12-05T14:00:00Z")},
		{name: "St John's half-hour zone, later today", zone: "America/St_Johns", anchor: anchor, at: "09:00", want: utc("2026-12-05T12:30:00Z")},
		{name: "Tokyo, passed: next day", zone: "Asia/Tokyo", anchor: anchor, at: "09:00", want: utc("2026-12-06T00:00:00Z"), late: true},
		{name: "Tokyo, passed: send now", zone: "Asia/Tokyo", anchor: anchor, at: "09:00", sendNow: true, want: anchor, late: true},
		{name: "Kolkata half-hour zone, passed: next day", zone: "Asia/Kolkata", anchor: anchor, at: "09:00", want: utc("2026-12-06T03:30:00Z"), late: true},
		{name: "Kathmandu 45-minute zone, passed: next day", zone: "Asia/Kathmandu", anchor: anchor, at: "09:00", want: utc("2026-12-06T03:15:00Z"), late: true},
		{name: "Adelaide half-hour zone in its summer time", zone: "Australia/Adelaide", anchor: anchor, at: "09:00", want: utc("2026-12-05T22:30:00Z"), late: true},
		{name: "Kiritimati UTC+14, passed: next day", zone: "Pacific/Kiritimati", anchor: anchor, at: "09:00", want: utc("2026-12-05T19:00:00Z"), late: true},
		{name: "Honolulu, still yesterday: its next 9:00", zone: "Pacific/Honolulu", anchor: anchor, at: "09:00", want: utc("2026-12-05T19:00:00Z"), late: true},
		{name: "Honolulu, still yesterday: send now", zone: "Pacific/Honolulu", anchor: anchor, at: "09:00", sendNow: true, want: anchor, late: true},
		{name: "exactly at the time: not late", zone: "UTC", anchor: utc("2026-12-05T09:00:00Z"), at: "09:00", want: utc("2026-12-05T09:00:00Z")},
		// DST: New York springs forward 2026-03-08 02:00 EST → 03:00 EDT (07:00Z).
		{name: "DST forward: next day takes the new offset", zone: "America/New_York", anchor: utc("2026-03-07T15:00:00Z"), at: "09:00", want: utc("2026-03-08T13:00:00Z"), late: true},
		{name: "DST forward: a skipped time is the jump", zone: "America/New_York", anchor: utc("2026-03-08T05:00:00Z"), at: "02:30", want: utc("2026-03-08T07:00:00Z")},
		// New York falls back 2026-11-01 02:00 EDT → 01:00 EST (06:00Z).
		{name: "DST back: a repeated time is its first occurrence", zone: "America/New_York", anchor: utc("2026-11-01T04:00:00Z"), at: "01:30", want: utc("2026-11-01T05:30:00Z")},
		{name: "DST back: next day takes the new offset", zone: "Europe/London", anchor: utc("2026-10-24T12:00:00Z"), at: "09:00", want: utc("2026-10-25T09:00:00Z"), late: true},
		// Lord Howe moves 30 minutes: 2026-10-04 02:00 (+10:30) → 02:30 (+11), at 15:30Z the day before.
		// local_date: every zone on one date, the campaign started the day before (at 09:00 in UTC+14).
		{name: "local date: UTC+14 at once", zone: "Pacific/Kiritimati", anchor: utc("2026-12-04T19:00:00Z"), at: "09:00", date: "2026-12-05", want: utc("2026-12-04T19:00:00Z")},
		{name: "local date: Honolulu a day later than its own date", zone: "Pacific/Honolulu", anchor: utc("2026-12-04T19:00:00Z"), at: "09:00", date: "2026-12-05", want: utc("2026-12-05T19:00:00Z")},
		{name: "local date: Kolkata", zone: "Asia/Kolkata", anchor: utc("2026-12-04T19:00:00Z"), at: "09:00", date: "2026-12-05", want: utc("2026-12-05T03:30:00Z")},
		{name: "local date passed: next day", zone: "Asia/Tokyo", anchor: utc("2026-12-05T07:13:00Z"), at: "09:00", date: "2026-12-05", want: utc("2026-12-06T00:00:00Z"), late: true},
		{name: "local date passed: send now", zone: "Asia/Tokyo", anchor: utc("2026-12-05T07:13:00Z"), at: "09:00", date: "2026-12-05", sendNow: true, want: utc("2026-12-05T07:13:00Z"), late: true},
		{name: "half-hour DST shift: a skipped time is the jump", zone: "Australia/Lord_Howe", anchor: utc("2026-10-03T14:00:00Z"), at: "02:15", want: utc("2026-10-03T15:30:00Z")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := clockMinutes(tc.at)
			if err != nil {
				t.Fatal(err)
			}
			lt := &localTime{minutes: m, sendNow: tc.sendNow}
			if tc.date != "" {
				if lt.date, err = time.Parse(time.DateOnly, tc.date); err != nil {
					t.Fatal(err)
				}
			}
			got, late := localDue(tc.anchor, mustZone(t, tc.zone), lt)
			if !got.Equal(tc.want) || late != tc.late {
				t.Fatalf("due %s late %v, want %s late %v", got.UTC(), late, tc.want, tc.late)
			}
		})
	}
}

// TestPlannerDue pins a member's pass: local time, quiet-hours delay to the
// window's end in the member's zone, expiry past the TTL, and the defaults
// for members without a zone.
func TestPlannerDue(t *testing.T) {
	anchor := utc("2026-12-05T07:13:40Z")
	night := func(mode string) *QuietHours {
		return &QuietHours{Start: "21:00", End: "08:00", Mode: mode, Zone: "Europe/Berlin"}
	}
	tests := []struct {
		name string
		c    Campaign
		zone string
		want memberDue
	}{
		{name: "delay: not quiet at the anchor", c: Campaign{QuietHours: night("delay")}, zone: "Asia/Tokyo",
			want: memberDue{at: utc("2026-12-05T07:13:40Z")}},
		{name: "delay: quiet after midnight, until 08:00 today", c: Campaign{QuietHours: night("delay")}, zone: "America/New_York",
			want: memberDue{at: utc("2026-12-05T13:00:00Z"), kind: WaitQuietHours}},
		{name: "delay: quiet before midnight, until 08:00 the next morning", c: Campaign{QuietHours: night("delay")}, zone: "America/Los_Angeles",
			want: memberDue{at: utc("2026-12-05T16:00:00Z"), kind: WaitQuietHours}},
		{name: "delay: the window ends past a 6h TTL", c: Campaign{QuietHours: night("delay"), TTL: Duration(6 * time.Hour)}, zone: "America/Los_Angeles",
			want: memberDue{at: utc("2026-12-05T07:13:40Z"), expired: true}},
		{name: "delay: no zone takes the window's zone", c: Campaign{QuietHours: night("delay")}, zone: "",
			want: memberDue{at: utc("2026-12-05T07:13:40Z")}},
		{name: "delay: an unknown zone takes the window's zone", c: Campaign{QuietHours: night("delay")}, zone: "Mars/Olympus",
			want: memberDue{at: utc("2026-12-05T07:13:40Z")}},
		{name: "drop mode does not delay", c: Campaign{QuietHours: night("drop")}, zone: "America/New_York",
			want: memberDue{at: utc("2026-12-05T07:13:40Z")}},
		{name: "local time", c: Campaign{LocalTime: "09:00"}, zone: "Asia/Kolkata",
			want: memberDue{at: utc("2026-12-06T03:30:00Z"), kind: WaitLocalTime}},
		{name: "local time: no zone takes local_time_zone", c: Campaign{LocalTime: "09:00", LocalTimeZone: "Europe/Paris"}, zone: "",
			want: memberDue{at: utc("2026-12-05T08:00:00Z"), kind: WaitLocalTime}},
		{name: "local time inside quiet hours: delayed to the window's end", c: Campaign{LocalTime: "07:00", QuietHours: night("delay")}, zone: "UTC",
			want: memberDue{at: utc("2026-12-06T08:00:00Z"), kind: WaitQuietHours}},
		{name: "local time: the TTL counts from the local time", c: Campaign{LocalTime: "07:00", QuietHours: night("delay"), TTL: Duration(30 * time.Minute)}, zone: "UTC",
			want: memberDue{at: utc("2026-12-06T07:00:00Z"), kind: WaitLocalTime, expired: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.ID, c.Segment, c.Channels = "x", "all", []string{"webhook"}
			c.Content.Webhook = nil
			if c.QuietHours != nil {
				if err := c.QuietHours.init(); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.initLocalTime(); err != nil {
				t.Fatal(err)
			}
			got := newPlanner(&c, anchor).due(tc.zone)
			want := tc.want
			want.at = want.at.Truncate(time.Second)
			if !got.at.Equal(want.at) || got.kind != want.kind || got.expired != want.expired {
				t.Fatalf("due %+v (at %s), want %+v (at %s)", got, got.at.UTC(), want, want.at)
			}
		})
	}
}

func TestLocalTimeValidation(t *testing.T) {
	tests := []struct {
		name  string
		c     Campaign
		field string
	}{
		{name: "bad time", c: Campaign{LocalTime: "9am"}, field: "local_time"},
		{name: "bad zone", c: Campaign{LocalTime: "09:00", LocalTimeZone: "Nowhere/Land"}, field: "local_time_zone"},
		{name: "bad missed policy", c: Campaign{LocalTime: "09:00", LocalTimeMissed: "later"}, field: "local_time_missed"},
		{name: "missed policy without a time", c: Campaign{LocalTimeMissed: "send_now"}, field: "local_time"},
		{name: "bad local date", c: Campaign{LocalTime: "09:00", LocalDate: "5 Dec"}, field: "local_date"},
		{name: "local date without a time", c: Campaign{LocalDate: "2026-12-05"}, field: "local_time"},
		{name: "bad quiet mode", c: Campaign{QuietHours: &QuietHours{Start: "21:00", End: "08:00", Mode: "snooze"}}, field: "quiet_hours.mode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			var err error
			if c.QuietHours != nil {
				err = c.QuietHours.init()
			} else {
				err = c.initLocalTime()
			}
			fe, ok := err.(*FieldError)
			if !ok || fe.Field != tc.field {
				t.Fatalf("error %v, want one on %s", err, tc.field)
			}
		})
	}
}

func TestFlowRefusesQuietHoursDelay(t *testing.T) {
	_, err := DecodeFlow([]byte(`{"id":"f","trigger":{"event":"e"},"channels":["sms"],"content":{"sms":{"body":"x"}},
		"quiet_hours":{"start":"21:00","end":"08:00","mode":"delay"}}`))
	if fe, ok := err.(*FieldError); !ok || fe.Field != "quiet_hours.mode" {
		t.Fatalf("error %v, want one on quiet_hours.mode", err)
	}
}

func TestLocalTimeExampleDecodes(t *testing.T) {
	b, err := os.ReadFile("../examples/campaign-local-time.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := DecodeCampaign(b)
	if err != nil {
		t.Fatal(err)
	}
	if !c.deferred() || c.lt == nil || c.lt.minutes != 9*60 || c.lt.sendNow || !c.QuietHours.delay {
		t.Fatalf("decoded %+v", c)
	}
}
