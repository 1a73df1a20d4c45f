package templates

import (
	"strings"
	"testing"
	"time"
)

func TestWorkAndOutputBounds(t *testing.T) {
	tests := []struct {
		name       string
		src        string
		limits     Limits
		wantReason Reason
		want       string
	}{
		{name: "runaway loop", src: `{% for i in (1..1000000000) %}{% endfor %}`, wantReason: ReasonTooMuchWork},
		{name: "nested loops", src: `{% for i in (1..1000) %}{% for j in (1..1000) %}{% for k in (1..1000) %}{% endfor %}{% endfor %}{% endfor %}`, wantReason: ReasonTooMuchWork},
		{name: "reversed huge range", src: `{% for i in (1..2000000000) reversed limit: 2 %}{{ i }},{% endfor %}`, want: "2000000000,1999999999,"},
		{name: "loop output over the cap", src: `{% for i in (1..5000) %}{{ profile.long }}{% endfor %}`, wantReason: ReasonOutputTooLarge},
		{name: "fast path over the cap", src: `{{ profile.long }}{{ profile.long }}`, limits: Limits{MaxFieldBytes: 15000}, wantReason: ReasonOutputTooLarge},
		{name: "assign doubling", src: `{% assign s = profile.long %}{% for i in (1..30) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}`, wantReason: ReasonOutputTooLarge},
		{name: "capture over the cap", src: `{% capture s %}{% for i in (1..100) %}{{ profile.long }}{% endfor %}{% endcapture %}x`, wantReason: ReasonOutputTooLarge},
		{name: "replace blow-up", src: `{{ profile.long | replace: "0", profile.long }}`, wantReason: ReasonOutputTooLarge},
		{name: "join blow-up", src: `{{ profile.long | slice: 0, 3000 | split: "" | join: profile.long }}`, wantReason: ReasonOutputTooLarge},
		{name: "custom step budget", src: `{% for i in (1..11) %}x{% endfor %}`, limits: Limits{MaxSteps: 10}, wantReason: ReasonTooMuchWork},
		{name: "within the step budget", src: `{% for i in (1..10) %}x{% endfor %}`, limits: Limits{MaxSteps: 10}, want: "xxxxxxxxxx"},
		{name: "engine panic becomes a filter error", src: `{{ event.mixed | uniq | size }}`, wantReason: ReasonFilterError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := compile(Spec{Content: Content{Push: &PushSpec{Body: tc.src}}, Limits: tc.limits}, Options{}, false)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			st := s.acquire(hostileProfile(), map[string]any{"mixed": []any{nil, "a"}})
			defer s.release(st)
			out, err := s.def.push.body.render(st)
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("render took %v", d)
			}
			if tc.wantReason != "" {
				requireReason(t, err, tc.wantReason)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Fatalf("got %q, want %q", out, tc.want)
			}
		})
	}
}

