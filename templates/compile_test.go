package templates

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/channels"
)

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name        string
		spec        Spec
		wantChannel string
		wantField   string
		wantLocale  string
		wantLine    int
		wantColumn  int
		wantMsg     string
	}{
		{
			name:        "unknown filter with position",
			spec:        Spec{Content: Content{Push: &PushSpec{Title: "ok", Body: "line one\n  Hi {{ profile.name | upcaze }}"}}},
			wantChannel: "push", wantField: "body", wantLine: 2, wantColumn: 6, wantMsg: `unknown filter "upcaze"`,
		},
		{
			name:        "unclosed tag",
			spec:        Spec{Content: Content{Email: &EmailSpec{Subject: "s", HTML: "<p>\n{% if profile.vip %}VIP"}}},
			wantChannel: "email", wantField: "html", wantLine: 2, wantColumn: 1, wantMsg: "if",
		},
		{
			name:        "unterminated output",
			spec:        Spec{Content: Content{Push: &PushSpec{Title: "Hi {{ profile.first_name", Body: "b"}}},
			wantChannel: "push", wantField: "title", wantLine: 1, wantColumn: 4, wantMsg: `unterminated "{{": no matching "}}"`,
		},
		{
			name:        "output closed by one brace",
			spec:        Spec{Content: Content{SMS: &SMSSpec{Body: "ok {{ a }}\nHi {{ profile.first_name }"}}},
			wantChannel: "sms", wantField: "body", wantLine: 2, wantColumn: 4, wantMsg: `unterminated "{{"`,
		},
		{
			name:        "unterminated tag",
			spec:        Spec{Content: Content{Email: &EmailSpec{Subject: "s", Text: "Hi {% if profile.vip"}}},
			wantChannel: "email", wantField: "text", wantLine: 1, wantColumn: 4, wantMsg: `unterminated "{%": no matching "%}"`,
		},
		{
			name:        "include is not allowed",
			spec:        Spec{Content: Content{SMS: &SMSSpec{Body: `x {% include "/etc/passwd" %}`}}},
			wantChannel: "sms", wantField: "body", wantLine: 1, wantColumn: 3, wantMsg: "not allowed",
		},
		{
			name:        "render is not allowed",
			spec:        Spec{Content: Content{SMS: &SMSSpec{Body: `{% render "x" %}`}}},
			wantChannel: "sms", wantField: "body", wantLine: 1, wantMsg: "not allowed",
		},
		{
			name:        "wrong argument count",
			spec:        Spec{Content: Content{WebPush: &WebPushSpec{Title: `{{ profile.a | truncate: 1, "x", 3 }}`}}},
			wantChannel: "webpush", wantField: "title", wantLine: 1, wantColumn: 1, wantMsg: "truncate takes 0 to 2 arguments",
		},
		{
			name:        "reserved name",
			spec:        Spec{Content: Content{Push: &PushSpec{Title: `{{ __notifyd }}`}}},
			wantChannel: "push", wantField: "title", wantLine: 1, wantMsg: "reserved",
		},
		{
			name:        "invalid JSON data",
			spec:        Spec{Content: Content{Push: &PushSpec{Title: "t", Data: `{"a": {{ profile.x }} {{ profile.y }}}`}}},
			wantChannel: "push", wantField: "data", wantMsg: "not valid JSON",
		},
		{
			name:        "data must be an object",
			spec:        Spec{Content: Content{Push: &PushSpec{Title: "t", Data: `["x"]`}}},
			wantChannel: "push", wantField: "data", wantMsg: "JSON object",
		},
		{
			name:        "error in a locale variant",
			spec:        Spec{Content: Content{Push: &PushSpec{Title: "t"}}, Locales: map[string]Content{"pt-BR": {Push: &PushSpec{Title: "{{ x | nope }}"}}}},
			wantChannel: "push", wantField: "title", wantLocale: "pt-BR", wantLine: 1, wantMsg: "unknown filter",
		},
		{
			name:       "variant adds a channel",
			spec:       Spec{Content: Content{Push: &PushSpec{Title: "t"}}, Locales: map[string]Content{"pt": {SMS: &SMSSpec{Body: "x"}}}},
			wantField:  "locales",
			wantLocale: "pt", wantMsg: "default has none",
		},
		{
			name:      "bad missing policy",
			spec:      Spec{Content: Content{Push: &PushSpec{Title: "t"}}, Missing: "drop"},
			wantField: "missing", wantMsg: `"drop"`,
		},
		{
			name:      "no content",
			spec:      Spec{},
			wantField: "content", wantMsg: "no channel content",
		},
		{
			name:        "source too large",
			spec:        Spec{Content: Content{Push: &PushSpec{Title: strings.Repeat("x", 101)}}, Limits: Limits{MaxSourceBytes: 100}},
			wantChannel: "push", wantField: "title", wantMsg: "over the 100 byte limit",
		},
		{
			name:        "bad header name",
			spec:        Spec{Content: Content{Email: &EmailSpec{Subject: "s", Text: "t", Headers: map[string]string{"Bad Name": "x"}}}},
			wantChannel: "email", wantField: "headers", wantMsg: "bad header name",
		},
		{
			name:        "tablerow is not supported",
			spec:        Spec{Content: Content{Email: &EmailSpec{Subject: "s", HTML: "{% tablerow i in (1..2) %}{% endtablerow %}"}}},
			wantChannel: "email", wantField: "html", wantLine: 1, wantMsg: "tablerow",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.spec, Options{})
			if err == nil {
				t.Fatal("compiled, want an error")
			}
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *CompileError", err)
			}
			if ce.Channel != tc.wantChannel || ce.Field != tc.wantField || ce.Locale != tc.wantLocale ||
				(tc.wantLine != 0 && ce.Line != tc.wantLine) || (tc.wantColumn != 0 && ce.Column != tc.wantColumn) ||
				!strings.Contains(ce.Error(), tc.wantMsg) {
				t.Fatalf("err = %q (%+v), want channel %q field %q locale %q line %d column %d containing %q",
					ce.Error(), *ce, tc.wantChannel, tc.wantField, tc.wantLocale, tc.wantLine, tc.wantColumn, tc.wantMsg)
			}
		})
	}
}

