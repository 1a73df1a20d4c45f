package templates

import (
	"testing"

	"github.com/notifyd/notifyd/channels"
)

// benchProfile returns attribute values already boxed, as a shard row's
// accessor does for strings it serves from the mapping.
func benchProfile() *fakeProfile {
	return newProfile("u-42", "en-US", "America/New_York", map[string]any{
		"first_name": "Ann", "city": "Lisbon", "points": int64(1200),
	})
}

func typicalPush() Spec {
	return Spec{Content: Content{Push: &PushSpec{
		Title: `Hi {{ profile.first_name | default: "there" }}!`,
		Body:  `Your {{ profile.points }} points are waiting in {{ profile.city }}.`,
		Sound: "default",
	}}}
}

// BenchmarkRenderPushTypical is the target: title + body, three
// variables, one default. Target ≤ 2 µs and ≤ 10 allocs per recipient.
func BenchmarkRenderPushTypical(b *testing.B) {
	s, err := Compile(typicalPush(), Options{Now: fixedNow})
	if err != nil {
		b.Fatal(err)
	}
	p := benchProfile()
	var dst channels.Push
	b.ReportAllocs()
	defer cpuTimer(b)()
	for b.Loop() {
		if err := s.RenderPush(p, nil, &dst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenderPushTypicalEngine is the same push forced onto the liquid
// engine, for comparison with the fast path.
func BenchmarkRenderPushTypicalEngine(b *testing.B) {
	s, err := Compile(typicalPush(), Options{Now: fixedNow})
	if err != nil {
		b.Fatal(err)
	}
	s.def.push.title.segs, s.def.push.body.segs = nil, nil
	p := benchProfile()
	var dst channels.Push
	b.ReportAllocs()
	defer cpuTimer(b)()
	for b.Loop() {
		if err := s.RenderPush(p, nil, &dst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenderPushConstant shows fields without variables are rendered
// once at compile time: zero allocations per recipient.
func BenchmarkRenderPushConstant(b *testing.B) {
	s, err := Compile(Spec{Content: Content{Push: &PushSpec{
		Title: "Flash sale", Body: "Everything 20% off until midnight.", Sound: "default",
		Data: `{"screen": "sale"}`,
	}}}, Options{Now: fixedNow})
	if err != nil {
		b.Fatal(err)
	}
	p := benchProfile()
	var dst channels.Push
	b.ReportAllocs()
	defer cpuTimer(b)()
	for b.Loop() {
		if err := s.RenderPush(p, nil, &dst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenderMailHTML renders an email with an auto-escaped HTML body.
func BenchmarkRenderMailHTML(b *testing.B) {
	s, err := Compile(Spec{Content: Content{Email: &EmailSpec{
		From:    "Shop <news@example.com>",
		Subject: `{{ profile.first_name | default: "Hello" }}, your weekly picks`,
		HTML:    `<html><body><h1>Hi {{ profile.first_name }}</h1><p>{{ profile.points | number }} points in {{ profile.city }}.</p></body></html>`,
		Text:    `Hi {{ profile.first_name }}, {{ profile.points }} points.`,
	}}}, Options{Now: fixedNow})
	if err != nil {
		b.Fatal(err)
	}
	p := benchProfile()
	var dst channels.Mail
	b.ReportAllocs()
	defer cpuTimer(b)()
	for b.Loop() {
		if err := s.RenderMail(p, nil, &dst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenderPushLoop is a template with tags (engine path).
func BenchmarkRenderPushLoop(b *testing.B) {
	s, err := Compile(Spec{Content: Content{Push: &PushSpec{
		Title: `{% if profile.points > 1000 %}Gold{% else %}Hi{% endif %} {{ profile.first_name }}`,
		Body:  `{% for i in (1..3) %}{{ i }}{% endfor %}`,
	}}}, Options{Now: fixedNow})
	if err != nil {
		b.Fatal(err)
	}
	p := benchProfile()
	var dst channels.Push
	b.ReportAllocs()
	defer cpuTimer(b)()
	for b.Loop() {
		if err := s.RenderPush(p, nil, &dst); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompileTypical(b *testing.B) {
	b.ReportAllocs()
	defer cpuTimer(b)()
	for b.Loop() {
		if _, err := Compile(typicalPush(), Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
