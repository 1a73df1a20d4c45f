package templates

import (
	"strings"
	"testing"
)

// differentialCorpus is templates the fast path compiles; every one must
// render byte-for-byte as the liquid engine renders it.
func differentialCorpus() []string {
	return []string{
		`Hi {{ profile.first_name | default: "there" }}!`,
		`{{ profile.html }}|{{ profile.quote }}|{{ profile.json }}|{{ profile.bad }}|{{ profile.sep }}`,
		`{{ profile.long | truncate: 20 }} {{ profile.emoji | truncate: 3, "" }}`,
		`{{ profile.crlf }} {{ profile.multiline | upcase }}`,
		`{{ profile.count }} {{ profile.amount }} {{ profile.vip }} {{ profile.zero }} {{ profile.signup }}`,
		`{{ profile.amount | money }} {{ profile.amount | money: "EUR", "de" }} {{ profile.count | number }}`,
		`{{ profile.signup | date: "%Y-%m-%d %H:%M %z" }} {{ "now" | date: "%s" }}`,
		`{{ event.order.id }} {{ event.order.total | plus_not_used | default: 1 }}`,
		`{{ event.order }} {{ event.items }} {{ event.items | join: "-" }}`,
		`{{ event.items | json }} {{ profile.html | json }} {{ event.order | json }}`,
		`{{ campaign.id }} {{ campaign.name }} {{ campaign.vars.promo }} {{ campaign.vars }}`,
		`{{ profile.html | escape }} {{ profile.html | raw }} {{ profile.html | escape_once }}`,
		`{{ profile.nick }}{{ event.missing.deep }}{{ nothing }}`,
		`{{ profile.first_name | append: profile.quote | prepend: profile.html | replace: "a", "<&>" }}`,
		`{{ 1 }} {{ -2 }} {{ 3.25 }} {{ true }} {{ false }} {{ nil }} {{ "lit" }} {{ 'single' }}`,
		`{{ profile.city | strip | capitalize | url_encode }} {{ profile.city | lstrip | rstrip | downcase }}`,
		`{{ profile.first_name | slice: 1 }} {{ profile.emoji | slice: 0, 1 }} {{ "one two three" | truncatewords: 1 }}`,
		`{{ event.typed.x }} {{ event.when }}`,
		`{"a": "{{ profile.quote }}", "b": {{ profile.count }}, "c": {{ profile.html }}, "d": {{ event.items | json }}}`,
	}
}

func TestDifferentialFastPathVsEngine(t *testing.T) {
	events := []map[string]any{
		nil,
		{
			"order": map[string]any{"id": "A<1>", "total": 10.5}, "items": []any{"x", 1, nil, true},
			// Shapes beyond the fast path: it must hand over to the engine.
			"typed": map[string]string{"x": "typed map"}, "when": mustTime("2024-01-02T03:04:05Z"),
		},
	}
	profiles := []Profile{hostileProfile(), newProfile("", "", "", nil), nil}
	for _, src := range differentialCorpus() {
		for _, kind := range []string{"text", "html", "line", "json"} {
			if src == differentialCorpus()[7] {
				continue // uses an unknown filter on purpose below
			}
			isJSON := strings.HasPrefix(src, `{"`)
			if isJSON != (kind == "json") {
				if kind != "json" {
					continue
				}
				// Every plain template also runs inside a JSON string.
				src = `{"v": "` + src + `"}`
			}
			t.Run(kind+"/"+src, func(t *testing.T) {
				for _, missing := range []Missing{MissingBlank, MissingSkip} {
					s, f := compileOne(t, kind, src, missing)
					if f.segs == nil {
						t.Fatalf("corpus template is not on the fast path")
					}
					for _, p := range profiles {
						for _, ev := range events {
							// renderBoth fails the test on any difference.
							_, _ = renderBoth(t, s, f, p, ev)
						}
					}
				}
			})
		}
	}
	if _, err := compileOneErr("text", differentialCorpus()[7], MissingBlank); err == nil {
		t.Fatal("unknown filter compiled")
	}
}
