package templates

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/osteele/liquid/parser"
	"github.com/osteele/liquid/render"
)

// field is one compiled template field.
type field struct {
	channel, name string
	max           int
	json          bool

	isConst bool
	konst   string

	segs []segment   // the fast program; nil when the field needs the engine
	node render.Node // the engine program; nil for constants
}

// segment is literal text or one interpolation.
type segment struct {
	text string
	expr *fastExpr
	mode outMode
}

type fastExpr struct {
	head    operand
	filters []fastFilter
	check   string // variable name to require (policy skip, no default filter)
}

type fastFilter struct {
	name string
	def  filterDef
	args []operand
}

// str renders f as a string: constants cost nothing per recipient.
func (f *field) str(st *state) (string, error) {
	if f == nil {
		return "", nil
	}
	if f.isConst {
		return f.konst, nil
	}
	b, err := f.render(st)
	if err != nil || len(b) == 0 {
		return "", err
	}
	return string(b), nil
}

// appendTo renders f onto dst (for []byte destinations the caller reuses).
func (f *field) appendTo(st *state, dst []byte) ([]byte, error) {
	if f == nil {
		return dst, nil
	}
	if f.isConst {
		return append(dst, f.konst...), nil
	}
	b, err := f.render(st)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// render runs the field into st.buf; the result is valid until the next render.
func (f *field) render(st *state) ([]byte, error) {
	st.steps = 0
	st.max = f.max
	b, err := st.buf[:0], error(nil)
	if f.segs != nil {
		b, err = f.renderFast(st, b)
		// A value shape beyond the fast path (a struct, a typed map) hands
		// the field to the engine; the output is the same.
		if errors.Is(err, errNeedEngine) {
			b, err = f.renderEngine(st, b[:0])
		}
	} else {
		b, err = f.renderEngine(st, b)
	}
	st.buf = b
	if err != nil {
		return nil, classify(f.channel, f.name, err)
	}
	if len(b) > f.max {
		return nil, &RenderError{Channel: f.channel, Field: f.name, Reason: ReasonOutputTooLarge, Err: errTooLarge}
	}
	if !utf8.Valid(b) {
		b = appendValidUTF8(nil, b)
		st.buf = b
	}
	if f.json && len(b) > 0 && !json.Valid(b) {
		return nil, &RenderError{Channel: f.channel, Field: f.name, Reason: ReasonInvalidOutput, Err: errors.New("output is not valid JSON")}
	}
	return b, nil
}

func (f *field) renderFast(st *state, b []byte) ([]byte, error) {
	for i := range f.segs {
		sg := &f.segs[i]
		if sg.expr == nil {
			b = append(b, sg.text...)
		} else {
			v, err := sg.expr.eval(st)
			if err != nil {
				return b, err
			}
			if b, err = emit(b, v, sg.mode); err != nil {
				return b, err
			}
		}
		if len(b) > f.max {
			return b, errTooLarge
		}
	}
	return b, nil
}

func (f *field) renderEngine(st *state, b []byte) (out []byte, err error) {
	w := &capWriter{buf: b, max: f.max}
	st.out = w
	defer func() {
		st.out = nil
		// The engine panics on some filter inputs (and on writer errors);
		// a hostile profile must cost one recipient, not the daemon.
		if r := recover(); r != nil {
			out, err = w.buf, fmt.Errorf("render template: %v", r)
		}
	}()
	bindings := map[string]any{
		"profile":  profileValue{st.p},
		"event":    st.event,
		"campaign": st.set.campaign,
		stateVar:   st,
	}
	if rerr := render.Render(f.node, w, bindings, st.engineConfig()); rerr != nil {
		return w.buf, rerr
	}
	if w.overflow {
		return w.buf, errTooLarge
	}
	return w.buf, nil
}

func (e *fastExpr) eval(st *state) (any, error) {
	v, err := st.resolve(e.head)
	if err != nil {
		return nil, err
	}
	if v == nil && e.check != "" {
		return nil, &missingError{name: e.check}
	}
	for i := range e.filters {
		f := &e.filters[i]
		args := st.args[:0]
		for _, a := range f.args {
			av, err := st.resolve(a)
			if err != nil {
				return nil, err
			}
			args = append(args, av)
		}
		st.args = args
		if v, err = invokeFilter(f.name, f.def, st, v, args); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func (st *state) resolve(o operand) (any, error) {
	if o.path == nil {
		return o.lit, nil
	}
	var cur any
	switch o.path[0] {
	case "profile":
		return profileField(st.p, o.path[1]), nil
	case "event":
		if st.event == nil {
			return nil, nil
		}
		cur = st.event
	case "campaign":
		cur = st.set.campaign
	default:
		return nil, nil
	}
	for _, seg := range o.path[1:] {
		switch v := cur.(type) {
		case map[string]any:
			cur = v[seg]
		case nil, string, int, int64, float64, bool:
			return nil, nil
		default:
			return nil, errNeedEngine
		}
	}
	return cur, nil
}

// compileField compiles one field. Errors are collected on c.
func (c *compiler) compileField(name, src string, mode outMode, isJSON bool, maxBytes int) *field {
	f := &field{channel: c.channel, name: name, max: maxBytes, json: isJSON}
	fail := func(line, col int, err error) *field {
		c.errs = append(c.errs, &CompileError{Channel: c.channel, Locale: c.locale, Field: name, Line: line, Column: col, Err: err})
		return nil
	}
	if len(src) > c.limits.MaxSourceBytes {
		return fail(0, 0, fmt.Errorf("template is %d bytes, over the %d byte limit", len(src), c.limits.MaxSourceBytes))
	}
	if !utf8.ValidString(src) {
		return fail(0, 0, errors.New("template is not valid UTF-8"))
	}
	tokens := parser.Scan(src, parser.SourceLoc{LineNo: 1}, nil)
	if line, col, open, ok := unterminated(src, tokens); ok {
		// Liquid passes an unclosed "{{" through as text: the recipient would
		// get "Hi {{ profile.first_name" verbatim. Refuse it at create.
		closing := "}}"
		if open == "{%" {
			closing = "%}"
		}
		return fail(line, col, fmt.Errorf("unterminated %q: no matching %q", open, closing))
	}
	dynamic := false
	for _, t := range tokens {
		if t.Type == parser.ObjTokenType || t.Type == parser.TagTokenType {
			dynamic = true
			break
		}
	}
	if !dynamic {
		if len(src) > maxBytes {
			return fail(0, 0, fmt.Errorf("text is %d bytes, over the %d byte cap", len(src), maxBytes))
		}
		if isJSON && src != "" && !json.Valid([]byte(src)) {
			return fail(0, 0, errors.New("not valid JSON"))
		}
		f.isConst, f.konst = true, src
		return f
	}

	var (
		rewritten   strings.Builder
		placeholder strings.Builder // JSON validation with stand-in values
		segs        []segment
		fast        = true
		hasTags     = false
		inString    = false // JSON: inside a string literal
		escaped     = false
		cursor      = 0
		skipUntil   = "" // inside raw/comment: copy verbatim until this tag
	)
	for _, t := range tokens {
		if t.Type == parser.TrimLeftTokenType || t.Type == parser.TrimRightTokenType {
			fast = false
			continue
		}
		off := cursor
		if i := strings.Index(src[cursor:], t.Source); i >= 0 {
			off = cursor + i
			cursor = off + len(t.Source)
		}
		line, col := t.SourceLoc.LineNo, columnAt(src, off)
		if skipUntil != "" {
			rewritten.WriteString(t.Source)
			if t.Type == parser.TagTokenType && t.Name == skipUntil {
				skipUntil = ""
			}
			continue
		}
		switch t.Type {
		case parser.TextTokenType:
			rewritten.WriteString(t.Source)
			placeholder.WriteString(t.Source)
			segs = append(segs, segment{text: t.Source})
			if isJSON {
				for i := 0; i < len(t.Source); i++ {
					ch := t.Source[i]
					switch {
					case escaped:
						escaped = false
					case inString && ch == '\\':
						escaped = true
					case ch == '"':
						inString = !inString
					}
				}
			}
		case parser.ObjTokenType:
			m := mode
			if isJSON {
				m = modeJSONValue
				placeholder.WriteString("0")
				if inString {
					m = modeJSONString
				}
			}
			if r := reservedIdentifier(t.Args); r != "" {
				return fail(line, col, fmt.Errorf("name %q is reserved", r))
			}
			p, err := splitPipeline(t.Args)
			if err != nil {
				return fail(line, col, err)
			}
			if err := checkFilters(p); err != nil {
				return fail(line, col, err)
			}
			check := ""
			if c.missing == MissingSkip && !p.hasDefault() && isVariable(p.head) {
				// The engine's string literals have no escapes: name the
				// variable without double quotes.
				check = strings.ReplaceAll(p.head, `"`, `'`)
			}
			ep := withState(p)
			if check != "" {
				ep.filters = append([]pipeFilter{{name: checkFilter, args: []string{`"` + check + `"`}}}, ep.filters...)
			}
			ep.filters = append(ep.filters, pipeFilter{name: outFilter, args: []string{stateVar, strconv.Itoa(int(m))}})
			open, closing := delims(t.Source, "{{", "}}")
			rewritten.WriteString(open + " " + ep.String() + pad(t.Source) + " " + closing)
			if fast {
				if e, ok := fastCompile(p, check); ok {
					segs = append(segs, segment{expr: e, mode: m})
				} else {
					fast = false
				}
			}
		case parser.TagTokenType:
			fast, hasTags = false, true
			switch t.Name {
			case "raw":
				skipUntil = "endraw"
				rewritten.WriteString(t.Source)
				continue
			case "comment":
				skipUntil = "endcomment"
				rewritten.WriteString(t.Source)
				continue
			}
			if r := reservedIdentifier(t.Args); r != "" {
				return fail(line, col, fmt.Errorf("name %q is reserved", r))
			}
			args := t.Args
			// Tag arguments are not all pipelines ({% if a | size > 2 %});
			// what does not split cleanly is left to the engine's parser.
			if p, err := splitPipeline(args); err == nil && len(p.filters) > 0 {
				if err := checkFilters(p); err != nil {
					return fail(line, col, err)
				}
				args = withState(p).String()
			}
			open, closing := delims(t.Source, "{%", "%}")
			rewritten.WriteString(open + " " + t.Name + " " + args + pad(t.Source) + " " + closing)
		}
	}
	node, err := compileEngine(c.cfg, rewritten.String())
	if err != nil {
		line, col, msg := locateEngineError(err, src, tokens)
		return fail(line, col, errors.New(msg))
	}
	f.node = node
	if fast {
		f.segs = mergeText(segs)
	}
	if isJSON && !hasTags && !json.Valid([]byte(placeholder.String())) {
		return fail(0, 0, errors.New("not valid JSON (interpolations inside quotes are string contents; outside quotes each is one JSON value)"))
	}
	if err := c.probeBudget(f); err != nil {
		return fail(0, 0, err)
	}
	return f
}

// probeBudget renders f for a recipient with no attributes and no event
// data. Only the budget is judged: a stand-in cannot say whether a variable
// is missing or a filter fits real values, but a template that runs out of
// steps or space with no data at all does so for everyone.
func (c *compiler) probeBudget(f *field) error {
	if c.probe == nil {
		return nil
	}
	_, err := f.render(c.probe)
	var re *RenderError
	if errors.As(err, &re) && (re.Reason == ReasonTooMuchWork || re.Reason == ReasonOutputTooLarge) {
		return fmt.Errorf("check budget on a recipient without data: %w (limits: max_steps %d, %d bytes)", re.Err, c.limits.MaxSteps, f.max)
	}
	return nil
}

// appendValidUTF8 replaces each invalid byte with U+FFFD, as encoding/json
// does, so a value reads the same in a JSON field and a text field.
func appendValidUTF8(dst, b []byte) []byte {
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, "\uFFFD"...)
		} else {
			dst = append(dst, b[:size]...)
		}
		b = b[size:]
	}
	return dst
}

