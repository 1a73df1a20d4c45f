package templates

import (
	"strings"
	"testing"
)

func TestFilters(t *testing.T) {
	event := map[string]any{"items": []any{"a", "b", nil, "c"}, "order": map[string]any{"total": 99.9, "id": "A-1"}}
	tests := []struct {
		name, src, want string
		locale, tz      string // override the hostile profile's
	}{
		{name: "default missing", src: `{{ profile.nick | default: "friend" }}`, want: "friend"},
		{name: "default present", src: `{{ profile.first_name | default: "friend" }}`, want: "ann"},
		{name: "default empty string", src: `{{ profile.empty | default: "x" }}`, want: "x"},
		{name: "default false", src: `{{ false | default: "x" }}`, want: "x"},
		{name: "default zero is a value", src: `{{ profile.zero | default: 5 }}`, want: "0"},
		{name: "default from another variable", src: `{{ profile.nick | default: profile.first_name }}`, want: "ann"},
		{name: "upcase", src: `{{ profile.first_name | upcase }}`, want: "ANN"},
		{name: "downcase", src: `{{ "ÀB" | downcase }}`, want: "àb"},
		{name: "capitalize", src: `{{ "hELLO world" | capitalize }}`, want: "Hello world"},
		{name: "strip", src: `[{{ profile.city | strip }}]`, want: "[Paris]"},
		{name: "lstrip", src: `[{{ profile.city | lstrip }}]`, want: "[Paris ]"},
		{name: "rstrip", src: `[{{ profile.city | rstrip }}]`, want: "[  Paris]"},
		{name: "strip_newlines", src: `{{ profile.multiline | strip_newlines }}`, want: "ab"},
		{name: "newline_to_br", src: `{{ profile.multiline | newline_to_br }}`, want: "a<br />\nb"},
		{name: "append", src: `{{ profile.first_name | append: "!" }}`, want: "ann!"},
		{name: "prepend", src: `{{ profile.first_name | prepend: "Dear " }}`, want: "Dear ann"},
		{name: "remove", src: `{{ "a-b-c" | remove: "-" }}`, want: "abc"},
		{name: "remove_first", src: `{{ "a-b-c" | remove_first: "-" }}`, want: "ab-c"},
		{name: "replace", src: `{{ "a-b-c" | replace: "-", "+" }}`, want: "a+b+c"},
		{name: "replace_first", src: `{{ "a-b-c" | replace_first: "-", "+" }}`, want: "a+b-c"},
		{name: "replace empty old", src: `{{ "abc" | replace: "", "x" }}`, want: "abc"},
		{name: "truncate", src: `{{ "Hello world" | truncate: 8 }}`, want: "Hello..."},
		{name: "truncate short", src: `{{ "Hello" | truncate: 10 }}`, want: "Hello"},
		{name: "truncate runes", src: `{{ "🎉🎉🎉🎉" | truncate: 3, "" }}`, want: "🎉🎉🎉"},
		{name: "truncate below ellipsis", src: `{{ "abcdef" | truncate: 1 }}`, want: "..."},
		{name: "truncate negative", src: `{{ "abcdef" | truncate: -4 }}`, want: "..."},
		{name: "truncate default 50", src: `{{ profile.long | truncate }}`, want: strings.Repeat("0123456789", 5)[:47] + "..."},
		{name: "truncatewords", src: `{{ "one two three four" | truncatewords: 2 }}`, want: "one two..."},
		{name: "slice", src: `{{ "hello" | slice: 1, 3 }}`, want: "ell"},
		{name: "slice negative", src: `{{ "hello" | slice: -2, 2 }}`, want: "lo"},
		{name: "slice out of range", src: `{{ "hello" | slice: 10 }}`, want: ""},
		{name: "join", src: `{{ event.items | join: ", " }}`, want: "a, b, c"},
		{name: "url_encode", src: `{{ "a b&c=d/é" | url_encode }}`, want: "a+b%26c%3Dd%2F%C3%A9"},
		{name: "url_decode", src: `{{ "a+b%26c" | url_decode }}`, want: "a b&c"},
		{name: "escape", src: `{{ profile.html | escape }}`, want: "&lt;b&gt;&#34;Tom&#34; &amp; &#39;Jerry&#39;&lt;/b&gt;"},
		{name: "escape_once", src: `{{ "&amp; <" | escape_once }}`, want: "&amp; &lt;"},
		{name: "json string", src: `{{ profile.quote | json }}`, want: `"he said \"hi\" \\ bye"`},
		{name: "json array", src: `{{ event.items | json }}`, want: `["a","b",null,"c"]`},
		{name: "json number", src: `{{ profile.count | json }}`, want: `1234567`},
		{name: "date in recipient zone", src: `{{ profile.signup | date: "%Y-%m-%d %H:%M %Z" }}`, want: "2024-05-01 18:30 EDT"},
		{name: "date other zone", src: `{{ profile.signup | date: "%d/%m %H:%M" }}`, tz: "Asia/Tokyo", want: "02/05 07:30"},
		{name: "date now uses the injected clock", src: `{{ "now" | date: "%Y-%m-%d %H:%M" }}`, want: "2024-06-15 08:00"},
		{name: "date zone-less string is local", src: `{{ "2024-05-01" | date: "%d %b %Y %H:%M" }}`, want: "01 May 2024 00:00"},
		{name: "date RFC 3339 string", src: `{{ "2024-05-01T12:00:00Z" | date: "%H:%M" }}`, want: "08:00"},
		{name: "date unix seconds", src: `{{ 86400 | date: "%Y-%m-%d" }}`, tz: "UTC", want: "1970-01-02"},
		{name: "date default format", src: `{{ profile.signup | date }}`, want: "Wed, May 01, 24"},
		{name: "date missing stays empty", src: `{{ profile.nodate | date: "%Y" }}`, want: ""},
		{name: "date unparsable passes through", src: `{{ "soon" | date: "%Y" }}`, want: "soon"},
		{name: "date unknown zone is UTC", src: `{{ profile.signup | date: "%H:%M" }}`, tz: "Mars/Olympus", want: "22:30"},
		{name: "money default currency", src: `{{ profile.amount | money }}`, want: "$1,234.50"},
		{name: "money euro german", src: `{{ profile.amount | money: "EUR", "de-DE" }}`, want: "1.234,50\u00a0€"},
		{name: "money recipient locale", src: `{{ profile.amount | money: "EUR" }}`, locale: "fr-FR", want: "1\u202f234,50\u00a0€"},
		{name: "money real", src: `{{ profile.amount | money: "BRL" }}`, locale: "pt_BR", want: "R$\u00a01.234,50"},
		{name: "money yen has no decimals", src: `{{ 1234.6 | money: "JPY", "ja-JP" }}`, want: "¥1,235"},
		{name: "money negative", src: `{{ -5 | money }}`, want: "-$5.00"},
		{name: "money string amount", src: `{{ "19.9" | money: "GBP", "en-GB" }}`, want: "£19.90"},
		{name: "money unknown currency", src: `{{ 3 | money: "XYZ" }}`, want: "XYZ3.00"},
		{name: "money missing stays empty", src: `{{ profile.nope | money }}`, want: ""},
		{name: "number integer", src: `{{ profile.count | number }}`, want: "1,234,567"},
		{name: "number german", src: `{{ profile.count | number: 0, "de-DE" }}`, want: "1.234.567"},
		{name: "number decimals", src: `{{ 3.14159 | number: 2 }}`, want: "3.14"},
		{name: "number float default", src: `{{ profile.amount | number }}`, want: "1,234.50"},
		{name: "chain", src: `{{ profile.nick | default: profile.name | upcase | truncate: 5, "…" }}`, want: "ANN …"},
		{name: "campaign bindings", src: `{{ campaign.name }} {{ campaign.id }} {{ campaign.vars.promo }} {{ campaign.vars.discount }}%`, want: "Summer c-1 SUN20 20%"},
		{name: "event nested", src: `{{ event.order.id }}: {{ event.order.total | money }}`, want: "A-1: $99.90"},
		{name: "profile identity", src: `{{ profile.id }} {{ profile.locale }} {{ profile.time_zone }}`, want: "u-1 en-US America/New_York"},
		{name: "engine standard filter", src: `{{ profile.count | plus: 1 }}`, want: "1234568"},
		{name: "size on engine", src: `{{ profile.first_name.size }}`, want: "3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := hostileProfile()
			if tc.locale != "" {
				p.locale = tc.locale
			}
			if tc.tz != "" {
				p.tz = tc.tz
			}
			s, f := compileOne(t, "text", tc.src, MissingBlank)
			got, err := renderBoth(t, s, f, p, event)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
