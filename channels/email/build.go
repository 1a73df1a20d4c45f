package email

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	netmail "net/mail"
	"net/textproto"
	"strings"
	"time"

	mail "github.com/wneessen/go-mail"

	"github.com/notifyd/notifyd/channels"
)

// reservedHeader reports headers the Sender sets from typed fields; a
// custom header may not override them (a second From or Content-Type would
// make the message ambiguous to filters).
func reservedHeader(k string) bool {
	switch k {
	case "From", "To", "Cc", "Bcc", "Sender", "Reply-To", "Subject", "Date", "Message-Id", "Mime-Version",
		"Content-Type", "Content-Transfer-Encoding", "Return-Path", "List-Unsubscribe", "List-Unsubscribe-Post", "Expires":
		return true
	}
	return false
}

// build turns a channels.Message into a go-mail Msg. Its errors are already
// classified: a malformed recipient is a dead address (it can never be
// delivered, so the store should prune it), anything else malformed is
// invalid.
func (s *Sender) build(m *channels.Message, now time.Time) (*mail.Msg, string, *channels.Error) {
	invalid := func(format string, args ...any) (*mail.Msg, string, *channels.Error) {
		return nil, "", channels.Permanent(channels.ReasonInvalid, "", fmt.Errorf("build mail: "+format, args...))
	}
	if m == nil || m.Mail == nil {
		return invalid("message has no Mail content")
	}
	c := m.Mail
	from := c.From
	if from == "" {
		from = s.cfg.From
	}
	if from == "" {
		return invalid("no From address in the message or the config")
	}
	for _, f := range [...]struct{ name, value string }{
		{"From", from}, {"Reply-To", c.ReplyTo}, {"Subject", c.Subject}, {"List-Unsubscribe", c.ListUnsubscribe}, {"To", m.To},
	} {
		if err := checkHeaderValue(f.name, f.value); err != nil {
			return invalid("%w", err)
		}
	}
	if c.Text == "" && c.HTML == "" {
		return invalid("neither a text nor an HTML body")
	}
	msg := mail.NewMsg(mail.WithNoDefaultUserAgent())
	if err := msg.From(from); err != nil {
		return invalid("parse From address: %w", unwrapAll(err))
	}
	if m.To == "" {
		return nil, "", channels.Permanent(channels.ReasonDeadAddress, "invalid_address", errors.New("build mail: empty recipient address"))
	}
	if _, err := netmail.ParseAddress(m.To); err != nil {
		return nil, "", channels.Permanent(channels.ReasonDeadAddress, "invalid_address", fmt.Errorf("build mail: parse recipient address: %w", err))
	}
	if err := msg.To(m.To); err != nil {
		return nil, "", channels.Permanent(channels.ReasonDeadAddress, "invalid_address", fmt.Errorf("build mail: recipient address: %w", unwrapAll(err)))
	}
	if c.ReplyTo != "" {
		if err := msg.ReplyTo(c.ReplyTo); err != nil {
			return invalid("parse Reply-To address: %w", unwrapAll(err))
		}
	}
	msg.Subject(c.Subject)
	msg.SetDateWithValue(now)

	id := s.messageID(m, from)
	if id != "" {
		msg.SetMessageIDWithValue(id)
	} else {
		msg.SetMessageID()
	}

	if c.ListUnsubscribe != "" {
		if c.ListUnsubscribeOneClick {
			// RFC 8058 requires an https URI for the one-click POST.
			if err := msg.SetListUnsubscribeOneClick(c.ListUnsubscribe); err != nil {
				return invalid("List-Unsubscribe one-click needs an https URL")
			}
		} else {
			msg.SetListUnsubscribe(c.ListUnsubscribe)
		}
	} else if c.ListUnsubscribeOneClick {
		return invalid("List-Unsubscribe-Post without a List-Unsubscribe URL")
	}
	if !m.Deadline.IsZero() {
		// RFC 4021 Expires: SMTP has no TTL, but some clients and
		// archivers honour this header.
		msg.SetGenHeader(mail.Header("Expires"), m.Deadline.UTC().Format(time.RFC1123Z))
	}
	for k, v := range c.Headers {
		if !validFieldName(k) {
			return invalid("header name %q is not a valid RFC 5322 field name", k)
		}
		if err := checkHeaderValue(k, v); err != nil {
			return invalid("%w", err)
		}
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if reservedHeader(ck) {
			return invalid("header %s is set by notifyd and cannot be overridden", ck)
		}
		msg.SetGenHeader(mail.Header(ck), v)
	}

	switch {
	case c.Text != "" && c.HTML != "":
		msg.SetBodyString(mail.TypeTextPlain, c.Text)
		msg.AddAlternativeString(mail.TypeTextHTML, c.HTML)
	case c.HTML != "":
		msg.SetBodyString(mail.TypeTextHTML, c.HTML)
	default:
		msg.SetBodyString(mail.TypeTextPlain, c.Text)
	}
	return msg, msg.GetMessageID(), nil
}

// messageID is "<key>@<domain>" without the brackets. The key is the
// message's IdempotencyKey (falling back to its ID) when it is valid
// dot-atom text, otherwise a hash of it, so a re-send after a crash carries
// the same Message-ID and receivers can collapse the duplicate.
func (s *Sender) messageID(m *channels.Message, from string) string {
	key := m.IdempotencyKey
	if key == "" {
		key = m.ID
	}
	if key == "" {
		return ""
	}
	domain := s.cfg.MessageIDDomain
	if domain == "" {
		if a, err := netmail.ParseAddress(from); err == nil {
			if _, d, ok := strings.Cut(a.Address, "@"); ok {
				domain = d
			}
		}
	}
	if domain == "" || !isDotAtom(domain) {
		domain = "notifyd.invalid"
	}
	if !isDotAtom(key) || len(key) > 200 {
		sum := sha256.Sum256([]byte(key))
		key = hex.EncodeToString(sum[:16])
	}
	return key + "@" + domain
}

// isDotAtom reports whether s is RFC 5322 dot-atom-text.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validFieldName reports whether k is an RFC 5322 field name: printable
// US-ASCII except colon.
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// checkHeaderValue refuses CR, LF and NUL: go-mail passes ASCII header values
// through unencoded, so a newline would start a header of the attacker's
// choosing.
func checkHeaderValue(name, v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return fmt.Errorf("header %s contains CR, LF or NUL", name)
	}
	return nil
}

// unwrapAll strips go-mail's wrapping, which repeats the input address, down
// to the parser's reason.
func unwrapAll(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}
