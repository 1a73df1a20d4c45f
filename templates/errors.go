package templates

import (
	"errors"
	"fmt"

	"github.com/osteele/liquid/expressions"
)

// Reason classifies a render failure. The pipeline maps every one of them to
// the skip reason render_error and keeps Reason for the delivery log.
type Reason string

// Reasons a render fails.
const (
	ReasonMissingVariable Reason = "missing_variable" // policy "skip" and a referenced variable has no value
	ReasonOutputTooLarge  Reason = "output_too_large" // a field (or an assigned/captured value) passed its cap
	ReasonTooMuchWork     Reason = "too_much_work"    // loops ran past the per-render step budget
	ReasonFilterError     Reason = "filter_error"     // a filter or tag failed on this recipient's values
	ReasonInvalidOutput   Reason = "invalid_output"   // the rendered field is unusable (invalid JSON, badge not an integer, empty SMS)
)

// RenderError is a per-recipient render failure. Read it with errors.As.
type RenderError struct {
	Channel  string // "push", "email", "sms", "webpush", "webhook"
	Field    string // e.g. "body", "headers.X-Campaign"
	Reason   Reason
	Variable string // the variable's name for ReasonMissingVariable
	Err      error
}

func (e *RenderError) Error() string {
	s := "render " + e.Channel + "." + e.Field + ": " + string(e.Reason)
	if e.Variable != "" {
		s += " " + e.Variable
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *RenderError) Unwrap() error { return e.Err }

// CompileError locates one problem in a campaign's templates. Compile returns
// all of them joined with errors.Join; read each with errors.As or by
// unwrapping the join.
type CompileError struct {
	Channel string
	Locale  string // "" for the default content
	Field   string
	Line    int // 1-based; 0 when the problem is not in the template text
	Column  int // 1-based, in characters; 0 when unknown
	Err     error
}

func (e *CompileError) Error() string {
	where := e.Channel + "." + e.Field
	if e.Locale != "" {
		where = "locales." + e.Locale + "." + where
	}
	if e.Line > 0 {
		where += fmt.Sprintf(" line %d", e.Line)
		if e.Column > 0 {
			where += fmt.Sprintf(" column %d", e.Column)
		}
	}
	return "compile " + where + ": " + e.Err.Error()
}

func (e *CompileError) Unwrap() error { return e.Err }

// constError lets sentinel errors be constants rather than package variables.
type constError string

func (e constError) Error() string { return string(e) }

// Errors raised inside filters and tags; they travel through the liquid
// engine's error wrapping and are recovered with causeOf.
const (
	errTooMuchWork = constError("template work budget exhausted")
	errTooLarge    = constError("output cap exceeded")
	errLoopBreak   = constError("break outside a loop")
	errLoopCont    = constError("continue outside a loop")
	errNeedEngine  = constError("value needs the liquid engine")
	errNoContent   = constError("campaign has no content for this channel")
)

// missingError carries a missing variable's name out of a filter.
type missingError struct{ name string }

func (e *missingError) Error() string { return "missing variable " + e.name }

// causeOf unwraps both the standard Unwrap chain and the liquid engine's
// Cause() chain, which does not implement Unwrap.
func causeOf(err error) []error {
	var chain []error
	for err != nil && len(chain) < 32 {
		chain = append(chain, err)
		switch e := err.(type) {
		case expressions.FilterError:
			if e.Err != nil {
				err = e.Err
				continue
			}
		case *expressions.FilterError:
			if e.Err != nil {
				err = e.Err
				continue
			}
		case interface{ Cause() error }:
			if c := e.Cause(); c != nil && c != err {
				err = c
				continue
			}
		}
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	return chain
}

// classify turns an error from either render path into a *RenderError.
func classify(channel, field string, err error) *RenderError {
	re := &RenderError{Channel: channel, Field: field, Reason: ReasonFilterError, Err: err}
	for _, c := range causeOf(err) {
		var me *missingError
		switch {
		case errors.As(c, &me):
			re.Reason, re.Variable, re.Err = ReasonMissingVariable, me.name, nil
			return re
		case c == errTooMuchWork:
			re.Reason, re.Err = ReasonTooMuchWork, errTooMuchWork
			return re
		case c == errTooLarge:
			re.Reason, re.Err = ReasonOutputTooLarge, errTooLarge
			return re
		}
	}
	return re
}
