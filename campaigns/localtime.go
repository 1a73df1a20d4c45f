package campaigns

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Send at the recipient's local time, and quiet hours that delay rather
// than drop, are one mechanism: each member gets a due time, "not before T",
// from the campaign's anchor (send_at, else its creation) and the member's
// zone alone. Members with the same due time form a pass; the campaign runs
// its passes in due order, each one a full walk of the segment that keeps
// only its own members (docs/policies.md). Nothing per deferred member is
// held in memory or in Redis: the due time is recomputed from the zone.

// Missed-time policies of a local-time campaign: what to do with a member
// whose local time has already passed on their current date when the
// campaign starts.
const (
	// MissedNextDay sends at that time on the member's next date (default).
	MissedNextDay = "next_day"
	// MissedSendNow sends at once.
	MissedSendNow = "send_now"
)

// Quiet-hours modes.
const (
	// QuietDrop skips a member inside the window with reason quiet_hours (default).
	QuietDrop = "drop"
	// QuietDelay sends when the window ends in the member's zone, unless that
	// is past the message's TTL (then: expired).
	QuietDelay = "delay"
)

// Why a member waits, the keys of a campaign's waiting counts.
const (
	WaitLocalTime  = "local_time"
	WaitQuietHours = "quiet_hours"
)

// localTime is a campaign's parsed local_time settings.
type localTime struct {
	minutes int // after local midnight
	zone    *time.Location
	sendNow bool
	// date, when set (local_date), is the local date every member gets the
	// message on; zero: each member's local date at the campaign's start.
	date time.Time
}

// initLocalTime validates local_time, local_time_zone and local_time_missed.
func (c *Campaign) initLocalTime() error {
	c.lt = nil
	if c.LocalTime == "" {
		if c.LocalTimeZone != "" || c.LocalTimeMissed != "" || c.LocalDate != "" {
			return &FieldError{Field: "local_time", Msg: "required by local_date, local_time_zone and local_time_missed"}
		}
		return nil
	}
	m, err := clockMinutes(c.LocalTime)
	if err != nil {
		return &FieldError{Field: "local_time", Msg: err.Error()}
	}
	lt := &localTime{minutes: m, zone: time.UTC}
	if c.LocalTimeZone != "" {
		if lt.zone, err = time.LoadLocation(c.LocalTimeZone); err != nil {
			return &FieldError{Field: "local_time_zone", Msg: fmt.Sprintf("unknown time zone %q", c.LocalTimeZone)}
		}
	}
	if c.LocalDate != "" {
		if lt.date, err = time.Parse(time.DateOnly, c.LocalDate); err != nil {
			return &FieldError{Field: "local_date", Msg: fmt.Sprintf("want YYYY-MM-DD, got %q", c.LocalDate)}
		}
	}
	switch c.LocalTimeMissed {
	case "", MissedNextDay:
	case MissedSendNow:
		lt.sendNow = true
	default:
		return &FieldError{Field: "local_time_missed", Msg: `want "next_day" or "send_now"`}
	}
	c.lt = lt
	return nil
}

// deferred reports whether the campaign runs in passes by due time.
func (c *Campaign) deferred() bool {
	return c.lt != nil || (c.QuietHours != nil && c.QuietHours.delay)
}

// wallClock is t's wall clock in loc, as if it were UTC: comparable across
// zones and DST changes.
func wallClock(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
}

// wallTime is the first instant at which the clock in loc reads minutes
// (after midnight) on date y-mo-d or later: a time skipped by a DST jump
// forward is the instant of the jump; a time that happens twice (a jump
// back) is its first occurrence. time.Date leaves both cases unspecified.
func wallTime(y int, mo time.Month, d, minutes int, loc *time.Location) time.Time {
	want := time.Date(y, mo, d, minutes/60, minutes%60, 0, 0, time.UTC)
	t := time.Date(y, mo, d, minutes/60, minutes%60, 0, 0, loc)
	const reach = 3 * time.Hour // longer than any DST shift
	if wallClock(t, loc).Equal(want) && wallClock(t.Add(-reach), loc).Equal(want.Add(-reach)) {
		return t // no transition near: the common case
	}
	// Zone offsets change on whole minutes: the first minute whose wall
	// clock is at or after the wanted one.
	for s := t.Add(-reach).Truncate(time.Minute); s.Before(t.Add(reach)); s = s.Add(time.Minute) {
		if !wallClock(s, loc).Before(want) {
			return s
		}
	}
	return t
}

