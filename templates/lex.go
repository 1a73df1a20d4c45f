package templates

import (
	"fmt"
	"strconv"
	"strings"
)

// pipeline is one Liquid expression split at its top-level pipes:
// head | name: arg, arg | name.
type pipeline struct {
	head    string
	filters []pipeFilter
}

type pipeFilter struct {
	name string
	args []string // raw argument texts
}

// splitPipeline splits expr outside string literals and brackets. It is
// deliberately forgiving: the engine's parser has the last word on syntax;
// this only needs to find heads, filter names and arguments.
func splitPipeline(expr string) (pipeline, error) {
	parts := splitTop(expr, '|')
	p := pipeline{head: strings.TrimSpace(parts[0])}
	for _, part := range parts[1:] {
		name, args, hasArgs := strings.Cut(part, ":")
		name = strings.TrimSpace(name)
		if !isIdentifier(name) {
			return p, fmt.Errorf("bad filter %q", strings.TrimSpace(part))
		}
		f := pipeFilter{name: name}
		if hasArgs {
			for _, a := range splitTop(args, ',') {
				f.args = append(f.args, strings.TrimSpace(a))
			}
		}
		p.filters = append(p.filters, f)
	}
	return p, nil
}

// splitTop splits s at sep where sep is outside quotes, parentheses and brackets.
func splitTop(s string, sep byte) []string {
	var parts []string
	depth, start := 0, 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '(' || c == '[':
			depth++
		case c == ')' || c == ']':
			depth--
		case c == sep && depth == 0:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// String renders the pipeline back as Liquid.
func (p pipeline) String() string {
	var b strings.Builder
	b.WriteString(p.head)
	for _, f := range p.filters {
		b.WriteString(" | ")
		b.WriteString(f.name)
		if len(f.args) > 0 {
			b.WriteString(": ")
			b.WriteString(strings.Join(f.args, ", "))
		}
	}
	return b.String()
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'):
		case i > 0 && ((c >= '0' && c <= '9') || c == '-'):
		case i == len(s)-1 && i > 0 && c == '?':
		default:
			return false
		}
	}
	return true
}

// reservedIdentifier finds an identifier starting with "__" outside string
// literals: those names belong to the compiler's hidden bindings.
func reservedIdentifier(s string) string {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '_' && i+1 < len(s) && s[i+1] == '_' && (i == 0 || !identByte(s[i-1])):
			j := i
			for j < len(s) && identByte(s[j]) {
				j++
			}
			return s[i:j]
		}
	}
	return ""
}

func identByte(c byte) bool {
	return c == '_' || c == '-' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// checkFilters validates filter names and argument counts at compile time,
// so a typo fails campaign creation rather than every recipient's render.
func checkFilters(p pipeline) error {
	for _, f := range p.filters {
		if def, ok := lookupFilter(f.name); ok {
			if len(f.args) < def.min || len(f.args) > def.max {
				if def.min == def.max {
					return fmt.Errorf("filter %s takes %d argument(s), got %d", f.name, def.min, len(f.args))
				}
				return fmt.Errorf("filter %s takes %d to %d arguments, got %d", f.name, def.min, def.max, len(f.args))
			}
			continue
		}
		if !engineOnlyFilter(f.name) {
			return fmt.Errorf("unknown filter %q", f.name)
		}
	}
	return nil
}

// withState appends the hidden state argument to contextual filters.
func withState(p pipeline) pipeline {
	out := pipeline{head: p.head, filters: make([]pipeFilter, len(p.filters))}
	for i, f := range p.filters {
		if def, ok := lookupFilter(f.name); ok && def.contextual {
			f.args = append(append([]string(nil), f.args...), stateVar)
		}
		out.filters[i] = f
	}
	return out
}

// operand is a literal or a variable path in the fast path.
type operand struct {
	lit  any
	path []string // nil for a literal
}

// parseOperand accepts the fast path's subset: string and number literals,
// true/false/nil, and dotted paths. Anything else (indexes, ranges,
// operators, escapes) makes the field use the engine.
func parseOperand(s string) (operand, bool) {
	if s == "" {
		return operand{}, false
	}
	switch s {
	case "true":
		return operand{lit: true}, true
	case "false":
		return operand{lit: false}, true
	case "nil", "null":
		return operand{}, true
	case "empty", "blank":
		return operand{}, false
	}
	if c := s[0]; c == '"' || c == '\'' {
		if len(s) < 2 || s[len(s)-1] != c {
			return operand{}, false
		}
		body := s[1 : len(s)-1]
		if strings.IndexByte(body, c) >= 0 || strings.IndexByte(body, '\\') >= 0 {
			return operand{}, false
		}
		return operand{lit: body}, true
	}
	if c := s[0]; c == '-' || (c >= '0' && c <= '9') {
		if n, err := strconv.Atoi(s); err == nil {
			return operand{lit: n}, true
		}
		if strings.Count(s, ".") == 1 && !strings.ContainsAny(s, "eE+_xXpP") && s[len(s)-1] != '.' && s[0] != '.' {
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				return operand{lit: f}, true
			}
		}
		return operand{}, false
	}
	path := strings.Split(s, ".")
	for i, seg := range path {
		if !isIdentifier(seg) || strings.HasSuffix(seg, "?") {
			return operand{}, false
		}
		// Collections answer size/first/last; scalars may too. Leave those to the engine.
		if i > 0 && (seg == "size" || seg == "first" || seg == "last") {
			return operand{}, false
		}
	}
	if path[0] == "profile" && len(path) != 2 {
		return operand{}, false
	}
	return operand{path: path}, true
}
