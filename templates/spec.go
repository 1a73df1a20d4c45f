package templates

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Missing is a campaign's policy for a {{ variable }} that has no value.
type Missing string

const (
	// MissingBlank renders a missing variable as empty text (Liquid's default).
	MissingBlank Missing = "blank"
	// MissingSkip fails the recipient's render with ReasonMissingVariable, so
	// the pipeline skips them with render_error instead of sending "Hi ,".
	MissingSkip Missing = "skip"
)

// Limits bound what one render may produce and do. Zero fields take the
// defaults below.
type Limits struct {
	// MaxFieldBytes caps each rendered field except email HTML.
	MaxFieldBytes int `json:"max_field_bytes,omitempty"`
	// MaxHTMLBytes caps the rendered email HTML body.
	MaxHTMLBytes int `json:"max_html_bytes,omitempty"`
	// MaxSteps caps loop iterations per field render (all loops together).
	MaxSteps int `json:"max_steps,omitempty"`
	// MaxSourceBytes caps each field's template source.
	MaxSourceBytes int `json:"max_source_bytes,omitempty"`
}

// Default limits. 64 KiB is far above any provider's text limit (APNs
// payloads are 4 KiB, an SMS is at most a few KiB) yet small enough that a
// runaway template cannot hold much memory per worker.
const (
	DefaultMaxFieldBytes  = 64 << 10
	DefaultMaxHTMLBytes   = 1 << 20
	DefaultMaxSteps       = 10_000
	DefaultMaxSourceBytes = 256 << 10
)

// Hard limits bound the ceilings a daemon may configure. Steps are what a
// template can turn into memory: a filter may materialize at most the
// budget's worth of elements (about 40 bytes each), so 1,000,000 steps hold
// one render under ~40 MiB.
const (
	HardMaxFieldBytes  = 1 << 20
	HardMaxHTMLBytes   = 8 << 20
	HardMaxSteps       = 1_000_000
	HardMaxSourceBytes = 1 << 20
)

// HardLimits returns the hard limits as a Limits.
func HardLimits() Limits {
	return Limits{MaxFieldBytes: HardMaxFieldBytes, MaxHTMLBytes: HardMaxHTMLBytes, MaxSteps: HardMaxSteps, MaxSourceBytes: HardMaxSourceBytes}
}

// limitField is one Limits field with its JSON name, for checks that treat
// them alike.
type limitField struct {
	name string
	val  *int
}

func (l *Limits) fields() [4]limitField {
	return [4]limitField{
		{"max_field_bytes", &l.MaxFieldBytes},
		{"max_html_bytes", &l.MaxHTMLBytes},
		{"max_steps", &l.MaxSteps},
		{"max_source_bytes", &l.MaxSourceBytes},
	}
}

// CheckCeilings validates a daemon's configured ceilings: each is zero (the
// default) or positive and at most the hard limit. It names the field.
func (l Limits) CheckCeilings() error {
	hard := HardLimits()
	hf := hard.fields()
	var errs []error
	for i, f := range l.fields() {
		switch v, h := *f.val, *hf[i].val; {
		case v < 0:
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %d", f.name, v))
		case v > h:
			errs = append(errs, fmt.Errorf("%s: %d is above the hard limit %d", f.name, v, h))
		}
	}
	return errors.Join(errs...)
}

// within resolves a spec's limits against the daemon's ceilings: a zero
// field takes the ceiling, a field may lower it, never raise it (a caller
// who could raise the budget could spend the daemon's memory). Ceilings'
// zero fields are the defaults. Each problem is a *CompileError on
// "limits.<field>".
func (l Limits) within(ceilings Limits) (Limits, []error) {
	ceil := ceilings.withDefaults()
	cf := ceil.fields()
	var errs []error
	for i, f := range l.fields() {
		c := *cf[i].val
		switch v := *f.val; {
		case v < 0:
			errs = append(errs, &CompileError{Field: "limits." + f.name, Err: fmt.Errorf("must not be negative, got %d", v)})
		case v == 0:
			*f.val = c
		case v > c:
			errs = append(errs, &CompileError{Field: "limits." + f.name, Err: fmt.Errorf("%d is above the daemon's ceiling %d; a campaign may only lower its limits", v, c)})
		}
	}
	return l, errs
}

// CheckWithin reports every field of l that raises a ceiling (or is
// negative), each a *CompileError on "limits.<field>", joined. The admin API
// runs it before the engine so a daemon's configured ceilings hold whatever
// the engine compiles with.
func (l Limits) CheckWithin(ceilings Limits) error {
	_, errs := l.within(ceilings)
	return errors.Join(errs...)
}

