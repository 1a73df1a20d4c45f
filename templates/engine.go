package templates

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"github.com/osteele/liquid/expressions"
	"github.com/osteele/liquid/filters"
	"github.com/osteele/liquid/render"
	"github.com/osteele/liquid/values"
)

// stateVar is the hidden binding through which the engine's filters and
// tags reach the recipient's render state. Templates cannot name it: the
// compiler rejects identifiers that start with "__".
const stateVar = "__notifyd"

// Internal filters the compiler weaves into rewritten templates.
const (
	outFilter   = "__out" // escapes one interpolation for its context: __out: __notifyd, mode
	checkFilter = "__chk" // missing-variable policy "skip": __chk: "profile.name"
)

// newEngineConfig builds the liquid engine notifyd renders its slow path on:
// the standard tags and filters, with notifyd's filters in place of the
// standard ones, loops that charge the work budget, and no tag that can
// reach the file system.
//
// The engine looks filters up when it renders, not when it compiles, and a
// filter sees no render context; so each render state gets its own config
// whose filters are bound to it and charge its budget (st nil: the config
// templates compile with, whose filters never run).
func newEngineConfig(st *state) render.Config {
	cfg := render.NewConfig()
	std := filterTable{}
	filters.AddStandardFilters(std)
	for name, fn := range std {
		if st == nil {
			cfg.AddFilter(name, fn)
			continue
		}
		cfg.AddFilter(name, budgetedFilter(st, name, fn))
	}

	for _, name := range nativeFilters() {
		def, _ := lookupFilter(name)
		cfg.AddFilter(name, engineFilter(st, name, def))
	}
	cfg.AddFilter(outFilter, func(in any, args ...any) (any, error) {
		if len(args) != 2 {
			return nil, errors.New("internal: __out wants 2 arguments")
		}
		mode, _ := args[1].(int)
		b, err := emit(nil, in, outMode(mode))
		if err != nil {
			return nil, err
		}
		return string(b), nil
	})
	cfg.AddFilter(checkFilter, func(in any, name string) (any, error) {
		if in == nil {
			return nil, &missingError{name: name}
		}
		return in, nil
	})

	// No file system: include and render would read templates from disk.
	forbid := func(name string) {
		cfg.AddTag(name, func(string) (func(io.Writer, render.Context) error, error) {
			return nil, fmt.Errorf("tag %q is not allowed: templates cannot include other files", name)
		})
	}
	forbid("include")
	forbid("render")
	cfg.AddBlock("tablerow").Compiler(func(render.BlockNode) (func(io.Writer, render.Context) error, error) {
		return nil, errors.New("tag \"tablerow\" is not supported; use for")
	})
	cfg.AddBlock("for").Clause("else").Compiler(forCompiler)
	cfg.AddTag("break", func(string) (func(io.Writer, render.Context) error, error) {
		return func(io.Writer, render.Context) error { return errLoopBreak }, nil
	})
	cfg.AddTag("continue", func(string) (func(io.Writer, render.Context) error, error) {
		return func(io.Writer, render.Context) error { return errLoopCont }, nil
	})
	cfg.AddTag("assign", assignCompiler)
	cfg.AddTag("cycle", cycleCompiler)
	cfg.AddBlock("capture").Compiler(captureCompiler)
	cfg.AddBlock("case").Clause("when").Clause("else").Compiler(caseCompiler)
	cfg.AddBlock("if").Clause("else").Clause("elsif").Compiler(ifCompiler(true))
	cfg.AddBlock("unless").Clause("else").Compiler(ifCompiler(false))
	// The parser treats comment and raw specially once they are defined.
	cfg.AddBlock("comment")
	cfg.AddBlock("raw")
	return cfg
}

// The standard tags package cannot be used piecemeal (its blocks cannot be
// redefined), so the control-flow tags below follow
// github.com/osteele/liquid/tags (MIT) closely.

func ifCompiler(polarity bool) render.BlockCompiler {
	return func(node render.BlockNode) (func(io.Writer, render.Context) error, error) {
		type branch struct {
			test expressions.Expression
			body *render.BlockNode
		}
		expr, err := expressions.Parse(node.Args)
		if err != nil {
			return nil, err
		}
		if !polarity {
			expr = expressions.Not(expr)
		}
		branches := []branch{{expr, &node}}
		for i, c := range node.Clauses {
			test := expressions.Constant(true)
			switch c.Name {
			case "else":
				if i != len(node.Clauses)-1 {
					return nil, errors.New("else must be the last branch")
				}
			case "elsif":
				t, err := expressions.Parse(c.Args)
				if err != nil {
					return nil, err
				}
				test = t
			}
			branches = append(branches, branch{test, c})
		}
		return func(w io.Writer, ctx render.Context) error {
			for _, b := range branches {
				v, err := ctx.Evaluate(b.test)
				if err != nil {
					return err
				}
				if v != nil && v != false {
					return ctx.RenderBlock(w, b.body)
				}
			}
			return nil
		}, nil
	}
}

