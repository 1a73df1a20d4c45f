package templates

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/notifyd/notifyd/channels"
)

func TestRenderPush(t *testing.T) {
	s, err := Compile(Spec{Content: Content{Push: &PushSpec{
		Title:      `Hi {{ profile.first_name | capitalize }}`,
		Body:       `{{ profile.emoji }} {{ profile.multiline }}`,
		Sound:      "default",
		Badge:      `{{ profile.count | modulo: 100 }}`,
		DeepLink:   `app://orders/{{ event.order_id | url_encode }}`,
		Image:      "https://cdn.example.com/x.png",
		Data:       `{"order": "{{ event.order_id }}", "name": "{{ profile.json }}", "n": {{ profile.count }}, "who": {{ profile.quote }}, "tags": {{ event.tags | json }}}`,
		CollapseID: `order-{{ event.order_id }}`,
		ThreadID:   "orders",
	}}}, Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	var dst channels.Push
	ev := map[string]any{"order_id": "A 1/2", "tags": []any{"x", `"y"`}}
	if err := s.RenderPush(hostileProfile(), ev, &dst); err != nil {
		t.Fatal(err)
	}
	want := channels.Push{
		Title: "Hi Ann", Body: "🎉 party a\nb", Sound: "default", DeepLink: "app://orders/A+1%2F2",
		ImageURL: "https://cdn.example.com/x.png", CollapseID: "order-A 1/2", ThreadID: "orders",
	}
	if dst.Title != want.Title || dst.Body != want.Body || dst.Sound != want.Sound || dst.DeepLink != want.DeepLink ||
		dst.ImageURL != want.ImageURL || dst.CollapseID != want.CollapseID || dst.ThreadID != want.ThreadID {
		t.Fatalf("got %+v", dst)
	}
	if dst.Badge == nil || *dst.Badge != 67 {
		t.Fatalf("badge = %v, want 67", dst.Badge)
	}
	var data map[string]any
	if err := json.Unmarshal(dst.Data, &data); err != nil {
		t.Fatalf("data %s: %v", dst.Data, err)
	}
	if data["name"] != `{"a":1}","x":"` || data["who"] != `he said "hi" \ bye` || data["n"] != 1234567.0 || data["order"] != "A 1/2" {
		t.Fatalf("data = %v", data)
	}
	if tags, _ := data["tags"].([]any); len(tags) != 2 || tags[1] != `"y"` {
		t.Fatalf("tags = %v", data["tags"])
	}
}

func TestRenderPushBadge(t *testing.T) {
	tests := []struct {
		name, badge string
		want        *int
		wantReason  Reason
	}{
		{name: "empty means no badge", badge: ""},
		{name: "constant", badge: "3", want: ptr(3)},
		{name: "variable", badge: "{{ profile.zero }}", want: ptr(0)},
		{name: "missing renders empty", badge: "{{ profile.nope }}"},
		{name: "not a number", badge: "{{ profile.first_name }}", wantReason: ReasonInvalidOutput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Compile(Spec{Content: Content{Push: &PushSpec{Title: "t", Badge: tc.badge}}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			dst := channels.Push{Badge: ptr(99)}
			err = s.RenderPush(hostileProfile(), nil, &dst)
			if tc.wantReason != "" {
				requireReason(t, err, tc.wantReason)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (dst.Badge == nil) != (tc.want == nil) || (dst.Badge != nil && *dst.Badge != *tc.want) {
				t.Fatalf("badge = %v, want %v", dst.Badge, tc.want)
			}
		})
	}
}

func ptr(n int) *int { return &n }

func requireReason(t *testing.T, err error, want Reason) *RenderError {
	t.Helper()
	var re *RenderError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want a *RenderError with reason %s", err, want)
	}
	if re.Reason != want {
		t.Fatalf("reason = %s (%v), want %s", re.Reason, err, want)
	}
	return re
}

func TestRenderMail(t *testing.T) {
	s, err := Compile(Spec{Content: Content{Email: &EmailSpec{
		From:            `"Shop" <news@example.com>`,
		ReplyTo:         `{{ campaign.vars.reply }}`,
		Subject:         `Hi {{ profile.crlf }}`,
		HTML:            `<p title="{{ profile.quote }}">{{ profile.html }} {{ profile.html | escape }} {{ campaign.vars.banner | raw }} {{ profile.script }}</p>`,
		Text:            `Hi {{ profile.html }}`,
		Headers:         map[string]string{"X-User": `{{ profile.crlf }}`, "X-Campaign": "{{ campaign.id }}"},
		ListUnsubscribe: `https://example.com/u?id={{ profile.id | url_encode }}`,
		// One-click needs a List-Unsubscribe to apply to.
		ListUnsubscribeOneClick: true,
	}}}, Options{Campaign: Campaign{ID: "c-9", Vars: map[string]any{"reply": "help@example.com", "banner": "<img src=x>"}}})
	if err != nil {
		t.Fatal(err)
	}
	dst := channels.Mail{Headers: map[string]string{"Stale": "x"}}
	if err := s.RenderMail(hostileProfile(), nil, &dst); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, got, want string }{
		{"from", dst.From, `"Shop" <news@example.com>`},
		{"reply-to", dst.ReplyTo, "help@example.com"},
		{"subject has no line breaks", dst.Subject, "Hi x  Bcc: evil@example.com"},
		{"html escaped, escape not doubled, raw kept", dst.HTML, `<p title="he said &#34;hi&#34; \ bye">` +
			`&lt;b&gt;&#34;Tom&#34; &amp; &#39;Jerry&#39;&lt;/b&gt; &lt;b&gt;&#34;Tom&#34; &amp; &#39;Jerry&#39;&lt;/b&gt; <img src=x> ` +
			`&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;</p>`},
		{"text is not HTML", dst.Text, `Hi <b>"Tom" & 'Jerry'</b>`},
		{"header has no line breaks", dst.Headers["X-User"], "x  Bcc: evil@example.com"},
		{"header constant", dst.Headers["X-Campaign"], "c-9"},
		{"list-unsubscribe", dst.ListUnsubscribe, "https://example.com/u?id=u-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
	if _, ok := dst.Headers["Stale"]; ok || len(dst.Headers) != 2 {
		t.Fatalf("headers = %v, want the destination map reused and cleared", dst.Headers)
	}
	if !dst.ListUnsubscribeOneClick {
		t.Fatal("one-click unsubscribe lost")
	}
}

func TestRenderText(t *testing.T) {
	tests := []struct {
		name, body   string
		wantBody     string
		wantEncoding string
		wantSegments int
		wantReason   Reason
	}{
		{name: "gsm", body: "Hi {{ profile.first_name }}", wantBody: "Hi ann", wantEncoding: EncodingGSM7, wantSegments: 1},
		{name: "emoji makes ucs-2", body: "{{ profile.emoji }}", wantBody: "🎉 party", wantEncoding: EncodingUCS2, wantSegments: 1},
		{name: "long gsm", body: "{{ profile.long | truncate: 200, '' }}", wantBody: strings.Repeat("0123456789", 20), wantEncoding: EncodingGSM7, wantSegments: 2},
		{name: "invalid utf-8 replaced", body: "{{ profile.bad }}", wantBody: "ok\uFFFD\uFFFDok", wantEncoding: EncodingUCS2, wantSegments: 1},
		{name: "empty body is an error", body: "{{ profile.nope }}", wantReason: ReasonInvalidOutput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Compile(Spec{Content: Content{SMS: &SMSSpec{Body: tc.body, From: "+15550001"}}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var dst channels.Text
			err = s.RenderText(hostileProfile(), nil, &dst)
			if tc.wantReason != "" {
				requireReason(t, err, tc.wantReason)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if dst.Body != tc.wantBody || dst.Encoding != tc.wantEncoding || dst.Segments != tc.wantSegments || dst.From != "+15550001" {
				t.Fatalf("got %+v", dst)
			}
		})
	}
}

func TestRenderWebPush(t *testing.T) {
	s, err := Compile(Spec{Content: Content{WebPush: &WebPushSpec{
		Title: "{{ profile.html }}", Body: "b", Icon: "https://x/i.png", URL: "https://x/?u={{ profile.id }}", Tag: "t-{{ campaign.id }}",
	}}}, Options{Campaign: Campaign{ID: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	var dst channels.WebPushContent
	if err := s.RenderWebPush(hostileProfile(), nil, &dst); err != nil {
		t.Fatal(err)
	}
	want := channels.WebPushContent{Title: `<b>"Tom" & 'Jerry'</b>`, Body: "b", Icon: "https://x/i.png", URL: "https://x/?u=u-1", Tag: "t-c"}
	if dst != want {
		t.Fatalf("got %+v, want %+v", dst, want)
	}
}

func TestRenderHook(t *testing.T) {
	tests := []struct {
		name        string
		spec        WebhookSpec
		wantBody    string
		wantJSON    bool
		wantCT      string
		wantReason  Reason
		wantCompile string
	}{
		{
			name:     "json object body",
			spec:     WebhookSpec{URL: "https://example.com/h", Body: `{"user": "{{ profile.id }}", "q": "{{ profile.quote }}", "bad": "{{ profile.bad }}", "sep": "{{ profile.sep }}", "n": {{ profile.nope }}}`},
			wantJSON: true, wantCT: "application/json",
		},
		{
			name:     "text body",
			spec:     WebhookSpec{Method: "put", URL: "https://example.com/h", Headers: map[string]string{"Content-Type": "text/plain"}, Body: `hello {{ profile.quote }}`},
			wantBody: `hello he said "hi" \ bye`, wantCT: "text/plain",
		},
		{
			name:       "rendered url must be http",
			spec:       WebhookSpec{URL: "{{ profile.first_name }}", Body: "x"},
			wantReason: ReasonInvalidOutput,
		},
		{
			name:        "constant url checked at compile time",
			spec:        WebhookSpec{URL: "ftp://example.com", Body: "x"},
			wantCompile: "http or https",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			s, err := Compile(Spec{Content: Content{Webhook: &spec}}, Options{})
			if tc.wantCompile != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantCompile) {
					t.Fatalf("err = %v, want %q", err, tc.wantCompile)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var dst channels.Hook
			err = s.RenderHook(hostileProfile(), nil, &dst)
			if tc.wantReason != "" {
				requireReason(t, err, tc.wantReason)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantJSON && !json.Valid(dst.Body) {
				t.Fatalf("body is not JSON: %s", dst.Body)
			}
			// The webhook sender trusts the flag and skips its own check.
			if dst.BodyIsJSON != tc.wantJSON {
				t.Fatalf("BodyIsJSON = %v, want %v", dst.BodyIsJSON, tc.wantJSON)
			}
			if tc.wantBody != "" && string(dst.Body) != tc.wantBody {
				t.Fatalf("body = %q, want %q", dst.Body, tc.wantBody)
			}
			if !utf8.Valid(dst.Body) {
				t.Fatalf("body is not UTF-8: %q", dst.Body)
			}
			if dst.Headers["Content-Type"] != tc.wantCT {
				t.Fatalf("headers = %v", dst.Headers)
			}
			if tc.spec.Method == "" && dst.Method != "POST" || tc.spec.Method == "put" && dst.Method != "PUT" {
				t.Fatalf("method = %q", dst.Method)
			}
		})
	}
}

func TestMissingPolicy(t *testing.T) {
	tests := []struct {
		name, src    string
		missing      Missing
		want         string
		wantVariable string
	}{
		{name: "blank renders empty", src: "Hi {{ profile.nick }}!", missing: MissingBlank, want: "Hi !"},
		{name: "blank is the default", src: "Hi {{ profile.nick }}!", want: "Hi !"},
		{name: "skip names the variable", src: "Hi {{ profile.nick }}!", missing: MissingSkip, wantVariable: "profile.nick"},
		{name: "skip with a filter", src: "Hi {{ profile.nick | upcase }}!", missing: MissingSkip, wantVariable: "profile.nick"},
		{name: "skip event variable", src: "{{ event.order.id }}", missing: MissingSkip, wantVariable: "event.order.id"},
		{name: "skip but default rescues", src: `Hi {{ profile.nick | default: "you" }}!`, missing: MissingSkip, want: "Hi you!"},
		{name: "skip keeps present values", src: "Hi {{ profile.first_name }}!", missing: MissingSkip, want: "Hi ann!"},
		{name: "skip empty string is a value", src: "[{{ profile.empty }}]", missing: MissingSkip, want: "[]"},
		{name: "skip ignores conditions", src: "{% if profile.nick %}x{% endif %}y", missing: MissingSkip, want: "y"},
		{name: "skip inside a tag template", src: "{% if true %}{{ profile.nick }}{% endif %}", missing: MissingSkip, wantVariable: "profile.nick"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, f := compileOne(t, "text", tc.src, tc.missing)
			got, err := renderBoth(t, s, f, hostileProfile(), map[string]any{})
			if tc.wantVariable != "" {
				re := requireReason(t, err, ReasonMissingVariable)
				if re.Variable != tc.wantVariable || re.Channel != ChannelPush || re.Field != "body" {
					t.Fatalf("err = %+v", re)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHostileValuesKeepTheirContext(t *testing.T) {
	attrs := []string{"html", "quote", "json", "bad", "emoji", "long", "script", "sep", "crlf", "multiline"}
	for _, kind := range []string{"text", "html", "json", "line"} {
		for _, attr := range attrs {
			t.Run(kind+"/"+attr, func(t *testing.T) {
				src := "{{ profile." + attr + " }}"
				if kind == "json" {
					src = `{"v": "{{ profile.` + attr + ` }}", "w": {{ profile.` + attr + ` }}}`
				}
				s, f := compileOne(t, kind, src, MissingBlank)
				got, err := renderBoth(t, s, f, hostileProfile(), nil)
				if err != nil {
					t.Fatal(err)
				}
				if !utf8.ValidString(got) {
					t.Fatalf("not UTF-8: %q", got)
				}
				switch kind {
				case "json":
					var v map[string]any
					if err := json.Unmarshal([]byte(got), &v); err != nil {
						t.Fatalf("invalid JSON %q: %v", got, err)
					}
					want := string(appendValidUTF8(nil, []byte(hostileProfile().attrs[attr].(string))))
					if v["v"] != want || v["w"] != want {
						t.Fatalf("round trip: got %q/%q, want %q", v["v"], v["w"], want)
					}
				case "html":
					if strings.ContainsAny(got, `<>"'`) {
						t.Fatalf("unescaped HTML: %q", got)
					}
				case "line":
					if strings.ContainsAny(got, "\r\n") {
						t.Fatalf("line break in a header field: %q", got)
					}
				}
			})
		}
	}
}
