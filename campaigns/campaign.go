package campaigns

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/templates"
)

// Campaign is "send this content to segment S over these channels", as a
// campaign scheduler posts it. It is the JSON body of POST /v1/campaigns.
type Campaign struct {
	// ID names the campaign; creating it twice with the same id and body is a no-op.
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Segment is the shard segment whose members receive the campaign.
	Segment string `json:"segment"`
	// Channels lists the channels to send on. Push content serves apns and fcm.
	Channels []string `json:"channels"`
	// Content holds the templates per channel, locale variants and the
	// missing-variable policy.
	Content templates.Spec `json:"content"`
	// Vars are campaign.vars.* in templates.
	Vars map[string]any `json:"vars,omitempty"`
	// Tracking opts the campaign's emails into engagement tracking
	// (docs/delivery-log.md); it takes effect on daemons with a tracking
	// endpoint (config tracking).
	Tracking *Tracking `json:"tracking,omitempty"`
	// SendAt schedules the campaign; empty sends now.
	SendAt *time.Time `json:"send_at,omitempty"`
	// Throttle caps the campaign's messages per second over all channels (0: no cap).
	Throttle float64 `json:"throttle_per_s,omitempty"`
	// TTL is how long after the campaign starts a message may still be handed
	// to a provider; later it is dropped with reason "expired" (default 24h).
	TTL Duration `json:"ttl,omitempty"`
	// QuietHours skips recipients whose local time falls inside the window,
	// or (mode "delay") sends to them when it ends.
	QuietHours *QuietHours `json:"quiet_hours,omitempty"`
	// LocalTime ("09:00") sends to each member when it is that time in the
	// member's zone (else LocalTimeZone, else UTC), rolling across the day
	// from the campaign's start (docs/policies.md).
	LocalTime     string `json:"local_time,omitempty"`
	LocalTimeZone string `json:"local_time_zone,omitempty"`
	// LocalDate ("2026-05-01") sends on that local date in every zone
	// (start the campaign a day ahead); empty: each member's date at the start.
	LocalDate string `json:"local_date,omitempty"`
	// LocalTimeMissed is for members whose local time had passed on their
	// date when the campaign started: "next_day" (default) or "send_now".
	LocalTimeMissed string `json:"local_time_missed,omitempty"`
	// RequireConsent skips recipients with no consent recorded for a channel
	// (an explicit "no" is always honoured).
	RequireConsent bool `json:"require_consent,omitempty"`
	// Priority "high" puts the campaign's messages in the transactional lane.
	Priority string `json:"priority,omitempty"`
	// FrequencyCap replaces the daemon's frequency caps for this campaign,
	// or exempts it (docs/policies.md).
	FrequencyCap *FrequencyCap `json:"frequency_cap,omitempty"`
	// Variants make the campaign an A/B test: members are split over them
	// by weight (variants.go, docs/policies.md).
	Variants []Variant `json:"variants,omitempty"`
	// Holdout is the percentage of members kept as a control group: they
	// get nothing and are counted with reason "holdout".
	Holdout float64 `json:"holdout,omitempty"`
	// Winner sends the best variant to the rest of the segment after a
	// test phase (winner.go).
	Winner *WinnerPhase `json:"winner,omitempty"`
	// WinnerOf marks the campaign notifyd creates to send a test's winner.
	WinnerOf *WinnerOf `json:"winner_of,omitempty"`

	ab *abPlan // compiled by CompileWithin; nil without an A/B test
	// Delivery chooses between sending on every channel (the default) and
	// channel fallback: one message per member, on the first usable step
	// (docs/policies.md).
	Delivery *Delivery `json:"delivery,omitempty"`

	lt *localTime // parsed LocalTime settings (nil: none)
}

// QuietHours is a daily window in the recipient's time zone ("21:00" to
// "08:00" wraps midnight). Recipients without a zone use Zone, else UTC.
type QuietHours struct {
	Start string `json:"start"`
	End   string `json:"end"`
	Zone  string `json:"zone,omitempty"`
	// Mode is "drop" (default: skip with reason quiet_hours) or "delay"
	// (send when the window ends, within the TTL; campaigns only).
	Mode string `json:"mode,omitempty"`

	start, end int // minutes after midnight
	zone       *time.Location
	delay      bool
}