// localDue is when a member in loc is due for the local time lt, for a
// campaign anchored at anchor: that time on local_date, else on the
// member's date at the anchor; or if it has passed at the anchor, at once
// (send_now) or on the next date. late reports that the time had passed.
func localDue(anchor time.Time, loc *time.Location, lt *localTime) (due time.Time, late bool) {
	y, mo, day := anchor.In(loc).Date()
	if !lt.date.IsZero() {
		y, mo, day = lt.date.Date()
	}
	d := wallTime(y, mo, day, lt.minutes, loc)
	if !d.Before(anchor) {
		return d, false
	}
	if lt.sendNow {
		return anchor, true
	}
	return wallTime(y, mo, day+1, lt.minutes, loc), true
}

// windowEnd is when the quiet window that t falls in ends, in loc (t must be
// inside the window).
func (q *QuietHours) windowEnd(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	day := l.Day()
	if m := l.Hour()*60 + l.Minute(); q.start > q.end && m >= q.start {
		day++ // a window over midnight, entered before midnight
	}
	return wallTime(l.Year(), l.Month(), day, q.end, loc)
}

// memberDue is when the members of one zone are sent, and why they wait.
type memberDue struct {
	// at is the member's pass, to the second: not sent before it.
	at time.Time
	// kind says why the member waits past the anchor: "", local_time or
	// quiet_hours (delayed by the window).
	kind string
	// expired: quiet hours would delay the member past its TTL; the pass
	// at its undelayed due time counts it expired.
	expired bool
}

// planner computes members' due times for one campaign and anchor. A
// member's due time depends on its zone only, so it is computed once per
// zone name.
type planner struct {
	c      *Campaign
	anchor time.Time
	ttl    time.Duration

	mu    sync.RWMutex
	zones map[string]*memberDue
}

func newPlanner(c *Campaign, anchor time.Time) *planner {
	return &planner{c: c, anchor: anchor, ttl: c.TTLOrDefault(), zones: map[string]*memberDue{}}
}

// memberZone is the zone name a member's profile gives ("" if none).
func memberZone(m *Member) string {
	if m.Profile == nil {
		return ""
	}
	return m.Profile.TimeZone()
}

