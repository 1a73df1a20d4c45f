package campaigns

import (
	"errors"
	"fmt"
	"math"
	"regexp"

	"github.com/cespare/xxhash/v2"

	"github.com/notifyd/notifyd/templates"
)

// An A/B test splits a campaign's members over content variants by weight,
// and optionally keeps a holdout (control) group that receives nothing but
// is counted. A member's group is a pure function of the campaign id and the
// member's 64-bit user key, so every daemon of a fleet, every restart and
// the dry run agree on it without storing anything (docs/policies.md).

// Variant is one content variant of an A/B test.
type Variant struct {
	// ID names the variant in counts, metrics and the delivery log.
	ID string `json:"id"`
	// Weight is the variant's share of the members not held out, relative
	// to the other variants' weights (50/50, 1/1 and 0.5/0.5 are the same).
	Weight float64 `json:"weight"`
	// Content replaces the campaign's content block by block: a block it
	// gives (push, email, ...) replaces the campaign's, one it omits is the
	// campaign's. Empty: the campaign's content (a "control" variant).
	Content templates.Spec `json:"content,omitzero"`
}

// Reserved variant ids: HoldoutVariant is the holdout group's, and
// DefaultVariant names the members who receive the campaign's own content
// when it has a holdout and no variants.
const (
	HoldoutVariant = "holdout"
	DefaultVariant = "default"
)

// ReasonHoldout settles every channel of a member of the holdout group: it
// is counted, never sent.
const ReasonHoldout = "holdout"

// MaxVariants bounds a campaign's variants: their counts multiply the
// campaign's counts, and a test with more arms needs more audience than
// notifyd could split meaningfully.
const MaxVariants = 16

// abScale is the resolution of assignment: a member's point is an integer
// in [0, abScale), and group boundaries are integers in millionths.
const abScale = 1_000_000

var variantIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// abPlan is a campaign's compiled A/B test: group boundaries and the
// content of each variant. Index 0 means "no A/B test"; 1..n are the
// variants (or DefaultVariant), n+1 the holdout group when there is one.
type abPlan struct {
	seed uint64
	// bounds[i] is the exclusive upper end of group i+1's points; holdout
	// points are below holdout.
	holdout uint64
	bounds  []uint64
	ids     []string         // by index; ids[0] == ""
	sets    []*templates.Set // by index; sets[0] and the holdout's are nil
	hold    int8             // index of the holdout group, 0 if none
}

// abSeed is the campaign's part of the assignment hash.
func abSeed(campaign string) uint64 { return xxhash.Sum64String("ab:" + campaign) }

// abPoint maps a member to a point in [0, abScale): splitmix64's finalizer
// over the user key XOR the campaign's seed, then the high 32 bits scaled.
// User keys are already xxhash values; the mix makes the campaigns'
// assignments independent of each other. Integer arithmetic only, so it is
// the same on every platform (and ten lines of Python).
func abPoint(seed, key uint64) uint64 {
	z := key ^ seed
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return (z >> 32) * abScale >> 32
}

// newABPlan lays out the groups of c; nil when c has no A/B test.
func newABPlan(c *Campaign) *abPlan {
	if len(c.Variants) == 0 && c.Holdout == 0 && c.WinnerOf == nil {
		return nil
	}
	p := &abPlan{seed: abSeed(c.ID), ids: []string{""}, sets: []*templates.Set{nil}}
	p.holdout = uint64(math.Round(c.Holdout * abScale / 100))
	vs := c.Variants
	if len(vs) == 0 {
		vs = []Variant{{ID: DefaultVariant, Weight: 1}}
	}
	if w := c.WinnerOf; w != nil {
		// The test's split: the same holdout, the rest all the winner's.
		p.seed = abSeed(w.Campaign)
		vs = []Variant{{ID: w.Variant, Weight: 1}}
	}
	total := 0.0
	for _, v := range vs {
		total += v.Weight
	}
	cum := 0.0
	for i, v := range vs {
		cum += v.Weight
		b := p.holdout + uint64(math.Round(float64(abScale-p.holdout)*cum/total))
		if i == len(vs)-1 {
			b = abScale
		}
		p.bounds = append(p.bounds, b)
		p.ids = append(p.ids, v.ID)
		p.sets = append(p.sets, nil)
	}
	if c.Holdout > 0 {
		p.hold = int8(len(p.ids))
		p.ids = append(p.ids, HoldoutVariant)
		p.sets = append(p.sets, nil)
	}
	return p
}