// Duration is a time.Duration that reads and writes as "90s", "6h".
type Duration time.Duration

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts a duration string ("6h") or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("parse duration %q: want e.g. \"90s\" or \"6h\"", s)
		}
		*d = Duration(v)
		return nil
	}
	secs, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("parse duration %s: want a string like \"6h\" or seconds", b)
	}
	// A float beyond int64 nanoseconds converts to an arbitrary value
	// (1e20 came out negative); refuse it by name instead.
	if ns := secs * float64(time.Second); math.IsNaN(ns) || math.Abs(ns) >= math.MaxInt64 {
		return fmt.Errorf("parse duration %s: out of range (at most about 292 years)", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// DefaultTTL is a campaign's TTL when it gives none.
const DefaultTTL = 24 * time.Hour

// FieldError is a problem with one field of a request; Field is its JSON path.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// knownChannels maps a campaign channel to the content block it renders.
var knownChannels = map[string]string{
	channels.APNs: "push", channels.FCM: "push", channels.Email: "email",
	channels.SMS: "sms", channels.WebPush: "webpush", channels.Webhook: "webhook",
}

// DecodeCampaign reads a campaign from JSON, rejecting unknown fields, and
// validates it. Every error names the offending field.
func DecodeCampaign(body []byte) (*Campaign, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var c Campaign
	if err := dec.Decode(&c); err != nil {
		return nil, jsonFieldError(err, body, reflect.TypeOf(c))
	}
	if dec.More() {
		return nil, &FieldError{Field: "body", Msg: "trailing data after the JSON object"}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// jsonFieldError turns a decode error of body into t into a FieldError
// that names the field by its full path.
func jsonFieldError(err error, body []byte, t reflect.Type) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "body"
		}
		return &FieldError{Field: field, Msg: fmt.Sprintf("want %s, got %s", jsonKind(te.Type), te.Value)}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &FieldError{Field: "body", Msg: fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)}
	}
	if path, perr, ok := locateJSON(body, t); ok && path != "" {
		if perr == errUnknownField {
			return &FieldError{Field: path, Msg: "unknown field"}
		}
		if te, ok := errors.AsType[*time.ParseError](perr); ok {
			return &FieldError{Field: path, Msg: fmt.Sprintf("want an RFC 3339 time such as 2026-05-01T09:00:00Z, got %q", te.Value)}
		}
		return &FieldError{Field: path, Msg: strings.TrimPrefix(perr.Error(), "json: ")}
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return &FieldError{Field: strings.Trim(rest, `"`), Msg: "unknown field"}
	}
	return &FieldError{Field: "body", Msg: strings.TrimPrefix(msg, "json: ")}
}

// jsonKind names a Go type as the JSON a caller should send: the API's
// errors must not read "want campaigns.Campaign" or "map[string]interface {}".
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a value"
}

// Validate checks the campaign without compiling its templates (Compile does that).
func (c *Campaign) Validate() error {
	if !idPattern.MatchString(c.ID) {
		return &FieldError{Field: "id", Msg: "required: 1-128 characters of letters, digits and . _ : - (not starting with punctuation)"}
	}
	if strings.HasPrefix(c.ID, FlowPrefix) {
		return &FieldError{Field: "id", Msg: "the prefix " + FlowPrefix + " is reserved for flows"}
	}
	if strings.TrimSpace(c.Segment) == "" {
		return &FieldError{Field: "segment", Msg: "required"}
	}
	if len(c.Channels) == 0 {
		return &FieldError{Field: "channels", Msg: "required: at least one of apns, fcm, email, sms, webpush, webhook"}
	}
	seen := map[string]bool{}
	for i, ch := range c.Channels {
		block, ok := knownChannels[ch]
		if !ok {
			return &FieldError{Field: fmt.Sprintf("channels[%d]", i), Msg: fmt.Sprintf("unknown channel %q", ch)}
		}
		if seen[ch] {
			return &FieldError{Field: fmt.Sprintf("channels[%d]", i), Msg: fmt.Sprintf("channel %q listed twice", ch)}
		}
		seen[ch] = true
		if !hasBlock(c.Content.Content, block) {
			return &FieldError{Field: "content." + block, Msg: fmt.Sprintf("required by channel %q", ch)}
		}
	}
	if c.Throttle < 0 {
		return &FieldError{Field: "throttle_per_s", Msg: "must not be negative"}
	}
	if c.TTL < 0 {
		return &FieldError{Field: "ttl", Msg: "must not be negative"}
	}
	switch c.Priority {
	case "", "normal", "high":
	default:
		return &FieldError{Field: "priority", Msg: `want "normal" or "high"`}
	}
	if c.QuietHours != nil {
		if err := c.QuietHours.init(); err != nil {
			return err
		}
	}
	if err := c.Delivery.validate(c.Channels); err != nil {
		return err
	}
	if err := c.initLocalTime(); err != nil {
		return err
	}
	if err := c.validateVariants(); err != nil {
		return err
	}
	if err := c.Winner.validate(c); err != nil {
		return err
	}
	if err := c.WinnerOf.validate(c); err != nil {
		return err
	}
	return c.FrequencyCap.validate()
}

