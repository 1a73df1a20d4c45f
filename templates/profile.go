package templates

import (
	"time"

	"github.com/osteele/liquid/render"
	"github.com/osteele/liquid/values"
)

// Profile is one recipient as the shard store exposes it. The shard's row
// type implements it; templates read only the attributes they reference.
type Profile interface {
	ID() string       // external user id
	Locale() string   // e.g. "pt-BR", "" if none
	TimeZone() string // IANA name, "" if none
	// Attr returns the attribute's value as string, int64, float64, bool or time.Time (UTC);
	// ok=false when the row has no such attribute.
	Attr(name string) (value any, ok bool)
}

// probeProfile is the stand-in recipient templates are checked on at
// compile time: an id and nothing else.
type probeProfile struct{}

func (probeProfile) ID() string              { return "probe" }
func (probeProfile) Locale() string          { return "" }
func (probeProfile) TimeZone() string        { return "" }
func (probeProfile) Attr(string) (any, bool) { return nil, false }

// profileField resolves profile.<name>: the row's identity fields first,
// then its free-form attributes.
func profileField(p Profile, name string) any {
	if p == nil {
		return nil
	}
	switch name {
	case "id":
		return p.ID()
	case "locale":
		return p.Locale()
	case "time_zone":
		return p.TimeZone()
	}
	v, ok := p.Attr(name)
	if !ok {
		return nil
	}
	return v
}

// profileValue is profile as the liquid engine sees it: a values.Value whose
// properties are read from the Profile on demand, so the engine path too
// never copies a row into a map.
type profileValue struct{ p Profile }

var _ values.Value = profileValue{}

func (v profileValue) Interface() any {
	if v.p == nil {
		return nil
	}
	return map[string]any{"id": v.p.ID(), "locale": v.p.Locale(), "time_zone": v.p.TimeZone()}
}
func (v profileValue) Int() int                  { return 0 }
func (v profileValue) Equal(o values.Value) bool { return false }
func (v profileValue) Less(o values.Value) bool  { return false }
func (v profileValue) Test() bool                { return v.p != nil }
func (v profileValue) Contains(k values.Value) bool {
	name, ok := k.Interface().(string)
	return ok && profileField(v.p, name) != nil
}
func (v profileValue) IndexValue(k values.Value) values.Value { return v.PropertyValue(k) }
func (v profileValue) PropertyValue(k values.Value) values.Value {
	name, ok := k.Interface().(string)
	if !ok {
		return values.ValueOf(nil)
	}
	return values.ValueOf(profileField(v.p, name))
}

// state is one recipient's render of one Set: reused through a pool so the
// fast path allocates only the strings it hands out.
type state struct {
	set   *Set
	p     Profile
	event map[string]any

	buf   []byte
	args  []any // filter arguments, reused between calls
	steps int
	max   int        // the current field's cap
	out   *capWriter // the engine's writer while a field renders on it
	// engine is the liquid config whose filters charge this state's
	// budget; built on the first render that needs the engine.
	engine *render.Config
	// loc and now are resolved on first use: most templates never ask.
	loc *time.Location
	now time.Time
}

func (st *state) reset(s *Set, p Profile, event map[string]any) {
	st.set, st.p, st.event = s, p, event
	st.steps = 0
	st.loc = nil
	st.now = time.Time{}
}

func (st *state) location() *time.Location {
	if st.loc == nil {
		st.loc = time.UTC
		if st.p != nil {
			st.loc = st.set.zone(st.p.TimeZone())
		}
	}
	return st.loc
}

func (st *state) clock() time.Time {
	if st.now.IsZero() {
		st.now = st.set.now()
	}
	return st.now
}

func (st *state) locale() string {
	if st.p == nil {
		return ""
	}
	return st.p.Locale()
}

func (st *state) currency() string { return st.set.currency }

// engineConfig returns the engine config bound to st.
func (st *state) engineConfig() render.Config {
	if st.engine == nil {
		cfg := newEngineConfig(st)
		st.engine = &cfg
	}
	return *st.engine
}

// step charges one unit of loop work against the field's budget.
func (st *state) step() error {
	st.steps++
	if st.steps > st.set.limits.MaxSteps {
		return errTooMuchWork
	}
	return nil
}