// assign is the member's group index (1..n, or the holdout's).
func (p *abPlan) assign(key uint64) int8 {
	x := abPoint(p.seed, key)
	if x < p.holdout {
		return p.hold
	}
	for i, b := range p.bounds {
		if x < b {
			return int8(i + 1)
		}
	}
	return int8(len(p.bounds)) // unreachable: the last bound is abScale
}

// id names group v ("" for 0, no A/B test).
func (p *abPlan) id(v int8) string {
	if p == nil {
		return ""
	}
	return p.ids[v]
}

// variantField is where the content group v renders from sits in the
// request body: "" for the campaign's content, "variants[i]." for a
// variant's own.
func (r *run) variantField(v int8) string {
	if v == 0 || r.ab == nil || r.ab.sets[v] == r.set || int(v) > len(r.c.Variants) {
		return ""
	}
	return fmt.Sprintf("variants[%d].", v-1)
}

// AssignVariant is the group the campaign puts the user with this user
// key in: a variant id, HoldoutVariant, or "" when the campaign has no A/B
// test. The pipeline, the dry run and retries use the same function.
func (c *Campaign) AssignVariant(key uint64) string {
	p := c.ab
	if p == nil {
		p = newABPlan(c)
	}
	if p == nil {
		return ""
	}
	return p.id(p.assign(key))
}

// validateVariants checks variants and holdout; errors name the field.
func (c *Campaign) validateVariants() error {
	if math.IsNaN(c.Holdout) || c.Holdout < 0 || c.Holdout >= 100 {
		return &FieldError{Field: "holdout", Msg: "want a percentage of the audience, at least 0 and below 100"}
	}
	if len(c.Variants) > MaxVariants {
		return &FieldError{Field: "variants", Msg: fmt.Sprintf("at most %d variants", MaxVariants)}
	}
	if len(c.Variants) == 1 {
		return &FieldError{Field: "variants", Msg: "an A/B test needs at least two variants (or none, with a holdout)"}
	}
	seen := map[string]bool{}
	for i, v := range c.Variants {
		f := fmt.Sprintf("variants[%d]", i)
		if !variantIDPattern.MatchString(v.ID) {
			return &FieldError{Field: f + ".id", Msg: "required: 1-32 characters of letters, digits, _ and -"}
		}
		if v.ID == HoldoutVariant {
			return &FieldError{Field: f + ".id", Msg: fmt.Sprintf("%q is reserved for the holdout group", HoldoutVariant)}
		}
		if seen[v.ID] {
			return &FieldError{Field: f + ".id", Msg: fmt.Sprintf("variant %q listed twice", v.ID)}
		}
		seen[v.ID] = true
		if math.IsNaN(v.Weight) || math.IsInf(v.Weight, 0) || v.Weight <= 0 {
			return &FieldError{Field: f + ".weight", Msg: "required: a positive number (weights are relative)"}
		}
		if v.Content.Limits != (templates.Limits{}) {
			return &FieldError{Field: f + ".content.limits", Msg: "limits are the campaign's (content.limits)"}
		}
		for _, blk := range []string{"push", "email", "sms", "webpush", "webhook"} {
			if hasBlock(v.Content.Content, blk) && !c.usesBlock(blk) {
				return &FieldError{Field: f + ".content." + blk, Msg: "no channel of the campaign uses this block"}
			}
		}
	}
	if len(c.Variants) > 0 {
		total := 0.0
		for _, v := range c.Variants {
			total += v.Weight
		}
		if math.IsInf(total, 0) {
			return &FieldError{Field: "variants", Msg: "weights too large"}
		}
	}
	return nil
}

