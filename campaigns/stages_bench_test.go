package campaigns

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"
)

type benchProfile struct{ id, name string }

func (p *benchProfile) ID() string       { return p.id }
func (p *benchProfile) Locale() string   { return "" }
func (p *benchProfile) TimeZone() string { return "" }
func (p *benchProfile) Attr(name string) (any, bool) {
	if name == "first_name" {
		return p.name, true
	}
	return nil, false
}

// BenchmarkStages runs the stages a campaign batch goes through before
// dispatch (resolve, layout, policy, render, counts) over 1,000 members on
// three channels, with and without an A/B test: the cost of the variant
// bookkeeping on the hot path.
func BenchmarkStages(b *testing.B) {
	const base = `{"id": "bench", "segment": "all", "channels": ["sms", "email", "webhook"],
  "content": {"sms": {"body": "Hi {{ profile.first_name }}"},
    "email": {"from": "a@example.test", "subject": "Hi {{ profile.first_name }}", "text": "Sale"},
    "webhook": {"url": "https://hooks.example.test/x", "body": "{\"u\": \"{{ profile.id }}\"}"}}%s}`
	for _, tc := range []struct{ name, extra string }{
		{"no variants", ""},
		{"three variants and a holdout", `, "holdout": 10, "variants": [{"id": "A", "weight": 1}, {"id": "B", "weight": 1, "content": {"sms": {"body": "B {{ profile.first_name }}"}}}, {"id": "C", "weight": 1}]`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := DecodeCampaign(fmt.Appendf(nil, base, tc.extra))
			if err != nil {
				b.Fatal(err)
			}
			set, err := c.Compile(time.Now)
			if err != nil {
				b.Fatal(err)
			}
			r := newRunFor(c, set, time.Now, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil, EngineConfig{}.withDefaults())
			members := make([]Member, 1000)
			for i := range members {
				id := fmt.Sprintf("u-%d", i)
				members[i] = Member{Key: uint64(i+1) * 0x9e3779b97f4a7c15, ID: id, Email: id + "@example.test", Phone: "+14155550100",
					Profile: &benchProfile{id: id, name: "Ann"}}
			}
			stages := MultiStage{StageFunc(resolveStage), StageFunc(layoutStage), StageFunc(policyStage), StageFunc(renderStage)}
			bt := &RecipientBatch{}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				bt.Members = members
				bt.reset(r, len(members))
				if err := stages.Exec(ctx, bt); err != nil {
					b.Fatal(err)
				}
				_ = bt.takeCounts()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(members)), "ns/member")
		})
	}
}