func caseCompiler(node render.BlockNode) (func(io.Writer, render.Context) error, error) {
	expr, err := expressions.Parse(node.Args)
	if err != nil {
		return nil, err
	}
	type clause struct {
		exprs []expressions.Expression // nil: else
		body  *render.BlockNode
	}
	var clauses []clause
	for _, c := range node.Clauses {
		if c.Name != "when" {
			clauses = append(clauses, clause{body: c})
			continue
		}
		stmt, err := expressions.ParseStatement(expressions.WhenStatementSelector, c.Args)
		if err != nil {
			return nil, err
		}
		clauses = append(clauses, clause{exprs: stmt.When.Exprs, body: c})
	}
	return func(w io.Writer, ctx render.Context) error {
		sel, err := ctx.Evaluate(expr)
		if err != nil {
			return err
		}
		for _, c := range clauses {
			if c.exprs == nil {
				return ctx.RenderBlock(w, c.body)
			}
			for _, e := range c.exprs {
				v, err := ctx.Evaluate(e)
				if err != nil {
					return err
				}
				if values.Equal(sel, v) {
					return ctx.RenderBlock(w, c.body)
				}
			}
		}
		return nil
	}, nil
}

func cycleCompiler(args string) (func(io.Writer, render.Context) error, error) {
	stmt, err := expressions.ParseStatement(expressions.CycleStatementSelector, args)
	if err != nil {
		return nil, err
	}
	group, items := stmt.Cycle.Group, stmt.Cycle.Values
	return func(w io.Writer, ctx render.Context) error {
		loop, _ := ctx.Get("forloop").(map[string]any)
		cycles, _ := loop[".cycles"].(map[string]int)
		if cycles == nil || len(items) == 0 {
			return errors.New("cycle must be within a for loop")
		}
		n := cycles[group]
		cycles[group] = n + 1
		_, err := io.WriteString(w, items[n%len(items)])
		return err
	}, nil
}

// engineFilter adapts a notifyd filter to the engine's calling convention.
// Contextual filters also get the render state as a trailing argument that
// the compiler appended; it is the state the filter is bound to.
func engineFilter(bound *state, name string, def filterDef) func(in any, args ...any) (any, error) {
	return func(in any, args ...any) (any, error) {
		st := bound
		if def.contextual && len(args) > 0 {
			if s, ok := args[len(args)-1].(*state); ok {
				st, args = s, args[:len(args)-1]
			}
		}
		if st == nil {
			return nil, fmt.Errorf("filter %s: internal: no render state", name)
		}
		return invokeFilter(name, def, st, in, args)
	}
}

func stateOf(ctx render.Context) (*state, error) {
	st, ok := ctx.Get(stateVar).(*state)
	if !ok {
		return nil, errors.New("internal: no render state")
	}
	return st, nil
}

// capWriter collects a field's output and stops growing at max; the loop
// tag checks it so an overflowing loop stops instead of spinning.
type capWriter struct {
	buf      []byte
	max      int
	overflow bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	if !w.overflow {
		if len(w.buf)+len(p) > w.max {
			w.overflow = true
		} else {
			w.buf = append(w.buf, p...)
		}
	}
	// Never fail: the engine panics when its writer returns an error.
	return len(p), nil
}

func (w *capWriter) WriteString(s string) (int, error) {
	if !w.overflow {
		if len(w.buf)+len(s) > w.max {
			w.overflow = true
		} else {
			w.buf = append(w.buf, s...)
		}
	}
	return len(s), nil
}

func assignCompiler(source string) (func(io.Writer, render.Context) error, error) {
	stmt, err := expressions.ParseStatement(expressions.AssignStatementSelector, source)
	if err != nil {
		return nil, err
	}
	name, expr := stmt.Assignment.Variable, stmt.Assignment.ValueFn
	return func(_ io.Writer, ctx render.Context) error {
		v, err := ctx.Evaluate(expr)
		if err != nil {
			return err
		}
		// Doubling a variable in a loop is the cheapest way to exhaust memory.
		if s, ok := v.(string); ok && len(s) > maxValueBytes {
			return errTooLarge
		}
		ctx.Set(name, v)
		return nil
	}, nil
}