// isVariable tells a variable reference from a literal, which is never missing.
func isVariable(head string) bool {
	if head == "" {
		return false
	}
	switch c := head[0]; {
	case c == '"' || c == '\'' || c == '(' || c == '-' || (c >= '0' && c <= '9'):
		return false
	}
	switch head {
	case "true", "false", "nil", "null", "empty", "blank":
		return false
	}
	return true
}

func (p pipeline) hasDefault() bool {
	for _, f := range p.filters {
		if f.name == "default" {
			return true
		}
	}
	return false
}

func fastCompile(p pipeline, check string) (*fastExpr, bool) {
	head, ok := parseOperand(p.head)
	if !ok {
		return nil, false
	}
	e := &fastExpr{head: head, check: check}
	for _, pf := range p.filters {
		def, ok := lookupFilter(pf.name)
		if !ok {
			return nil, false
		}
		ff := fastFilter{name: pf.name, def: def}
		for _, a := range pf.args {
			op, ok := parseOperand(a)
			if !ok {
				return nil, false
			}
			ff.args = append(ff.args, op)
		}
		e.filters = append(e.filters, ff)
	}
	return e, true
}

func mergeText(segs []segment) []segment {
	out := segs[:0]
	for _, s := range segs {
		if s.expr == nil && len(out) > 0 && out[len(out)-1].expr == nil {
			out[len(out)-1].text += s.text
			continue
		}
		out = append(out, s)
	}
	return out
}

