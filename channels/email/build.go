package email

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	netmail "net/mail"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/tracking"
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

// build turns a channels.Message into the bytes of an SMTP transaction. Its
// errors are already classified: a malformed recipient is a dead address (it
// can never be delivered, so the store should prune it), anything else
// malformed is invalid. The checks are the ones go-mail's Msg applied.
func (s *Sender) build(m *channels.Message, now time.Time) (*outMsg, string, *channels.Error) {
	invalid := func(format string, args ...any) (*outMsg, string, *channels.Error) {
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
	in := composeInput{date: now, subject: c.Subject, text: c.Text, html: c.HTML}
	fromAddr, err := s.composer.parseFrom(from)
	if err != nil {
		return invalid("parse From address: %w", err)
	}
	in.from = fromAddr
	if m.To == "" {
		return nil, "", channels.Permanent(channels.ReasonDeadAddress, "invalid_address", errors.New("build mail: empty recipient address"))
	}
	var to *netmail.Address
	if plainAddress(m.To) {
		// What ParseAddress returns for a bare dot-atom address, without
		// its parser (a microsecond per message into smtp-sink).
		to, in.toPlain = &netmail.Address{Address: m.To}, true
	} else if to, err = netmail.ParseAddress(m.To); err != nil {
		return nil, "", channels.Permanent(channels.ReasonDeadAddress, "invalid_address", fmt.Errorf("build mail: parse recipient address: %w", err))
	}
	in.to = to
	if c.ReplyTo != "" {
		if in.replyTo, err = netmail.ParseAddress(c.ReplyTo); err != nil {
			return invalid("parse Reply-To address: %w", err)
		}
	}
	// The provider ID is the Message-ID in angle brackets: one string for
	// both, built in one concatenation.
	var pid string
	if key, domain := s.messageIDParts(m, fromAddr.addr.Address); key != "" {
		pid = "<" + key + "@" + domain + ">"
	} else {
		pid = "<" + randomMessageID(fromAddr.addr.Address) + ">"
	}
	in.messageID = pid[1 : len(pid)-1]

	if c.ListUnsubscribe != "" {
		if c.ListUnsubscribeOneClick {
			// RFC 8058 requires an https URI for the one-click POST.
			u, err := url.Parse(strings.TrimSpace(c.ListUnsubscribe))
			if err != nil || u.Scheme != "https" || u.Host == "" {
				return invalid("List-Unsubscribe one-click needs an https URL")
			}
			in.listUnsub, in.oneClick = u.String(), true
		} else {
			in.listUnsub = strings.TrimPrefix(strings.TrimSuffix(strings.TrimSpace(c.ListUnsubscribe), ">"), "<")
		}
	} else if c.ListUnsubscribeOneClick {
		return invalid("List-Unsubscribe-Post without a List-Unsubscribe URL")
	}
	if s.links != nil && m.Track != 0 {
		release := s.track(m, &in)
		defer release()
	}
	if !m.Deadline.IsZero() {
		// RFC 4021 Expires: SMTP has no TTL, but some clients and
		// archivers honour this header.
		in.expires = m.Deadline.UTC()
	}
	if len(c.Headers) > 0 {
		in.headers = make([]header, 0, len(c.Headers))
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
			in.headers = append(in.headers, header{ck, v})
		}
		slices.SortFunc(in.headers, func(a, b header) int { return strings.Compare(a.key, b.key) })
	}
	out := &outMsg{from: fromAddr.addr.Address, to: to.Address, data: s.composer.compose(&in)}
	out.utf8 = !isASCII(out.from) || !isASCII(out.to)
	return out, pid, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// randomMessageID is the Message-ID of a message without an ID or
// idempotency key (never the case for pipeline messages).
func randomMessageID(from string) string {
	var r [16]byte
	_, _ = rand.Read(r[:])
	domain := "notifyd.invalid"
	if _, d, ok := strings.Cut(from, "@"); ok && isDotAtom(d) {
		domain = d
	}
	return hex.EncodeToString(r[:]) + "@" + domain
}

// messageID is "<key>@<domain>" without the brackets. The key is the
// message's IdempotencyKey (falling back to its ID) when it is valid
// dot-atom text, otherwise a hash of it, so a re-send after a crash carries
// the same Message-ID and receivers can collapse the duplicate.
func (s *Sender) messageID(m *channels.Message, from string) string {
	key, domain := s.messageIDParts(m, from)
	if key == "" {
		return ""
	}
	return key + "@" + domain
}

// messageIDParts is messageID's key and domain; key is empty when the
// message has neither an IdempotencyKey nor an ID.
func (s *Sender) messageIDParts(m *channels.Message, from string) (key, domain string) {
	key = m.IdempotencyKey
	if key == "" {
		key = m.ID
	}
	if key == "" {
		return "", ""
	}
	domain = s.cfg.MessageIDDomain
	if domain == "" {
		// from is the bare address (already parsed).
		if _, d, ok := strings.Cut(from, "@"); ok {
			domain = d
		}
	}
	if domain == "" || !isDotAtom(domain) {
		domain = "notifyd.invalid"
	}
	if !isDotAtom(key) || len(key) > 200 {
		sum := sha256.Sum256([]byte(key))
		key = hex.EncodeToString(sum[:16])
	}
	return key, domain
}

// plainAddress reports whether s is a bare addr-spec whose local part and
// domain are both dot-atom-text: netmail.ParseAddress would return it as
// is, and Address.String would write it as "<" + s + ">".
func plainAddress(s string) bool {
	at := strings.LastIndexByte(s, '@')
	return at > 0 && isDotAtom(s[:at]) && isDotAtom(s[at+1:])
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

// track applies the campaign's tracking opt-in to in: one signed token per
// message, the one-click unsubscribe headers, and the HTML rewritten into
// a pooled buffer (its click suffixes are signed once per campaign, see
// tracking.Links). The returned func gives the buffer back once the
// message is composed.
func (s *Sender) track(m *channels.Message, in *composeInput) (release func()) {
	tok := s.links.Token(tracking.Ref{Campaign: m.Campaign, MessageID: m.ID, UserID: m.UserID, UserKey: m.UserKey, Channel: channels.Email})
	if m.Track&channels.TrackUnsubscribe != 0 {
		in.listUnsub, in.oneClick = s.links.UnsubscribeURL(tok), true
	}
	if in.html == "" {
		return func() {}
	}
	bp := bufPool.Get().(*[]byte)
	b := s.links.AppendHTML((*bp)[:0], in.html, tracking.RewriteOptions{Token: tok, Campaign: m.Campaign,
		Opens: m.Track&channels.TrackOpens != 0, Clicks: m.Track&channels.TrackClicks != 0, Unsubscribe: m.Track&channels.TrackUnsubscribe != 0})
	in.html = unsafe.String(unsafe.SliceData(b), len(b)) // compose copies it out before release
	return func() {
		*bp = b[:0]
		bufPool.Put(bp)
	}
}