// due returns when members of the named zone are due.
func (p *planner) due(zone string) memberDue {
	p.mu.RLock()
	d := p.zones[zone]
	p.mu.RUnlock()
	if d != nil {
		return *d
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if d := p.zones[zone]; d != nil {
		return *d
	}
	return p.computeLocked(zone)
}

// computeLocked computes and caches the due time of a zone; mu is held.
func (p *planner) computeLocked(zone string) memberDue {
	d := p.compute(zone)
	// The name may point into the shard mapping: keep a copy.
	p.zones[strings.Clone(zone)] = &d
	return d
}

// compute is due without the cache. An unknown zone name counts as none,
// as in policyStage.
func (p *planner) compute(zone string) memberDue {
	var loc *time.Location
	if zone != "" {
		if l, err := time.LoadLocation(zone); err == nil {
			loc = l
		}
	}
	base, kind := p.anchor, ""
	deadline := p.anchor.Add(p.ttl)
	if lt := p.c.lt; lt != nil {
		z := loc
		if z == nil {
			z = lt.zone
		}
		base, _ = localDue(p.anchor, z, lt)
		kind = WaitLocalTime
		// The TTL of a local-time message counts from its local time.
		deadline = base.Add(p.ttl)
	}
	d := memberDue{at: base, kind: kind}
	if q := p.c.QuietHours; q != nil && q.delay {
		z := loc
		if z == nil {
			z = q.zone
		}
		if q.Quiet(base, z) {
			end := q.windowEnd(base, z)
			if end.After(deadline) {
				d.expired = true
			} else {
				d.at, d.kind = end, WaitQuietHours
			}
		}
	}
	d.at = d.at.Truncate(time.Second)
	return d
}

// passStart is what the TTL of the pass at `at` counts from: the campaign's
// anchor, or for a local-time campaign the pass itself (quiet-hours delays
// past a member's own TTL were already settled as expired).
func (p *planner) passStart(at time.Time) time.Time {
	if p.c.lt != nil {
		return at
	}
	return p.anchor
}

// plan is a campaign's passes on one shard: members per due time and kind.
type plan struct {
	passes []time.Time                // ascending
	counts map[int64]map[string]int64 // pass (unix s) → kind → members
}

// scan walks the segment once and counts members per zone, then per pass.
func (p *planner) scan(src MemberSource, segment string, batch int) (*plan, error) {
	it, err := src.Members(segment, 0, false)
	if err != nil {
		return nil, fmt.Errorf("open segment %q: %w", segment, err)
	}
	defer it.Close()
	zones := map[string]*int64{}
	buf := make([]Member, batch)
	for {
		n, err := it.Next(buf)
		if err != nil {
			return nil, fmt.Errorf("read segment %q: %w", segment, err)
		}
		if n == 0 {
			break
		}
		for i := range buf[:n] {
			z := memberZone(&buf[i])
			c := zones[z]
			if c == nil {
				c = new(int64)
				zones[strings.Clone(z)] = c
			}
			*c++
		}
	}
	pl := &plan{counts: map[int64]map[string]int64{}}
	for z, n := range zones {
		d := p.due(z)
		k := d.at.Unix()
		m := pl.counts[k]
		if m == nil {
			m = map[string]int64{}
			pl.counts[k] = m
			pl.passes = append(pl.passes, d.at)
		}
		m[d.kind] += *n
	}
	sort.Slice(pl.passes, func(i, j int) bool { return pl.passes[i].Before(pl.passes[j]) })
	return pl, nil
}

// keepPass is the member filter of the pass at `at`.
func (p *planner) keepPass(at time.Time) func(*Member) bool {
	return func(m *Member) bool { return p.due(memberZone(m)).at.Equal(at) }
}

// deferStage settles, as expired, the members quiet hours would delay past
// their TTL (a pass's other policies run after it).
func deferStage(_ context.Context, b *RecipientBatch) error {
	p := b.run.plan
	if p == nil {
		return nil
	}
	nch := b.nch()
	for m := range b.Members {
		if !p.due(memberZone(&b.Members[m])).expired {
			continue
		}
		for c := range nch {
			b.skip(m*nch+c, ReasonExpired)
		}
	}
	return nil
}

// keepMembers moves the members keep wants to the front of ms and returns
// how many there are. It swaps rather than copies: an iterator refills
// members in place, reusing their slices, and two members must never share one.
func keepMembers(ms []Member, keep func(*Member) bool) int {
	k := 0
	for i := range ms {
		if keep(&ms[i]) {
			if i != k {
				ms[k], ms[i] = ms[i], ms[k]
			}
			k++
		}
	}
	return k
}

// next fills dst with the next members the run sends to: every member, or
// the members of its pass (reading on until dst is full or the segment ends).
func (r *run) next(it MemberIter, dst []Member) (int, error) {
	if r.keep == nil {
		return it.Next(dst)
	}
	fill := 0
	for fill < len(dst) {
		n, err := it.Next(dst[fill:])
		if err != nil || n == 0 {
			return fill, err
		}
		fill += keepMembers(dst[fill:fill+n], r.keep)
	}
	return fill, nil
}

// planChannel holds a deferred campaign's plan in its progress counts:
// "<kind>:<pass unix seconds>" → members. It is not a channel and never
// shows in a status's counts.
const planChannel = "_plan"

// planCounts turns a plan into the counts stored with the campaign part.
func (pl *plan) planCounts() []Count {
	var out []Count
	for k, m := range pl.counts {
		for kind, n := range m {
			out = append(out, Count{Channel: planChannel, Reason: planReason(kind, k), N: n})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Reason < out[j].Reason })
	return out
}

func planReason(kind string, unix int64) string {
	if kind == "" {
		kind = "now"
	}
	return kind + ":" + strconv.FormatInt(unix, 10)
}

// Waiting is what a deferred campaign holds back: members (not messages)
// whose pass has not come yet, by why they wait, and the next pass.
type Waiting struct {
	LocalTime  int64      `json:"local_time"`
	QuietHours int64      `json:"quiet_hours"`
	NextDue    *time.Time `json:"next_due,omitempty"`
}

// add counts a stored plan count into w if its pass is after done (the
// last pass folded, -1 for none) and after now; it returns the pass.
func (w *Waiting) add(c Count, done int64, now time.Time) {
	kind, unix, ok := strings.Cut(c.Reason, ":")
	if !ok {
		return
	}
	k, err := strconv.ParseInt(unix, 10, 64)
	if err != nil || k <= done {
		return
	}
	at := time.Unix(k, 0).UTC()
	if !at.After(now) {
		return // due: being sent
	}
	switch kind {
	case WaitLocalTime:
		w.LocalTime += c.N
	case WaitQuietHours:
		w.QuietHours += c.N
	default:
		return
	}
	if w.NextDue == nil || at.Before(*w.NextDue) {
		w.NextDue = &at
	}
}