// delims keeps a token's whitespace-control dashes.
func delims(source, open, closing string) (string, string) {
	if strings.HasPrefix(source, open+"-") {
		open += "-"
	}
	if strings.HasSuffix(source, "-"+closing) {
		closing = "-" + closing
	}
	return open, closing
}

// pad keeps line numbers of later tokens stable in the rewritten source.
func pad(source string) string {
	return strings.Repeat("\n", strings.Count(source, "\n"))
}

func columnAt(src string, off int) int {
	start := strings.LastIndexByte(src[:off], '\n') + 1
	return utf8.RuneCountInString(src[start:off]) + 1
}

func compileEngine(cfg render.Config, src string) (node render.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			node, err = nil, fmt.Errorf("parse template: %v", r)
		}
	}()
	n, perr := cfg.Compile(src, parser.SourceLoc{LineNo: 1})
	if perr != nil {
		return nil, perr
	}
	return n, nil
}

// locateEngineError turns the engine's "Liquid error (line N): msg in
// {% tag %}" into a line, a column and a message that quotes the author's
// text, not the compiler's rewrite of it.
func locateEngineError(err error, src string, tokens []parser.Token) (int, int, string) {
	msg := err.Error()
	line := 0
	var le interface{ LineNumber() int }
	if errors.As(err, &le) {
		line = le.LineNumber()
	}
	if i := strings.Index(msg, "): "); strings.HasPrefix(msg, "Liquid error") && i >= 0 {
		msg = msg[i+3:]
	}
	if strings.Contains(msg, stateVar) || strings.Contains(msg, "__") {
		if i := strings.Index(msg, " in "); i >= 0 {
			msg = msg[:i]
		}
		if strings.Contains(msg, "__") {
			msg = "syntax error"
		}
	} else if i := strings.LastIndex(msg, " in {"); i >= 0 {
		msg = msg[:i]
	}
	var found *parser.Token
	col, cursor := 0, 0
	for i := range tokens {
		t := &tokens[i]
		if t.Source == "" {
			continue
		}
		off := cursor
		if j := strings.Index(src[cursor:], t.Source); j >= 0 {
			off = cursor + j
			cursor = off + len(t.Source)
		}
		if t.Type == parser.TextTokenType || (line > 0 && t.SourceLoc.LineNo != line) {
			continue
		}
		named := (t.Type == parser.TagTokenType && t.Name != "" && strings.Contains(msg, t.Name)) ||
			(t.Args != "" && strings.Contains(msg, t.Args))
		if found == nil || named {
			found, col = t, columnAt(src, off)
		}
		if named {
			break
		}
	}
	if found != nil && !strings.Contains(msg, found.Source) {
		msg += " in " + found.Source
	}
	return line, col, msg
}

