package templates

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeProfile stands in for a shard row.
type fakeProfile struct {
	id, locale, tz string
	attrs          map[string]any
}

func newProfile(id, locale, tz string, attrs map[string]any) *fakeProfile {
	return &fakeProfile{id: id, locale: locale, tz: tz, attrs: attrs}
}

func (p *fakeProfile) ID() string       { return p.id }
func (p *fakeProfile) Locale() string   { return p.locale }
func (p *fakeProfile) TimeZone() string { return p.tz }
func (p *fakeProfile) Attr(name string) (any, bool) {
	v, ok := p.attrs[name]
	return v, ok
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// fixedNow is the injected clock of every test Set.
func fixedNow() time.Time { return mustTime("2024-06-15T12:00:00Z") }

// hostile is a profile full of values that try to break their context.
func hostileProfile() *fakeProfile {
	return newProfile("u-1", "en-US", "America/New_York", map[string]any{
		"first_name": "ann",
		"name":       "Ann Lee",
		"city":       "  Paris ",
		"amount":     1234.5,
		"count":      int64(1234567),
		"vip":        true,
		"signup":     mustTime("2024-05-01T22:30:00Z"),
		"html":       `<b>"Tom" & 'Jerry'</b>`,
		"multiline":  "a\nb",
		"crlf":       "x\r\nBcc: evil@example.com",
		"quote":      `he said "hi" \ bye`,
		"json":       `{"a":1}","x":"`,
		"bad":        "ok\xff\xfeok",
		"emoji":      "🎉 party",
		"long":       strings.Repeat("0123456789", 1024),
		"script":     "</script><script>alert(1)</script>",
		"sep":        "\u2028\u2029",
		"zero":       int64(0),
		"empty":      "",
	})
}

// compileField compiles src as the only interesting field of a channel:
// kind "text" (push body, plain), "html" (email html), "json" (webhook
// body), "line" (email subject).
func compileOne(t testing.TB, kind, src string, missing Missing) (*Set, *field) {
	t.Helper()
	s, err := compileOneErr(kind, src, missing)
	if err != nil {
		t.Fatalf("compile %q: %v", src, err)
	}
	return s, pickField(s, kind)
}

func compileOneErr(kind, src string, missing Missing) (*Set, error) {
	var spec Spec
	switch kind {
	case "text":
		spec.Push = &PushSpec{Body: src}
	case "html":
		spec.Email = &EmailSpec{Subject: "s", HTML: src}
	case "line":
		spec.Email = &EmailSpec{Subject: src, Text: "t"}
	case "json":
		spec.Webhook = &WebhookSpec{URL: "https://example.com/hook", Body: Source(src), Headers: map[string]string{"Content-Type": "application/json"}}
	default:
		panic("unknown kind " + kind)
	}
	spec.Missing = missing
	return Compile(spec, Options{Now: fixedNow, Campaign: Campaign{ID: "c-1", Name: "Summer", Vars: map[string]any{"promo": "SUN20", "discount": int64(20)}}})
}

func pickField(s *Set, kind string) *field {
	switch kind {
	case "text":
		return s.def.push.body
	case "html":
		return s.def.email.html
	case "line":
		return s.def.email.subject
	case "json":
		return s.def.webhook.body
	}
	return nil
}

// renderBoth renders f on the fast path (when it has one) and on the liquid
// engine, and fails the test unless both agree.
func renderBoth(t testing.TB, s *Set, f *field, p Profile, event map[string]any) (string, error) {
	t.Helper()
	st := s.acquire(p, event)
	defer s.release(st)
	out, err := f.render(st)
	got := string(out)
	if f.segs == nil {
		return got, err
	}
	eng := *f
	eng.segs = nil
	out2, err2 := eng.render(st)
	if (err == nil) != (err2 == nil) {
		t.Fatalf("fast path err %v, engine err %v", err, err2)
	}
	if err != nil {
		var a, b *RenderError
		if !errors.As(err, &a) || !errors.As(err2, &b) || a.Reason != b.Reason || a.Variable != b.Variable {
			t.Fatalf("fast path err %v, engine err %v", err, err2)
		}
		return "", err
	}
	if got != string(out2) {
		t.Fatalf("fast path %q, engine %q", got, out2)
	}
	return got, nil
}
