package campaigns

import (
	"context"
	"fmt"
	"time"
)

// ReasonCapped: the recipient had reached a frequency cap on the channel
// (or over all channels) within the cap's window.
const ReasonCapped = "capped"

// CapAll is a cap rule's channel when it counts every channel together.
const CapAll = "all"

// CapRule allows at most Limit messages per user within any Window
// (sliding), on Channel or, with "all" (or empty), over every channel.
type CapRule struct {
	Channel string   `json:"channel,omitempty" yaml:"channel"`
	Limit   int      `json:"limit" yaml:"limit"`
	Window  Duration `json:"window" yaml:"window"`
}

// Scope is the rule's channel: CapAll or a channel name.
func (r CapRule) Scope() string {
	if r.Channel == "" {
		return CapAll
	}
	return r.Channel
}

// Applies reports whether the rule counts a message on channel.
func (r CapRule) Applies(channel string) bool { return r.Scope() == CapAll || r.Channel == channel }

// FrequencyCap is a campaign's or flow's cap setting: Exempt skips the
// caps (a transactional flow: neither checked nor counted), Rules replace
// the daemon's global rules; absent, the global rules apply.
type FrequencyCap struct {
	Exempt bool      `json:"exempt,omitempty"`
	Rules  []CapRule `json:"rules,omitempty"`
}

// MaxCapWindow bounds a cap's window: the state keeps a user's messages
// for the window, so a year-long window would keep them for a year.
const MaxCapWindow = 31 * 24 * time.Hour

// ValidateCapRules checks rules; field names the list in errors.
func ValidateCapRules(field string, rules []CapRule) error {
	for i, r := range rules {
		f := fmt.Sprintf("%s[%d]", field, i)
		if _, ok := knownChannels[r.Channel]; !ok && r.Channel != "" && r.Channel != CapAll {
			return &FieldError{Field: f + ".channel", Msg: fmt.Sprintf("unknown channel %q (want a channel or \"all\")", r.Channel)}
		}
		if r.Limit < 1 {
			return &FieldError{Field: f + ".limit", Msg: "must be at least 1"}
		}
		if time.Duration(r.Window) < time.Second || time.Duration(r.Window) > MaxCapWindow {
			return &FieldError{Field: f + ".window", Msg: "want a duration from 1s to 744h (31 days)"}
		}
	}
	return nil
}

func (fc *FrequencyCap) validate() error {
	if fc == nil {
		return nil
	}
	if fc.Exempt && len(fc.Rules) > 0 {
		return &FieldError{Field: "frequency_cap", Msg: "exempt and rules are exclusive"}
	}
	return ValidateCapRules("frequency_cap.rules", fc.Rules)
}

// rules is the effective cap rules under the daemon's global ones.
func (fc *FrequencyCap) rules(global []CapRule) []CapRule {
	switch {
	case fc == nil:
		return global
	case fc.Exempt:
		return nil
	case len(fc.Rules) > 0:
		return fc.Rules
	}
	return global
}

// CapRequest is one message asking to pass the caps: a user, a channel,
// and the message's identity (its campaign, or a flow's scope), so that
// asking again for the same message (a resumed run) is answered the same
// and never counted twice.
type CapRequest struct {
	User    uint64
	Channel string
	Msg     string
}

// CapStore enforces frequency caps atomically across daemons. Admit
// answers per request, in order: true when the message fits every rule
// that applies to its channel (and is then counted against them), false
// when a rule is full. A request whose message was admitted within the
// window is admitted again and not counted twice. Requests are applied in
// order, so two messages of one user in one call count against each other.
// With dry, nothing is written: the answers are what Admit would say.
// Every call is one batched round trip (per Redis node).
type CapStore interface {
	Admit(ctx context.Context, reqs []CapRequest, rules []CapRule, dry bool) ([]bool, error)
}

// WithFrequencyCaps enforces rules (the daemon's global caps, which a
// campaign or flow may replace or be exempt from) through store. Without
// it there are no caps.
func WithFrequencyCaps(store CapStore, rules []CapRule) EngineOption {
	return func(e *Engine) { e.caps, e.capRules = store, rules }
}

// capStage checks the open positions' first messages against the
// frequency caps (one Admit call per batch) and settles the refused ones
// with reason capped.
func capStage(ctx context.Context, b *RecipientBatch) error {
	wait := capCheck(ctx, b)
	return wait()
}

// capRenderStage is capStage and renderStage with the cap's Redis round
// trip under the rendering: the batch used to wait for the answer before
// rendering anything. A position the cap refuses was rendered for nothing,
// which costs far less than the wait. Render errors win over capped for
// such a position (either way it is not sent; the cap counted it as it did
// when it came first).
func capRenderStage(ctx context.Context, b *RecipientBatch) error {
	wait := capCheck(ctx, b)
	rerr := renderStage(ctx, b)
	if err := wait(); err != nil {
		return err
	}
	return rerr
}

// capCheck starts the batch's cap check and returns the function that
// waits for it and settles the refused positions. The wait must be called.
func capCheck(ctx context.Context, b *RecipientBatch) (wait func() error) {
	r := b.run
	if r.caps == nil || len(r.capRules) == 0 {
		return func() error { return nil }
	}
	nch := b.nch()
	reqs := b.capReqs[:0]
	at := b.capPos[:0]
	for p := range b.pos {
		ps := &b.pos[p]
		if ps.settled || ps.first < 0 || ps.standby {
			continue // a standby step is not checked: docs/policies.md
		}
		if b.fb != nil && !b.fbFirstStep(p) {
			continue // a fallback sent after a crash is not checked, as it was not before
		}
		mem := &b.Members[p/nch]
		scope := r.c.ID
		if mem.Scope != "" {
			scope = mem.Scope
		}
		reqs = append(reqs, CapRequest{User: mem.Key, Channel: r.channels[p%nch], Msg: scope})
		at = append(at, p)
	}
	b.capReqs, b.capPos = reqs, at
	if len(reqs) == 0 {
		return func() error { return nil }
	}
	var ok []bool
	admit := func(ctx context.Context) error {
		var err error
		ok, err = r.caps.Admit(ctx, reqs, r.capRules, r.dry != nil)
		return err
	}
	done := make(chan error, 1)
	go func() {
		if r.led != nil {
			// A campaign run waits out a Redis blip as its claims do.
			done <- retryState(ctx, r.log, "check frequency caps", r.led.lost, admit)
		} else {
			done <- admit(ctx)
		}
	}()
	return func() error {
		if err := <-done; err != nil {
			return fmt.Errorf("check frequency caps: %w", err)
		}
		b.mu.Lock()
		settled := make([]bool, len(at))
		for i, p := range at {
			settled[i] = b.pos[p].settled
		}
		b.mu.Unlock()
		for i, p := range at {
			if !ok[i] && !settled[i] {
				b.skip(p, ReasonCapped)
			}
		}
		return nil
	}
}