// unterminated finds a "{{" or "{%" that the scanner left in text because
// nothing closes it (outside raw and comment blocks, where text is verbatim
// by design), and returns where it starts.
func unterminated(src string, tokens []parser.Token) (line, col int, open string, found bool) {
	skipUntil, cursor := "", 0
	for _, t := range tokens {
		off := cursor
		if i := strings.Index(src[cursor:], t.Source); i >= 0 {
			off = cursor + i
			cursor = off + len(t.Source)
		}
		if t.Type == parser.TagTokenType {
			switch {
			case skipUntil != "":
				if t.Name == skipUntil {
					skipUntil = ""
				}
			case t.Name == "raw":
				skipUntil = "endraw"
			case t.Name == "comment":
				skipUntil = "endcomment"
			}
			continue
		}
		if t.Type != parser.TextTokenType || skipUntil != "" {
			continue
		}
		i := strings.Index(t.Source, "{{")
		j := strings.Index(t.Source, "{%")
		if i < 0 || (j >= 0 && j < i) {
			i = j
		}
		if i < 0 {
			continue
		}
		at := off + i
		return t.SourceLoc.LineNo + strings.Count(t.Source[:i], "\n"), columnAt(src, at), t.Source[i : i+2], true
	}
	return 0, 0, "", false
}
