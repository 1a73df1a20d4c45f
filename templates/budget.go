package templates

import (
	"math"
	"math/bits"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/osteele/liquid/values"
)

// bytesPerStep converts text a filter walks into steps. Text is already
// capped (maxValueBytes per value, the field cap per output), so text costs
// little: a 1 MiB value through one filter is 1,024 steps, and a 64 KiB
// field through ten filters still fits the default budget. Collections cost
// one step per element: they are what a template can make huge from a few
// characters ((1..100000000000)).
const bytesPerStep = 1024

// sizeOf measures v without materializing it: elements for a collection or
// a range, bytes for text. Scalars are 0.
func sizeOf(v any) (n int, collection bool) {
	switch v := v.(type) {
	case nil, bool, int, int64, float64:
		return 0, false
	case string:
		return len(v), false
	case safeHTML:
		return len(v), false
	case rawText:
		return len(v), false
	case jsonText:
		return len(v), false
	case values.Range:
		return rangeLen(v), true
	case []any:
		return len(v), true
	case map[string]any:
		return len(v), true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		return rv.Len(), true
	case reflect.String:
		return rv.Len(), false
	}
	return 0, false
}

// rangeLen is a range's length; the engine computes it in int, where
// (-9e18..9e18) overflows to a negative or wraps to a huge positive count.
// Negative means empty (as for (5..1)); a wrapped count is charged as is
// and refused.
func rangeLen(r values.Range) int {
	return max(r.Len(), 0)
}

// units converts a measured input to steps.
func units(n int, collection bool) int {
	if collection {
		return n
	}
	return n / bytesPerStep
}

// filterCost is what one filter call is charged before it runs: one step,
// plus its input and arguments, plus the algorithm's own excess over a
// single pass (sorting, uniq on values that cannot be hashed, the pieces
// split will allocate). Sums saturate: the budget is an int, and a wrapped
// range length must not overflow it back into range.
func filterCost(name string, in any, args []any) int {
	switch name {
	case "size", "first", "last":
		// O(1) on a list; a range is answered by rangeShortcut.
		return 1
	}
	n, coll := sizeOf(in)
	cost := satAdd(1, units(n, coll))
	for _, a := range args {
		an, acoll := sizeOf(a)
		cost = satAdd(cost, units(an, acoll))
	}
	if !coll {
		if name == "split" {
			cost = satAdd(cost, splitPieces(toString(in), argString(args, 0, " ")))
		}
		return cost
	}
	switch name {
	case "sort", "sort_natural":
		cost = satAdd(cost, satMul(n, bits.Len(uint(n))))
	case "uniq":
		if n > 0 && !hashableElems(in) {
			cost = satAdd(cost, satMul(n, n))
		}
	}
	return cost
}

// nativeCost is filterCost for notifyd's own filters, which are all single
// passes over their input: the render hot path, so strings and scalars
// (nearly every call) skip the general measurement.
func nativeCost(in any, args []any) int {
	cost := 1
	switch v := in.(type) {
	case string:
		cost += len(v) / bytesPerStep
	case nil, bool, int, int64, float64:
	default:
		n, coll := sizeOf(in)
		cost = satAdd(cost, units(n, coll))
	}
	for _, a := range args {
		switch v := a.(type) {
		case string:
			cost += len(v) / bytesPerStep
		case nil, bool, int, int64, float64, *state:
		default:
			n, coll := sizeOf(a)
			cost = satAdd(cost, units(n, coll))
		}
	}
	return cost
}

// splitPieces counts the strings split will allocate, without splitting.
func splitPieces(s, sep string) int {
	switch sep {
	case "":
		return utf8.RuneCountInString(s)
	case " ":
		return len(strings.Fields(s)) + 1
	}
	return strings.Count(s, sep) + 1
}

// hashableElems reports whether uniq can use its map (linear) rather than
// its quadratic comparison: scalars can, maps and slices cannot.
func hashableElems(in any) bool {
	a, ok := in.([]any)
	if !ok {
		return true
	}
	for _, e := range a {
		switch e.(type) {
		case map[string]any, []any:
			return false
		}
		if e != nil {
			if k := reflect.TypeOf(e).Kind(); k == reflect.Map || k == reflect.Slice || k == reflect.Array || k == reflect.Struct {
				return false
			}
		}
	}
	return true
}

func satAdd(a, b int) int {
	if b > math.MaxInt-a {
		return math.MaxInt
	}
	return a + b
}

func satMul(a, b int) int {
	if a != 0 && b > math.MaxInt/a {
		return math.MaxInt
	}
	return a * b
}

// charge spends n steps of the field's budget. It checks before adding so
// that a saturated cost cannot wrap the counter.
func (st *state) charge(n int) error {
	if n > st.set.limits.MaxSteps-st.steps {
		st.steps = st.set.limits.MaxSteps + 1
		return errTooMuchWork
	}
	st.steps += n
	return nil
}

// rangeShortcut answers size, first and last on a range in O(1): they are
// the only filters that make sense on a huge range, and the engine would
// otherwise materialize it to answer them.
func rangeShortcut(name string, in any) (any, bool) {
	r, ok := in.(values.Range)
	if !ok {
		return nil, false
	}
	n := rangeLen(r)
	switch name {
	case "size":
		return n, true
	case "first":
		if n == 0 {
			return nil, true
		}
		return r.Index(0), true
	case "last":
		if n == 0 {
			return nil, true
		}
		return r.Index(n - 1), true
	}
	return nil, false
}

// budgetedFilter wraps one of the engine's standard filters for st's
// renders: the input and arguments are measured and charged before the
// engine converts them (converting a range to []any is what materializes
// it), so an over-budget call fails without allocating.
func budgetedFilter(st *state, name string, fn any) func(in any, args ...any) (any, error) {
	rf := reflect.ValueOf(fn)
	return func(in any, args ...any) (any, error) {
		if err := st.charge(filterCost(name, in, args)); err != nil {
			return nil, err
		}
		if out, ok := rangeShortcut(name, in); ok {
			return out, nil
		}
		call := make([]any, 0, 1+len(args))
		return values.Call(rf, append(append(call, in), args...))
	}
}

// filterTable collects the engine's standard filters by name, so each
// render state can register budgeted copies of them.
type filterTable map[string]any

func (t filterTable) AddFilter(name string, fn any) { t[name] = fn }