func (l Limits) withDefaults() Limits {
	if l.MaxFieldBytes <= 0 {
		l.MaxFieldBytes = DefaultMaxFieldBytes
	}
	if l.MaxHTMLBytes <= 0 {
		l.MaxHTMLBytes = DefaultMaxHTMLBytes
	}
	if l.MaxSteps <= 0 {
		l.MaxSteps = DefaultMaxSteps
	}
	if l.MaxSourceBytes <= 0 {
		l.MaxSourceBytes = DefaultMaxSourceBytes
	}
	return l
}

// Spec is a campaign's or flow's templates as the admin API receives them
// (JSON). The channel blocks sit at the top level; Locales holds per-locale
// variants whose non-empty fields override the default content.
type Spec struct {
	Content
	// Locales maps a locale tag ("pt-BR", "pt", "en") to its variant. A
	// recipient's locale picks a variant by the chain pt-BR → pt → default.
	Locales map[string]Content `json:"locales,omitempty"`
	// Missing is "blank" (default) or "skip".
	Missing Missing `json:"missing,omitempty"`
	Limits  Limits  `json:"limits,omitempty"`
}

// Content is the per-channel templates of one locale. A nil block means the
// campaign does not use that channel.
type Content struct {
	Push    *PushSpec    `json:"push,omitempty"`
	Email   *EmailSpec   `json:"email,omitempty"`
	SMS     *SMSSpec     `json:"sms,omitempty"`
	WebPush *WebPushSpec `json:"webpush,omitempty"`
	Webhook *WebhookSpec `json:"webhook,omitempty"`
}

// PushSpec is APNs/FCM content. Badge renders to an integer (empty: no
// badge). Data is a JSON object template.
type PushSpec struct {
	Title      string `json:"title,omitempty"`
	Body       string `json:"body,omitempty"`
	Sound      string `json:"sound,omitempty"`
	Badge      string `json:"badge,omitempty"`
	DeepLink   string `json:"deep_link,omitempty"`
	Image      string `json:"image,omitempty"`
	Data       Source `json:"data,omitempty"`
	CollapseID string `json:"collapse_id,omitempty"`
	ThreadID   string `json:"thread_id,omitempty"`
}

// EmailSpec is email content. HTML is auto-escaped; every other field is
// plain text, and header-like fields cannot carry line breaks.
type EmailSpec struct {
	From                    string            `json:"from,omitempty"`
	ReplyTo                 string            `json:"reply_to,omitempty"`
	Subject                 string            `json:"subject,omitempty"`
	HTML                    string            `json:"html,omitempty"`
	Text                    string            `json:"text,omitempty"`
	Headers                 map[string]string `json:"headers,omitempty"`
	ListUnsubscribe         string            `json:"list_unsubscribe,omitempty"`
	ListUnsubscribeOneClick bool              `json:"list_unsubscribe_one_click,omitempty"`
}

// SMSSpec is SMS content.
type SMSSpec struct {
	Body string `json:"body,omitempty"`
	From string `json:"from,omitempty"`
}

// WebPushSpec is web push content.
type WebPushSpec struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
	Icon  string `json:"icon,omitempty"`
	URL   string `json:"url,omitempty"`
	Tag   string `json:"tag,omitempty"`
}

// WebhookSpec is a webhook request. Body is JSON (interpolations escaped as
// JSON, output validated) when given as a JSON object/array, when a
// Content-Type header mentions json, or when it starts with { or [ and no
// Content-Type is set; otherwise it is plain text.
type WebhookSpec struct {
	Method  string            `json:"method,omitempty"`
	URL     string            `json:"url,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    Source            `json:"body,omitempty"`
}

// Source is a template that may arrive as a JSON string or, for JSON fields,
// as a JSON object or array whose text is the template:
// "data": {"order": "{{ event.order_id }}"}.
type Source string

// UnmarshalJSON accepts a string or any JSON value.
func (s *Source) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return fmt.Errorf("decode template: %w", err)
		}
		*s = Source(str)
		return nil
	}
	if bytes.Equal(b, []byte("null")) {
		*s = ""
		return nil
	}
	// Compact: push payloads are size-limited (APNs: 4 KiB) and the
	// indentation of an API body is not content.
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return fmt.Errorf("decode template: %w", err)
	}
	*s = Source(buf.String())
	return nil
}

// Campaign is what templates see as campaign.*; it is fixed at compile time.
type Campaign struct {
	ID   string
	Name string
	Vars map[string]any
}

// Options are compile-time settings that do not come from the API body.
type Options struct {
	Campaign Campaign
	// Now is the clock behind "now" in the date filter; time.Now when nil.
	Now func() time.Time
	// Currency is money's currency when neither the template nor the
	// recipient's locale gives one; "USD" when empty.
	Currency string
	// Ceilings are the daemon's limits: a spec's Limits may lower them,
	// never raise them. Zero fields are the package defaults.
	Ceilings Limits
}