func TestCompileReportsEveryError(t *testing.T) {
	_, err := Compile(Spec{Content: Content{
		Push:  &PushSpec{Title: "{{ a | bad1 }}", Body: "{{ b | bad2 }}"},
		Email: &EmailSpec{Subject: "{% if %}", HTML: "ok"},
	}}, Options{})
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *CompileError
		if !errors.As(e, &ce) {
			t.Fatalf("%v is not a *CompileError", e)
		}
		fields = append(fields, ce.Channel+"."+ce.Field)
	}
	if strings.Join(fields, ",") != "push.title,push.body,email.subject" {
		t.Fatalf("errors for %v", fields)
	}
}

func TestSpecDecodesFromJSON(t *testing.T) {
	body := `{
		"missing": "skip",
		"limits": {"max_field_bytes": 2048},
		"push": {"title": "Hi {{ profile.first_name }}", "body": "b", "data": {"order": "{{ event.id }}", "n": 1}},
		"webhook": {"url": "https://example.com", "body": {"user": "{{ profile.id }}"}},
		"locales": {"pt-BR": {"push": {"title": "Olá {{ profile.first_name }}"}}}
	}`
	var spec Spec
	if err := json.Unmarshal([]byte(body), &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Missing != MissingSkip || spec.Limits.MaxFieldBytes != 2048 || spec.Push.Data == "" || spec.Webhook.Body == "" || spec.Locales["pt-BR"].Push.Title == "" {
		t.Fatalf("decoded %+v", spec)
	}
	s, err := Compile(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.def.webhook.jsonBody || s.def.push.data.json != true {
		t.Fatal("object-valued templates must be JSON fields")
	}
}

// TestIncludeNeverReadsFiles proves the engine has no file loader: an
// include of a file that exists is a compile error, however it is spelled.
func TestIncludeNeverReadsFiles(t *testing.T) {
	for _, src := range []string{
		`{% include "/etc/passwd" %}`,
		`{% include '/etc/hostname' %}`,
		`{%- include /etc/passwd -%}`,
		`{% if true %}{% include "/etc/passwd" %}{% endif %}`,
		`{% render "/etc/passwd" %}`,
	} {
		t.Run(src, func(t *testing.T) {
			_, err := compileOneErr("text", src, MissingBlank)
			if err == nil || !strings.Contains(err.Error(), "not allowed") {
				t.Fatalf("err = %v, want include refused", err)
			}
		})
	}
}

func TestConstantFieldsRenderOnce(t *testing.T) {
	s, f := compileOne(t, "text", "Flash sale: 20% off {not a tag}", MissingBlank)
	if !f.isConst || f.node != nil || f.segs != nil {
		t.Fatalf("field %+v is not a constant", f)
	}
	st := s.acquire(hostileProfile(), nil)
	defer s.release(st)
	a, err := f.str(st)
	if err != nil {
		t.Fatal(err)
	}
	if a != "Flash sale: 20% off {not a tag}" {
		t.Fatalf("got %q", a)
	}
	if allocs := testing.AllocsPerRun(100, func() { _, _ = f.str(st) }); allocs != 0 {
		t.Fatalf("constant field allocates %v per render", allocs)
	}
}

func TestFastPathCoverage(t *testing.T) {
	tests := []struct {
		src  string
		fast bool
	}{
		{`Hi {{ profile.first_name | default: "there" }}`, true},
		{`{{ event.order.total | money: "EUR" }} {{ campaign.vars.code }}`, true},
		{`{{ profile.signup | date: "%H:%M" }}`, true},
		{`{% if profile.vip %}x{% endif %}`, false},
		{`{{ profile.name.size }}`, false},
		{`{{ event.items[0] }}`, false},
		{`{{ profile.count | plus: 1 }}`, false},
		{`{{- profile.name -}}`, false},
		{`{{ "it\'s" }}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.src, func(t *testing.T) {
			_, f := compileOne(t, "text", tc.src, MissingBlank)
			if (f.segs != nil) != tc.fast {
				t.Fatalf("fast = %v, want %v", f.segs != nil, tc.fast)
			}
		})
	}
}

// A webhook without a url renders an empty URL: the webhook channel then
// sends to its configured default endpoint.
func TestWebhookURLDefaultsToTheChannels(t *testing.T) {
	set, err := Compile(Spec{Content: Content{Webhook: &WebhookSpec{Body: `{"u":"{{ profile.id }}"}`}}}, Options{})
	if err != nil {
		t.Fatalf("compile without url: %v", err)
	}
	var h channels.Hook
	if err := set.RenderHook(newProfile("u-1", "", "", nil), nil, &h); err != nil {
		t.Fatal(err)
	}
	if h.URL != "" || string(h.Body) != `{"u":"u-1"}` {
		t.Fatalf("rendered %q %s", h.URL, h.Body)
	}
	if _, err := Compile(Spec{Content: Content{Webhook: &WebhookSpec{URL: "ftp://x"}}}, Options{}); err == nil {
		t.Fatal("a non-http url compiled")
	}
}
