package campaigns

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/notifyd/notifyd/templates"
)

// FlowPrefix marks flow records in the CampaignStore; campaign ids may not use it.
const FlowPrefix = "flow:"

// Flow is a segment-triggered (or event-triggered) message: defined once,
// fired per user when a trigger arrives. It is the JSON body of POST /v1/flows.
type Flow struct {
	ID      string      `json:"id"`
	Name    string      `json:"name,omitempty"`
	Trigger FlowTrigger `json:"trigger"`
	// Channels and Content are as for a campaign; templates also see event.*.
	Channels []string       `json:"channels"`
	Content  templates.Spec `json:"content"`
	Vars     map[string]any `json:"vars,omitempty"`
	// ReEntry allows at most one message per user and channel per window
	// (default 24h; "0s" sends on every trigger, deduplicated only by the
	// trigger's idempotency key).
	ReEntry *Duration `json:"reentry,omitempty"`
	// Delay holds a trigger this long before sending. Delayed triggers wait
	// in the state layer's DelayQueue (Redis: they survive restarts and
	// crashes; without Redis they live in process memory).
	Delay Duration `json:"delay,omitempty"`
	// TTL is how long after processing a message may still be handed to a
	// provider (default 1h).
	TTL            Duration    `json:"ttl,omitempty"`
	QuietHours     *QuietHours `json:"quiet_hours,omitempty"`
	RequireConsent bool        `json:"require_consent,omitempty"`
	// FrequencyCap: as a campaign's; {"exempt": true} for transactional flows.
	FrequencyCap *FrequencyCap `json:"frequency_cap,omitempty"`
}

// FlowTrigger says what fires a flow: entering a segment, or a named event.
type FlowTrigger struct {
	Segment string `json:"segment,omitempty"`
	Event   string `json:"event,omitempty"`
}

// Defaults of a flow.
const (
	DefaultReEntry = 24 * time.Hour
	DefaultFlowTTL = time.Hour
)