func TestEngineTags(t *testing.T) {
	ev := map[string]any{"items": []any{map[string]any{"name": "a", "price": 1.5}, map[string]any{"name": "b", "price": 2.0}, map[string]any{"name": "c", "price": 3.0}}, "kind": "refund", "props": map[string]any{"y": 2, "x": 1}}
	tests := []struct{ name, src, want string }{
		{name: "if elsif else", src: `{% if profile.count > 2000000 %}big{% elsif profile.vip %}vip{% else %}no{% endif %}`, want: "vip"},
		{name: "unless", src: `{% unless profile.vip %}x{% else %}y{% endunless %}`, want: "y"},
		{name: "case when", src: `{% case event.kind %}{% when "order" %}O{% when "refund", "void" %}R{% else %}?{% endcase %}`, want: "R"},
		{name: "for with forloop", src: `{% for it in event.items %}{{ forloop.index }}:{{ it.name }}{% unless forloop.last %},{% endunless %}{% endfor %}`, want: "1:a,2:b,3:c"},
		{name: "for offset limit", src: `{% for it in event.items offset: 1 limit: 1 %}{{ it.name }}{% endfor %}`, want: "b"},
		{name: "for reversed", src: `{% for it in event.items reversed %}{{ it.name }}{% endfor %}`, want: "cba"},
		{name: "for else", src: `{% for it in event.none %}x{% else %}empty{% endfor %}`, want: "empty"},
		{name: "break and continue", src: `{% for i in (1..10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}`, want: "13"},
		{name: "cycle", src: `{% for i in (1..4) %}{% cycle "a", "b" %}{% endfor %}`, want: "abab"},
		{name: "map iterates sorted pairs", src: `{% for kv in event.props %}{{ kv[0] }}={{ kv[1] }};{% endfor %}`, want: "x=1;y=2;"},
		{name: "assign and capture", src: `{% assign n = profile.first_name | upcase %}{% capture greet %}Hi {{ n }}{% endcapture %}{{ greet }}!`, want: "Hi ANN!"},
		{name: "filters inside tags use the recipient", src: `{% assign d = profile.signup | date: "%H" %}{{ d }}`, want: "18"},
		{name: "comment and raw", src: `{% comment %}{{ x | nope }}{% endcomment %}{% raw %}{{ profile.id }}{% endraw %}`, want: "{{ profile.id }}"},
		{name: "a literal {{ inside raw is not unterminated", src: `{% raw %}{{ and {% stay{% endraw %}`, want: "{{ and {% stay"},
		{name: "whitespace control", src: "a  {{- profile.first_name -}}  b", want: "aannb"},
		{name: "sum with a loop", src: `{% assign t = 0 %}{% for it in event.items %}{% assign t = t | plus: it.price %}{% endfor %}{{ t | money }}`, want: "$6.50"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, f := compileOne(t, "text", tc.src, MissingBlank)
			got, err := renderBoth(t, s, f, hostileProfile(), ev)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLocaleVariants(t *testing.T) {
	s, err := Compile(Spec{
		Content: Content{Push: &PushSpec{Title: "Hi {{ profile.first_name }}", Body: "Sale", Sound: "default"}},
		Locales: map[string]Content{
			"pt":    {Push: &PushSpec{Title: "Olá {{ profile.first_name }}"}},
			"pt-BR": {Push: &PushSpec{Title: "Oi {{ profile.first_name }}", Body: "Promoção"}},
			"de":    {Push: &PushSpec{Body: "Angebot"}},
		},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ locale, wantTitle, wantBody, wantTag string }{
		{"pt-BR", "Oi ann", "Promoção", "pt-BR"},
		{"pt_br", "Oi ann", "Promoção", "pt-BR"},
		{"PT-br", "Oi ann", "Promoção", "pt-BR"},
		{"pt-PT", "Olá ann", "Sale", "pt"},
		{"pt", "Olá ann", "Sale", "pt"},
		{"de-AT", "Hi ann", "Angebot", "de"},
		{"fr", "Hi ann", "Sale", ""},
		{"", "Hi ann", "Sale", ""},
	}
	for _, tc := range tests {
		t.Run("locale "+tc.locale, func(t *testing.T) {
			p := hostileProfile()
			p.locale = tc.locale
			var dst struct{ title, body string }
			st := s.acquire(p, nil)
			v := s.variantFor(p)
			dst.title, _ = v.push.title.str(st)
			dst.body, _ = v.push.body.str(st)
			s.release(st)
			if dst.title != tc.wantTitle || dst.body != tc.wantBody {
				t.Fatalf("got %q/%q, want %q/%q", dst.title, dst.body, tc.wantTitle, tc.wantBody)
			}
			if got := s.Locale(p); got != tc.wantTag {
				t.Fatalf("Locale = %q, want %q (the variant rendered)", got, tc.wantTag)
			}
			if v.push.sound.konst != "default" {
				t.Fatalf("variant lost the inherited sound: %q", v.push.sound.konst)
			}
		})
	}
}

func TestSMSEncoding(t *testing.T) {
	tests := []struct {
		name         string
		body         string
		wantEncoding string
		wantSegments int
	}{
		{"empty", "", EncodingGSM7, 0},
		{"plain ascii", "Hello", EncodingGSM7, 1},
		{"gsm basic accents", "Ça coûte 5€? é à ñ ü ß", EncodingUCS2, 1}, // û is not GSM-7
		{"gsm basic and extension", "Ça coute 5€ {ok} é à ñ", EncodingGSM7, 1},
		{"160 gsm is one part", strings.Repeat("a", 160), EncodingGSM7, 1},
		{"161 gsm is two parts", strings.Repeat("a", 161), EncodingGSM7, 2},
		{"306 gsm is two parts", strings.Repeat("a", 306), EncodingGSM7, 2},
		{"307 gsm is three parts", strings.Repeat("a", 307), EncodingGSM7, 3},
		{"80 extension chars are 160 septets", strings.Repeat("€", 80), EncodingGSM7, 1},
		{"81 extension chars are 162 septets", strings.Repeat("€", 81), EncodingGSM7, 2},
		{"escape pair does not straddle parts", strings.Repeat("a", 152) + "€" + strings.Repeat("a", 152), EncodingGSM7, 3},
		{"emoji is ucs-2", "Party 🎉", EncodingUCS2, 1},
		{"70 ucs-2 units is one part", strings.Repeat("ж", 70), EncodingUCS2, 1},
		{"71 ucs-2 units is two parts", strings.Repeat("ж", 71), EncodingUCS2, 2},
		{"35 emoji are 70 units", strings.Repeat("🎉", 35), EncodingUCS2, 1},
		{"36 emoji are 72 units", strings.Repeat("🎉", 36), EncodingUCS2, 2},
		{"surrogate pair does not straddle parts", strings.Repeat("ж", 66) + "🎉" + strings.Repeat("ж", 66), EncodingUCS2, 3},
		{"134 ucs-2 units is two parts", strings.Repeat("ж", 134), EncodingUCS2, 2},
		{"newline and form feed", "a\nb\fc", EncodingGSM7, 1},
		{"tab is not gsm", "a\tb", EncodingUCS2, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc, seg := SMSEncoding(tc.body)
			if enc != tc.wantEncoding || seg != tc.wantSegments {
				t.Fatalf("got %s/%d, want %s/%d", enc, seg, tc.wantEncoding, tc.wantSegments)
			}
		})
	}
}
