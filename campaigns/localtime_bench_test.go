package campaigns

import (
	"testing"
	"time"
)

type zoneProfile string

func (z zoneProfile) ID() string              { return "u" }
func (z zoneProfile) Locale() string          { return "" }
func (z zoneProfile) TimeZone() string        { return string(z) }
func (z zoneProfile) Attr(string) (any, bool) { return nil, false }

// BenchmarkPassFilter is what a pass adds per member to the walk of the
// segment: its zone's due time from the planner's cache, and the swap that
// keeps the pass's members (ns/op is per member).
func BenchmarkPassFilter(b *testing.B) {
	zones := []string{"America/New_York", "America/Los_Angeles", "America/Sao_Paulo", "Europe/Moscow", "Asia/Shanghai",
		"Asia/Tokyo", "Africa/Cairo", "Asia/Kolkata", "Europe/Berlin", "Europe/Paris"}
	c := &Campaign{LocalTime: "09:00"}
	if err := c.initLocalTime(); err != nil {
		b.Fatal(err)
	}
	pl := newPlanner(c, time.Date(2036, 12, 5, 7, 0, 0, 0, time.UTC))
	members := make([]Member, 1000)
	for i := range members {
		members[i].Profile = zoneProfile(zones[i%len(zones)])
	}
	keep := pl.keepPass(pl.due("Asia/Kolkata").at)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(members) {
		keepMembers(members, keep)
	}
}