// usesBlock reports whether a channel of the campaign renders block.
func (c *Campaign) usesBlock(block string) bool {
	for _, ch := range c.Channels {
		if knownChannels[ch] == block {
			return true
		}
	}
	return false
}

// variantSpec is the content variant v renders: the campaign's blocks with
// the variant's blocks in their place. A campaign locale keeps the blocks
// the variant does not replace; the variant's own locales apply to its
// blocks.
func (c *Campaign) variantSpec(v *Variant) templates.Spec {
	base, over := c.Content, v.Content
	out := templates.Spec{Content: mergeBlocks(base.Content, over.Content), Missing: base.Missing, Limits: base.Limits}
	if over.Missing != "" {
		out.Missing = over.Missing
	}
	for tag, lc := range base.Locales {
		kept := dropBlocks(lc, over.Content)
		if !emptyContent(kept) {
			if out.Locales == nil {
				out.Locales = map[string]templates.Content{}
			}
			out.Locales[tag] = kept
		}
	}
	for tag, lc := range over.Locales {
		if out.Locales == nil {
			out.Locales = map[string]templates.Content{}
		}
		out.Locales[tag] = mergeBlocks(out.Locales[tag], lc)
	}
	return out
}

// mergeBlocks is base with every block over gives in its place.
func mergeBlocks(base, over templates.Content) templates.Content {
	if over.Push != nil {
		base.Push = over.Push
	}
	if over.Email != nil {
		base.Email = over.Email
	}
	if over.SMS != nil {
		base.SMS = over.SMS
	}
	if over.WebPush != nil {
		base.WebPush = over.WebPush
	}
	if over.Webhook != nil {
		base.Webhook = over.Webhook
	}
	return base
}

// dropBlocks is c without the blocks over gives.
func dropBlocks(c, over templates.Content) templates.Content {
	if over.Push != nil {
		c.Push = nil
	}
	if over.Email != nil {
		c.Email = nil
	}
	if over.SMS != nil {
		c.SMS = nil
	}
	if over.WebPush != nil {
		c.WebPush = nil
	}
	if over.Webhook != nil {
		c.Webhook = nil
	}
	return c
}

func emptyContent(c templates.Content) bool {
	return c.Push == nil && c.Email == nil && c.SMS == nil && c.WebPush == nil && c.Webhook == nil
}

// compileVariants compiles every variant's content once, like the
// campaign's, and keeps the plan on the campaign. A variant's compile error
// names its place in the body (variants[1].content.push.title).
func (c *Campaign) compileVariants(opts templates.Options, main *templates.Set) error {
	p := newABPlan(c)
	if p == nil {
		c.ab = nil
		return nil
	}
	var errs []error
	for i := range c.Variants {
		v := &c.Variants[i]
		if emptyContent(v.Content.Content) && len(v.Content.Locales) == 0 && v.Content.Missing == "" {
			p.sets[i+1] = main
			continue
		}
		set, err := templates.Compile(c.variantSpec(v), opts)
		if err != nil {
			errs = append(errs, variantCompileErrors(i, err)...)
			continue
		}
		p.sets[i+1] = set
	}
	if len(c.Variants) == 0 {
		p.sets[1] = main
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	c.ab = p
	return nil
}

// variantCompileErrors turns variant i's compile errors into field errors.
func variantCompileErrors(i int, err error) []error {
	var out []error
	for _, err := range joinedLeaves(err) {
		var ce *templates.CompileError
		if errors.As(err, &ce) {
			out = append(out, &FieldError{Field: fmt.Sprintf("variants[%d].", i) + compileField(ce), Msg: ce.Error()})
		} else {
			out = append(out, &FieldError{Field: fmt.Sprintf("variants[%d].content", i), Msg: err.Error()})
		}
	}
	return out
}

// joinedLeaves flattens errors.Join trees (a compile reports every field's
// error at once) into their leaves, in order; nil gives none.
func joinedLeaves(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, joinedLeaves(e)...)
		}
		return out
	}
	return []error{err}
}
