package email

import (
	"bytes"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
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
	return append(ss.appendMailRcpt(b, o), "DATA\r\n"...)
}

// appendMailRcpt appends o's MAIL FROM and RCPT TO lines, for DATA and
// BDAT transactions alike.
func (ss *session) appendMailRcpt(b []byte, o *outMsg) []byte {
	b = append(b, "MAIL FROM:<"...)
	b = append(b, o.from...)
	b = append(b, '>')
	if o.utf8 && ss.smtputf8 {
		b = append(b, " SMTPUTF8"...)
	}
	b = append(b, "\r\nRCPT TO:<"...)
	b = append(b, o.to...)
	return append(b, ">\r\n"...)
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

// With CHUNKING (RFC 3030) as well as PIPELINING, a message needs no 354
// before its content, so a whole group of messages leaves in one write and
// their replies come back together: one write, one wake-up and a few reads
// per group instead of per message, which is what a slow relay (Postfix
// handing each message to cleanup) made expensive:
//
//	C: [RSET] MAIL FROM RCPT TO "BDAT n LAST" <n bytes>  ... × group   (one write)
//	S: [250]  250       250     250 (queued)             ... × group
//
// Each message is still confirmed only by the 250 to its own BDAT LAST.
// Every transaction but the session's first clean one starts with RSET:
// RFC 3030 leaves the state after a refused BDAT indeterminate (Postfix, for
// one, keeps a transaction whose RCPT was refused open and answers the next
// MAIL FROM "503 nested MAIL command"), and the commands of the next message
// are written before that is known.

// appendChunked appends o's transaction: RSET when reset, the envelope and
// "BDAT n LAST" with o's content, un-dot-stuffed (compose stuffs for DATA).
func (ss *session) appendChunked(b []byte, o *outMsg, reset bool) []byte {
	if reset {
		b = append(b, "RSET\r\n"...)
	}
	b = ss.appendMailRcpt(b, o)
	b = append(b, "BDAT "...)
	b = strconv.AppendInt(b, int64(unstuffedLen(o.data)), 10)
	b = append(b, " LAST\r\n"...)
	return appendUnstuffed(b, o.data)
}

// unstuffedLen is the length of data without its dot-stuffing: compose
// doubles the "." of every line that starts with one, so each line start
// with a "." carries exactly one extra byte.
func unstuffedLen(data []byte) int {
	n := len(data) - bytes.Count(data, []byte("\n."))
	if len(data) > 0 && data[0] == '.' {
		n--
	}
	return n
}

// appendUnstuffed appends data with the extra "." of every dot-stuffed line
// removed.
func appendUnstuffed(b, data []byte) []byte {
	if len(data) > 0 && data[0] == '.' {
		data = data[1:]
	}
	for {
		i := bytes.Index(data, []byte("\n."))
		if i < 0 {
			return append(b, data...)
		}
		b = append(b, data[:i+1]...)
		data = data[i+2:]
	}
}

// probe sends RSET on a session taken from the idle pool and reads its
// reply. Content leaves with the envelope when chunking, so the DATA path's
// test (MAIL FROM unanswered, nothing handed over) comes too late to reopen
// a session the server closed while idle; an RSET costs one round trip per
// Send instead.
func (ss *session) probe(timeout time.Duration) *txError {
	ss.wbuf = append(ss.wbuf[:0], "RSET\r\n"...)
	if err := ss.flush(timeout); err != nil {
		return replyErr("RSET", err)
	}
	if _, _, err := ss.c.Text.ReadResponse(250); err != nil {
		te := replyErr("RSET", err)
		te.broken = true
		return te
	}
	ss.dirty = false
	return nil
}

// sendChunked writes the transactions of msgs in one write and reads every
// reply, in order. fail is called with the index in msgs of each message
// that was not accepted; accepted messages count in ss.sent. A message
// whose reply never comes (EOF, reset, timeout) was handed over all the
// same: it fails with that network error, which the pool may retry, and is
// never moved to another session unanswered. After a 421 the replies are
// still read, since a server may go on answering what it had already read
// (the sandbox's go-smtp does), but the session is not used again.
func (ss *session) sendChunked(msgs []*outMsg, timeout time.Duration, fail func(k int, te *txError)) {
	ss.wbuf = ss.wbuf[:0]
	for k, o := range msgs {
		ss.wbuf = ss.appendChunked(ss.wbuf, o, k > 0 || ss.dirty)
	}
	if err := ss.flush(timeout); err != nil {
		te := replyErr("BDAT", err)
		ss.broken = true
		for k := range msgs {
			fail(k, te)
		}
		return
	}
	r := &ss.c.Text.Reader
	for k := range msgs {
		var first *txError
		steps := chunkSteps[:]
		if k == 0 && !ss.dirty {
			steps = steps[1:]
		}
		for _, step := range steps {
			_, _, err := r.ReadResponse(step.code)
			if err == nil {
				continue
			}
			te := replyErr(step.cmd, err)
			if step.cmd == "RSET" && !te.broken {
				// A refused RSET is no verdict on the message, and the
				// session's state is unknown: give up on it.
				te = &txError{err: channels.Transient(channels.ReasonUnavailable, te.err.Code, 0, te.err.Err), broken: true}
			}
			if te.broken {
				ss.broken = true
			}
			var tpe *textproto.Error
			if !errors.As(err, &tpe) {
				// No reply: the server is gone, and whether it queued what
				// was written after this point is unknown.
				if first == nil {
					first = te
				}
				fail(k, first)
				for j := k + 1; j < len(msgs); j++ {
					fail(j, te)
				}
				return
			}
			if first == nil {
				first = te
			}
		}
		if first != nil {
			fail(k, first)
			ss.dirty = true
			continue
		}
		ss.dirty = false
		ss.sent++
	}
}

var chunkSteps = [...]struct {
	cmd  string
	code int
}{{"RSET", 250}, {"MAIL FROM", 250}, {"RCPT TO", 25}, {"BDAT", 250}}
