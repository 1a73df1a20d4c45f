package templates

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestFilterBudget is issue 12 item 2: every filter's input is measured and
// charged to the step budget before the engine materializes it, so a range
// or a big collection costs one recipient a render_error, not the daemon
// its memory.
func TestFilterBudget(t *testing.T) {
	big := make([]any, 20_000)
	for i := range big {
		big[i] = i
	}
	ev := map[string]any{"big": big, "small": []any{3, 1, 2, 1}}
	tests := []struct {
		name       string
		src        string
		limits     Limits
		wantReason Reason
		want       string
	}{
		{name: "huge range reversed", src: `{{ (1..100000000000) | reverse | first }}`, wantReason: ReasonTooMuchWork},
		{name: "range reversed in a tag", src: `{% assign r = (1..100000000000) | reverse %}{{ r | first }}`, wantReason: ReasonTooMuchWork},
		{name: "range sorted in a for tag", src: `{% for i in (1..100000000000) | sort %}{{ i }}{% break %}{% endfor %}`, wantReason: ReasonTooMuchWork},
		{name: "uniq over a million", src: `{{ (1..1000000) | uniq | size }}`, wantReason: ReasonTooMuchWork},
		{name: "filter work inside a loop adds up", src: `{% for i in (1..50) %}{{ (1..1000) | uniq | size }}{% endfor %}`, wantReason: ReasonTooMuchWork},
		{name: "big event array through sort", src: `{{ event.big | sort | last }}`, wantReason: ReasonTooMuchWork},
		{name: "concat charges its argument", src: `{{ event.small | concat: event.big | size }}`, wantReason: ReasonTooMuchWork},
		{name: "split charges its pieces", src: `{{ profile.long | split: "" | size }}`, limits: Limits{MaxSteps: 5000}, wantReason: ReasonTooMuchWork},
		{name: "size of a huge range is free", src: `{{ (1..100000000000) | size }}`, want: "100000000000"},
		{name: "first and last of a huge range are free", src: `{{ (5..100000000000) | first }}-{{ (5..100000000000) | last }}`, want: "5-100000000000"},
		{name: "small collections still work", src: `{{ event.small | uniq | sort | join: "," }}`, want: "1,2,3"},
		{name: "within budget", src: `{{ (1..100) | reverse | first }}`, limits: Limits{MaxSteps: 200}, want: "100"},
		{name: "over a lowered budget", src: `{{ (1..100) | reverse | first }}`, limits: Limits{MaxSteps: 50}, wantReason: ReasonTooMuchWork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := compile(Spec{Content: Content{Push: &PushSpec{Body: tc.src}}, Limits: tc.limits}, Options{}, false)
			if err != nil {
				t.Fatal(err)
			}
			st := s.acquire(hostileProfile(), ev)
			defer s.release(st)
			start := time.Now()
			out, err := s.def.push.body.render(st)
			if d := time.Since(start); d > 2*time.Second {
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

// TestRangeNeverMaterialized measures what one hostile render allocates:
// (1..10000000) | reverse cost 383 MiB before ranges were bounded.
func TestRangeNeverMaterialized(t *testing.T) {
	s, err := compile(Spec{Content: Content{Push: &PushSpec{Body: `{{ (1..10000000) | reverse | first }}`}}}, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	st := s.acquire(hostileProfile(), nil)
	_, rerr := s.def.push.body.render(st)
	s.release(st)
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
		t.Fatalf("one render allocated %d MiB", got>>20)
	}
	requireReason(t, rerr, ReasonTooMuchWork)
}

// TestCompileChecksBudget is the create-time half of item 2: a template that
// runs out of budget on a stand-in recipient is refused when the campaign is
// created, not discovered per recipient.
func TestCompileChecksBudget(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		wantErr string
	}{
		{name: "runaway loop", src: `{% for i in (1..1000000000) %}{% endfor %}`, wantErr: "template work budget exhausted"},
		{name: "huge range filter", src: `{{ (1..100000000000) | reverse | first }}`, wantErr: "template work budget exhausted"},
		{name: "constant output over the cap", src: `{% for i in (1..5000) %}0123456789abcdef{% endfor %}`, wantErr: "output cap exceeded"},
		{name: "data-dependent loops pass", src: `{% for it in event.items %}{{ it }}{% endfor %}`},
		{name: "missing variables are not a budget problem", src: `{{ profile.nope | upcase }}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(Spec{Content: Content{Push: &PushSpec{Body: tc.src}}, Missing: MissingSkip}, Options{})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Compile = %v, want success", err)
				}
				return
			}
			var ce *CompileError
			if !errors.As(err, &ce) || ce.Channel != ChannelPush || ce.Field != "body" || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Compile = %v, want a CompileError on push.body containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestLimitCeilings is issue 12 item 3: a campaign's limits may lower the
// daemon's ceilings, never raise them.
func TestLimitCeilings(t *testing.T) {
	tests := []struct {
		name      string
		limits    Limits
		ceilings  Limits
		wantField string // "" = compiles
		wantSteps int
	}{
		{name: "defaults are the ceiling", limits: Limits{MaxSteps: 20_000_000}, wantField: "limits.max_steps"},
		{name: "raised field cap", limits: Limits{MaxFieldBytes: 1 << 30}, wantField: "limits.max_field_bytes"},
		{name: "raised html cap", limits: Limits{MaxHTMLBytes: 1 << 30}, wantField: "limits.max_html_bytes"},
		{name: "raised source cap", limits: Limits{MaxSourceBytes: 1 << 30}, wantField: "limits.max_source_bytes"},
		{name: "negative", limits: Limits{MaxSteps: -1}, wantField: "limits.max_steps"},
		{name: "lowered", limits: Limits{MaxSteps: 100}, wantSteps: 100},
		{name: "unset takes the ceiling", ceilings: Limits{MaxSteps: 500}, wantSteps: 500},
		{name: "above a configured ceiling", limits: Limits{MaxSteps: 501}, ceilings: Limits{MaxSteps: 500}, wantField: "limits.max_steps"},
		{name: "configured ceiling above the default", limits: Limits{MaxSteps: 50_000}, ceilings: Limits{MaxSteps: 100_000}, wantSteps: 50_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Compile(Spec{Content: Content{Push: &PushSpec{Body: "hi"}}, Limits: tc.limits}, Options{Ceilings: tc.ceilings})
			if tc.wantField != "" {
				var ce *CompileError
				if !errors.As(err, &ce) || ce.Field != tc.wantField {
					t.Fatalf("Compile = %v, want a CompileError on %s", err, tc.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.limits.MaxSteps != tc.wantSteps {
				t.Fatalf("max_steps = %d, want %d", s.limits.MaxSteps, tc.wantSteps)
			}
		})
	}
}