// DecodeFlow reads and validates a flow; errors name the field.
func DecodeFlow(body []byte) (*Flow, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var f Flow
	if err := dec.Decode(&f); err != nil {
		return nil, jsonFieldError(err, body, reflect.TypeOf(f))
	}
	if dec.More() {
		return nil, &FieldError{Field: "body", Msg: "trailing data after the JSON object"}
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// Validate checks the flow without compiling its templates.
func (f *Flow) Validate() error {
	if !idPattern.MatchString(f.ID) {
		return &FieldError{Field: "id", Msg: "required: 1-128 characters of letters, digits and . _ : - (not starting with punctuation)"}
	}
	switch {
	case f.Trigger.Segment == "" && f.Trigger.Event == "":
		return &FieldError{Field: "trigger", Msg: "required: {\"segment\": NAME} or {\"event\": NAME}"}
	case f.Trigger.Segment != "" && f.Trigger.Event != "":
		return &FieldError{Field: "trigger", Msg: "give a segment or an event, not both"}
	}
	c := f.campaign()
	if err := c.Validate(); err != nil {
		return err
	}
	if f.QuietHours != nil && f.QuietHours.delay {
		// A flow sends per trigger, with no pass to come back in.
		return &FieldError{Field: "quiet_hours.mode", Msg: `"delay" is for campaigns; a flow takes "drop" (or a delay of its own)`}
	}
	if f.ReEntry != nil && *f.ReEntry < 0 {
		return &FieldError{Field: "reentry", Msg: "must not be negative"}
	}
	if f.Delay < 0 {
		return &FieldError{Field: "delay", Msg: "must not be negative"}
	}
	return nil
}

// ReEntryWindow is the flow's re-entry window (0: none).
func (f *Flow) ReEntryWindow() time.Duration {
	if f.ReEntry == nil {
		return DefaultReEntry
	}
	return time.Duration(*f.ReEntry)
}

// campaign is the view of the flow that the pipeline stages work on.
func (f *Flow) campaign() *Campaign {
	ttl := f.TTL
	if ttl == 0 {
		ttl = Duration(DefaultFlowTTL)
	}
	seg := f.Trigger.Segment
	if seg == "" {
		seg = "event:" + f.Trigger.Event
	}
	return &Campaign{
		ID: f.ID, Name: f.Name, Segment: seg, Channels: f.Channels, Content: f.Content, Vars: f.Vars,
		TTL: ttl, QuietHours: f.QuietHours, RequireConsent: f.RequireConsent, Priority: "high",
		FrequencyCap: f.FrequencyCap,
	}
}

// Trigger is one "user U just entered segment S / did event E" notice, as
// POST /v1/triggers and the intake stream take it. It names a flow, or a
// segment or event that fires every active flow listening for it.
type Trigger struct {
	Flow    string `json:"flow,omitempty"`
	Segment string `json:"segment,omitempty"`
	Event   string `json:"event,omitempty"`
	UserID  string `json:"user_id"`
	// Properties are event.* in templates.
	Properties map[string]any `json:"properties,omitempty"`
	// IdempotencyKey makes a re-delivered trigger a no-op (within 24h, or
	// the flow's re-entry window if longer).
	IdempotencyKey string     `json:"idempotency_key,omitempty"`
	OccurredAt     *time.Time `json:"occurred_at,omitempty"`
}

// Forwarded are triggers one daemon of a fleet hands to the daemon of their
// users' shard, with the time they arrived at the first: the owner keeps
// it, so the latency it reports is the user's, and a trigger without an
// idempotency key that the stream delivers twice gets the same dedup scope
// both times.
type Forwarded struct {
	Arrived  time.Time `json:"arrived"`
	Triggers []Trigger `json:"triggers"`
}

// DecodeForwarded reads a per-shard stream entry. Entries written before
// the arrival time was carried ({"triggers": [...]}) decode with a zero
// Arrived, which FireForwarded reads as "now".
func DecodeForwarded(body []byte) (Forwarded, error) {
	var f Forwarded
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Forwarded{}, jsonFieldError(err, body, reflect.TypeOf(f))
	}
	if len(f.Triggers) == 0 {
		return Forwarded{}, &FieldError{Field: "triggers", Msg: "is empty"}
	}
	for i := range f.Triggers {
		if f.Triggers[i].UserID == "" {
			return Forwarded{}, &FieldError{Field: fmt.Sprintf("triggers[%d].user_id", i), Msg: "is required"}
		}
	}
	return f, nil
}

// MaxTriggersPerRequest bounds one POST /v1/triggers.
const MaxTriggersPerRequest = 1000

// DecodeTriggers reads one trigger object or {"triggers": [...]}.
func DecodeTriggers(body []byte) ([]Trigger, error) {
	// One decode into the union of both shapes: the top-level "triggers"
	// key, and nothing else, makes a batch (a property or value that
	// merely contains the word does not), and unknown fields are still
	// refused by name.
	var env struct {
		Triggers *[]Trigger `json:"triggers"`
		Trigger
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, jsonFieldError(err, body, reflect.TypeOf(env))
	}
	if dec.More() {
		return nil, &FieldError{Field: "body", Msg: "trailing data after the JSON object"}
	}
	batch := env.Triggers != nil
	var list []Trigger
	if batch {
		if !reflect.ValueOf(env.Trigger).IsZero() {
			return nil, &FieldError{Field: "triggers", Msg: "give one trigger or {\"triggers\": [...]}, not both"}
		}
		list = *env.Triggers
		if len(list) == 0 {
			return nil, &FieldError{Field: "triggers", Msg: "empty"}
		}
	} else {
		list = []Trigger{env.Trigger}
	}
	if len(list) > MaxTriggersPerRequest {
		return nil, &FieldError{Field: "triggers", Msg: fmt.Sprintf("at most %d per request, got %d", MaxTriggersPerRequest, len(list))}
	}
	for i := range list {
		if err := list[i].validate(); err != nil {
			if batch {
				err.Field = fmt.Sprintf("triggers[%d].%s", i, err.Field)
			}
			return nil, err
		}
	}
	return list, nil
}

func (t *Trigger) validate() *FieldError {
	if strings.TrimSpace(t.UserID) == "" {
		return &FieldError{Field: "user_id", Msg: "required"}
	}
	n := 0
	for _, s := range []string{t.Flow, t.Segment, t.Event} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return &FieldError{Field: "flow", Msg: "give exactly one of flow, segment or event"}
	}
	if len(t.IdempotencyKey) > 200 {
		return &FieldError{Field: "idempotency_key", Msg: "at most 200 characters"}
	}
	return nil
}