func captureCompiler(node render.BlockNode) (func(io.Writer, render.Context) error, error) {
	name := strings.TrimSpace(node.Args)
	if !isIdentifier(name) {
		return nil, fmt.Errorf("capture wants a variable name, got %q", name)
	}
	return func(_ io.Writer, ctx render.Context) error {
		st, err := stateOf(ctx)
		if err != nil {
			return err
		}
		w := &capWriter{max: min(st.max, maxValueBytes)}
		if err := ctx.RenderChildren(w); err != nil {
			return err
		}
		if w.overflow {
			return errTooLarge
		}
		ctx.Set(name, string(w.buf))
		return nil
	}, nil
}

// forCompiler replaces the engine's loop: every iteration charges the
// recipient's step budget, and offset/limit/reversed are index arithmetic,
// so (1..1000000000) reversed never materializes.
func forCompiler(node render.BlockNode) (func(io.Writer, render.Context) error, error) {
	stmt, err := expressions.ParseStatement(expressions.LoopStatementSelector, node.Args)
	if err != nil {
		return nil, err
	}
	loop := stmt.Loop
	if len(node.Clauses) > 1 {
		return nil, errors.New("for accepts at most one else clause")
	}
	return func(w io.Writer, ctx render.Context) error {
		st, err := stateOf(ctx)
		if err != nil {
			return err
		}
		val, err := ctx.Evaluate(loop.Expr)
		if err != nil {
			return err
		}
		n, at := iterate(val)
		lo, hi := 0, n
		if loop.Offset != nil {
			v, err := ctx.Evaluate(loop.Offset)
			if err != nil {
				return err
			}
			off, err := argInt([]any{v}, 0, 0)
			if err != nil {
				return fmt.Errorf("loop offset: %w", err)
			}
			lo = min(max(off, 0), n)
		}
		if loop.Limit != nil {
			v, err := ctx.Evaluate(loop.Limit)
			if err != nil {
				return err
			}
			lim, err := argInt([]any{v}, 0, 0)
			if err != nil {
				return fmt.Errorf("loop limit: %w", err)
			}
			if lim >= 0 {
				hi = min(lo+lim, n)
			}
		}
		count := hi - lo
		if count <= 0 {
			if len(node.Clauses) == 1 && node.Clauses[0].Name == "else" {
				return ctx.RenderBlock(w, node.Clauses[0])
			}
			return nil
		}
		index := func(i int) any {
			if loop.Reversed {
				// The engine reverses before offset/limit; keep its order.
				return at(n - 1 - (lo + i))
			}
			return at(lo + i)
		}
		defer func(item, forloop any) {
			ctx.Set(loop.Variable, item)
			ctx.Set("forloop", forloop)
		}(ctx.Get(loop.Variable), ctx.Get("forloop"))
		cycles := map[string]int{}
		for i := range count {
			if err := st.step(); err != nil {
				return err
			}
			if st.out != nil && st.out.overflow {
				return errTooLarge
			}
			ctx.Set(loop.Variable, index(i))
			ctx.Set("forloop", map[string]any{
				"first": i == 0, "last": i == count-1,
				"index": i + 1, "index0": i, "rindex": count - i, "rindex0": count - i - 1,
				"length": count, ".cycles": cycles,
			})
			if err := ctx.RenderChildren(w); err != nil {
				switch {
				case hasCause(err, errLoopBreak):
					return nil
				case hasCause(err, errLoopCont):
					continue
				}
				return err
			}
		}
		return nil
	}, nil
}

func hasCause(err, target error) bool {
	for _, c := range causeOf(err) {
		if c == target {
			return true
		}
	}
	return false
}

// iterate returns a loop source's length and element accessor; anything
// that is not a collection loops zero times, as in the engine.
func iterate(v any) (int, func(int) any) {
	switch v := v.(type) {
	case nil:
		return 0, nil
	case values.Range:
		return max(v.Len(), 0), v.Index
	case []any:
		return len(v), func(i int) any { return v[i] }
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return len(keys), func(i int) any { return []any{keys[i], v[keys[i]]} }
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		return rv.Len(), func(i int) any { return rv.Index(i).Interface() }
	}
	return 0, nil
}
