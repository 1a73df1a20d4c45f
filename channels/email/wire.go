package email

import (
	"errors"
	"fmt"
	"net/textproto"
	"strings"
	"time"

	"github.com/notifyd/notifyd/channels"
)

// The mail transaction is written on go-mail's session (its exported
// textproto.Conn, which go-mail documents as the place for extensions): go-mail
// dials, upgrades to TLS and authenticates, but its Client sends one command
// per round trip and has no PIPELINING (RFC 2920). When the server offers
// PIPELINING, a message costs one round trip:
//
//	C: <body of message n> "." MAIL FROM RCPT TO DATA   (one write)
//	S: 250 (message n queued)  250 250 354              (message n+1 may follow)
//
// Message n is confirmed only after its own 250 reply. Without PIPELINING
// every command waits for its reply, as go-mail would.

// txError is a failed command: its reply (or the I/O error), the command, and
// whether the session can carry another message.
type txError struct {
	err    *channels.Error
	broken bool
	// stale: MAIL FROM got no reply at all, so nothing was handed over (a
	// pooled session the server closed while idle).
	stale bool
}

// replyErr classifies the reply to cmd. A read or write error, or a 421,
// leaves the session unusable.
func replyErr(cmd string, err error) *txError {
	var tpe *textproto.Error
	if !errors.As(err, &tpe) {
		return &txError{err: channels.Transient(channels.ReasonNetwork, "", 0, fmt.Errorf("send mail: %s: %w", cmd, err)), broken: true}
	}
	esc, _, _ := strings.Cut(tpe.Msg, " ")
	if !looksEnhanced(esc) {
		esc = ""
	}
	ce := classifyReply(tpe.Code, esc, cmd == "RCPT TO", fmt.Errorf("send mail: %s: %w", cmd, err))
	return &txError{err: ce, broken: tpe.Code == 421}
}

// appendEnvelope appends MAIL FROM, RCPT TO and DATA for o.
func (ss *session) appendEnvelope(b []byte, o *outMsg) []byte {
	b = append(b, "MAIL FROM:<"...)
	b = append(b, o.from...)
	b = append(b, '>')
	if o.utf8 && ss.smtputf8 {
		b = append(b, " SMTPUTF8"...)
	}
	b = append(b, "\r\nRCPT TO:<"...)
	b = append(b, o.to...)
	return append(b, ">\r\nDATA\r\n"...)
}

// flush writes the session's buffer in one write, under a fresh deadline.
func (ss *session) flush(timeout time.Duration) error {
	_ = ss.raw.SetDeadline(time.Now().Add(timeout))
	w := ss.c.Text.W
	if _, err := w.Write(ss.wbuf); err != nil {
		return err
	}
	ss.wbuf = ss.wbuf[:0]
	return w.Flush()
}

// envelope sends MAIL FROM, RCPT TO and DATA for o (appended after whatever
// is already in the write buffer when pipelining) and reads their replies.
// nil means the server answered 354: the session is inside DATA for o.
func (ss *session) envelope(o *outMsg, timeout time.Duration) *txError {
	if o.utf8 && !ss.smtputf8 {
		return &txError{err: channels.Permanent(channels.ReasonDeadAddress, "invalid_address",
			errors.New("send mail: address needs SMTPUTF8, which the server does not offer"))}
	}
	if !ss.pipelining {
		return ss.envelopeStepwise(o, timeout)
	}
	ss.wbuf = ss.appendEnvelope(ss.wbuf, o)
	if err := ss.flush(timeout); err != nil {
		te := replyErr("MAIL FROM", err)
		te.stale = true
		return te
	}
	return ss.readEnvelope()
}

// readEnvelope reads the three pipelined envelope replies. All three are
// read whatever the first says, so the reply stream stays in step.
func (ss *session) readEnvelope() *txError {
	r := &ss.c.Text.Reader
	var first *txError
	mailOK := false
	for _, step := range [...]struct {
		cmd  string
		code int
	}{{"MAIL FROM", 250}, {"RCPT TO", 25}, {"DATA", 354}} {
		code, _, err := r.ReadResponse(step.code)
		var tpe *textproto.Error
		if err != nil && !errors.As(err, &tpe) {
			te := replyErr(step.cmd, err) // no reply at all: broken
			te.stale = step.cmd == "MAIL FROM"
			return te
		}
		switch {
		case err != nil && first == nil:
			first = replyErr(step.cmd, err)
		case err == nil && step.cmd == "MAIL FROM":
			mailOK = true
		}
		if step.cmd == "DATA" && code == 354 && first != nil {
			// The server opened DATA although an earlier command failed
			// (RFC 2920 forbids it): nothing can end DATA without
			// delivering, so drop the session.
			first.broken = true
			return first
		}
	}
	if first != nil && mailOK && !first.broken {
		// The transaction MAIL FROM opened is still open on the server.
		if err := ss.c.Reset(); err != nil {
			first.broken = true
		}
	}
	return first
}

// envelopeStepwise is the envelope for servers without PIPELINING.
func (ss *session) envelopeStepwise(o *outMsg, timeout time.Duration) *txError {
	env := ss.appendEnvelope(ss.wbuf[:0], o)
	ss.wbuf = env[:0]
	r := &ss.c.Text.Reader
	mailOK := false
	for _, step := range [...]struct {
		cmd  string
		code int
	}{{"MAIL FROM", 250}, {"RCPT TO", 25}, {"DATA", 354}} {
		i := strings.Index(string(env), "\r\n") + 2
		ss.wbuf = append(ss.wbuf[:0], env[:i]...)
		env = env[i:]
		if err := ss.flush(timeout); err != nil {
			te := replyErr(step.cmd, err)
			te.stale = !mailOK
			return te
		}
		if _, _, err := r.ReadResponse(step.code); err != nil {
			te := replyErr(step.cmd, err)
			te.stale = !mailOK && te.broken && te.err.Code == ""
			if mailOK && !te.broken {
				if rerr := ss.c.Reset(); rerr != nil {
					te.broken = true
				}
			}
			return te
		}
		mailOK = true
	}
	return nil
}

// finish sends o's content and the end-of-data mark, followed, when next is
// not nil, by next's envelope in the same write, and reads o's reply. The
// caller then reads next's envelope replies with readEnvelope.
func (ss *session) finish(o, next *outMsg, timeout time.Duration) *txError {
	ss.wbuf = append(ss.wbuf, o.data...)
	ss.wbuf = append(ss.wbuf, ".\r\n"...)
	if next != nil {
		ss.wbuf = ss.appendEnvelope(ss.wbuf, next)
	}
	if err := ss.flush(timeout); err != nil {
		return replyErr("DATA", err)
	}
	if _, _, err := ss.c.Text.ReadResponse(250); err != nil {
		// A refused message ends its transaction: no RSET needed.
		return replyErr("DATA", err)
	}
	ss.sent++
	return nil
}