func hasBlock(ct templates.Content, block string) bool {
	switch block {
	case "push":
		return ct.Push != nil
	case "email":
		return ct.Email != nil
	case "sms":
		return ct.SMS != nil
	case "webpush":
		return ct.WebPush != nil
	case "webhook":
		return ct.Webhook != nil
	}
	return false
}

// TTLOrDefault is the campaign's TTL, DefaultTTL when unset.
func (c *Campaign) TTLOrDefault() time.Duration {
	if c.TTL == 0 {
		return DefaultTTL
	}
	return time.Duration(c.TTL)
}

// Compile compiles the campaign's templates; the error names channel, field,
// line and column. Done once, when the campaign is created.
func (c *Campaign) Compile(now func() time.Time) (*templates.Set, error) {
	return c.CompileWithin(now, templates.Limits{})
}

// CompileWithin is Compile under the daemon's template ceilings: the
// campaign's content.limits may lower them, never raise them (zero: the
// package defaults).
func (c *Campaign) CompileWithin(now func() time.Time, ceilings templates.Limits) (*templates.Set, error) {
	opts := templates.Options{
		Campaign: templates.Campaign{ID: c.ID, Name: c.Name, Vars: c.Vars},
		Now:      now,
		Ceilings: ceilings,
	}
	set, err := templates.Compile(c.Content, opts)
	if err != nil {
		return nil, fmt.Errorf("compile templates: %w", err)
	}
	if err := c.compileVariants(opts, set); err != nil {
		return nil, fmt.Errorf("compile variant templates: %w", err)
	}
	return set, nil
}

func (q *QuietHours) init() error {
	var err error
	if q.start, err = clockMinutes(q.Start); err != nil {
		return &FieldError{Field: "quiet_hours.start", Msg: err.Error()}
	}
	if q.end, err = clockMinutes(q.End); err != nil {
		return &FieldError{Field: "quiet_hours.end", Msg: err.Error()}
	}
	switch q.Mode {
	case "", QuietDrop:
		q.delay = false
	case QuietDelay:
		q.delay = true
	default:
		return &FieldError{Field: "quiet_hours.mode", Msg: `want "drop" or "delay"`}
	}
	q.zone = time.UTC
	if q.Zone != "" {
		if q.zone, err = time.LoadLocation(q.Zone); err != nil {
			return &FieldError{Field: "quiet_hours.zone", Msg: fmt.Sprintf("unknown time zone %q", q.Zone)}
		}
	}
	return nil
}

func clockMinutes(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("want HH:MM, got %q", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}

// Quiet reports whether t, seen in loc (nil: the window's own zone), falls
// inside the window.
func (q *QuietHours) Quiet(t time.Time, loc *time.Location) bool {
	if loc == nil {
		loc = q.zone
	}
	lt := t.In(loc)
	m := lt.Hour()*60 + lt.Minute()
	if q.start <= q.end {
		return m >= q.start && m < q.end
	}
	return m >= q.start || m < q.end
}
