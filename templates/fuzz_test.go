package templates

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzCompileRender compiles any template into every kind of field and
// renders it with any profile value: it must never panic, JSON fields must
// stay valid JSON, output must stay valid UTF-8 and within its cap, and the
// fast path must agree with the liquid engine.
func FuzzCompileRender(f *testing.F) {
	for _, src := range differentialCorpus() {
		f.Add(src, `<b>"x"</b>`)
	}
	for _, seed := range [][2]string{
		{`{% for i in (1..100000000) %}{{ i }}{% endfor %}`, ""},
		{`{% include "/etc/passwd" %}`, ""},
		{`{{ profile.v | truncate: -3 }}{{ profile.v | slice: 99 }}`, "\xff\xfe"},
		{`{"a": {{ profile.v }}, "b": "{{ profile.v }}"}`, "\"}\n\\"},
		{`{% assign s = profile.v %}{% for i in (1..40) %}{% assign s = s | append: s %}{% endfor %}`, "xx"},
		{`{% if profile.v == "a" %}A{% elsif profile.v contains "b" %}B{% else %}{{ profile.v | upcase }}{% endif %}`, "b"},
		{`{{ profile.v | date: "%Y %Q %-d" }}`, "2024-02-30"},
		{`{{ profile.v | money: profile.v, profile.v }}`, "1e308"},
		{`{{ profile.v | split: "" | uniq | sort | reverse | join: "," }}`, "🎉a🎉"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, src, value string) {
		// A watchdog names an input that runs away instead of letting the
		// fuzzer stall silently.
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				panic(fmt.Sprintf("HANG %q %q", src, value))
			}
		}()
		p := newProfile("u", "pt-BR", "Europe/Lisbon", map[string]any{"v": value, "n": int64(len(value))})
		ev := map[string]any{"v": value, "items": []any{value, 1.5}}
		for _, kind := range []string{"text", "html", "json", "line"} {
			s, err := compileOneErr(kind, src, MissingSkip)
			if err != nil {
				continue
			}
			f := pickField(s, kind)
			if f.isConst {
				continue
			}
			// Small budgets keep each fuzz input fast.
			f.max = 4096
			s.limits.MaxSteps = 1000
			out, err := renderBoth(t, s, f, p, ev)
			if err != nil {
				continue
			}
			if !utf8.ValidString(out) {
				t.Fatalf("%s: output is not UTF-8: %q", kind, out)
			}
			if len(out) > f.max {
				t.Fatalf("%s: output %d bytes over the cap", kind, len(out))
			}
			if kind == "json" && out != "" && !json.Valid([]byte(out)) {
				t.Fatalf("json: invalid output %q", out)
			}
		}
	})
}
