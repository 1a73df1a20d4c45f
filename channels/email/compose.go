package email

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"mime"
	netmail "net/mail"
	"sync"
	"time"
	"unicode/utf8"
)

// outMsg is one message ready for the wire: envelope addresses and the
// dot-stuffed DATA content (CRLF line ends, without the final ".").
type outMsg struct {
	from, to string // bare addresses for MAIL FROM and RCPT TO
	utf8     bool   // an address needs SMTPUTF8
	data     []byte
}

// bufPool recycles DATA buffers: a message is written once into a pooled
// buffer and copied once into the session's write buffer.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

func (o *outMsg) release() {
	if o == nil || o.data == nil {
		return
	}
	b := o.data[:0]
	o.data = nil
	bufPool.Put(&b)
}

// composer writes RFC 5322 / MIME messages directly into a byte buffer. It
// replaced go-mail's Msg on the hot path: Msg keeps headers in maps, parses
// and re-formats every address, picks a random boundary and streams each
// part through several writers, for every recipient (about 60% of the
// sender's CPU per message before the change). What is constant per Sender
// (the boundary and the part headers) is computed once here; what is
// constant per campaign (the From address) is parsed once per distinct value.
type composer struct {
	boundary string
	ctAlt    []byte // Content-Type header of the multipart/alternative body
	partText []byte // "--boundary" + part headers of the text/plain part
	partHTML []byte // "--boundary" + part headers of the text/html part
	closing  []byte // "--boundary--"

	mu       sync.Mutex
	lastFrom string
	lastAddr *netmail.Address
}

func newComposer() *composer {
	var r [12]byte
	_, _ = rand.Read(r[:])
	c := &composer{}
	c.setBoundary("notifyd-" + hex.EncodeToString(r[:]))
	return c
}

func (c *composer) setBoundary(b string) {
	c.boundary = b
	c.ctAlt = []byte("Content-Type: multipart/alternative;\r\n boundary=\"" + b + "\"\r\n")
	part := func(ct string) []byte {
		return []byte("--" + b + "\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Type: " + ct + "; charset=UTF-8\r\n\r\n")
	}
	c.partText = part("text/plain")
	c.partHTML = part("text/html")
	c.closing = []byte("--" + b + "--\r\n")
}

// parseFrom parses the sender address, remembering the last one: it is the
// same for every message of a campaign.
func (c *composer) parseFrom(from string) (*netmail.Address, error) {
	c.mu.Lock()
	if from == c.lastFrom && c.lastAddr != nil {
		a := c.lastAddr
		c.mu.Unlock()
		return a, nil
	}
	c.mu.Unlock()
	a, err := netmail.ParseAddress(from)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.lastFrom, c.lastAddr = from, a
	c.mu.Unlock()
	return a, nil
}

// header is one extra header, already validated and canonicalised.
type header struct{ key, value string }

// composeInput is what build hands the composer.
type composeInput struct {
	date               time.Time
	from, to, replyTo  *netmail.Address
	subject, messageID string
	listUnsub          string
	oneClick           bool
	expires            time.Time
	headers            []header
	text, html         string
}

// compose writes the message into a pooled buffer and dot-stuffs it.
func (c *composer) compose(in *composeInput) []byte {
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, "Date: "...)
	b = in.date.AppendFormat(b, time.RFC1123Z)
	b = append(b, "\r\nFrom: "...)
	b = append(b, in.from.String()...)
	b = append(b, "\r\nTo: "...)
	b = append(b, in.to.String()...)
	if in.replyTo != nil {
		b = append(b, "\r\nReply-To: "...)
		b = append(b, in.replyTo.String()...)
	}
	b = append(b, "\r\nSubject: "...)
	b = appendHeaderValue(b, in.subject)
	b = append(b, "\r\nMessage-ID: <"...)
	b = append(b, in.messageID...)
	b = append(b, ">\r\n"...)
	if in.listUnsub != "" {
		b = append(b, "List-Unsubscribe: <"...)
		b = append(b, in.listUnsub...)
		b = append(b, ">\r\n"...)
		if in.oneClick {
			b = append(b, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"...)
		}
	}
	if !in.expires.IsZero() {
		b = append(b, "Expires: "...)
		b = in.expires.AppendFormat(b, time.RFC1123Z)
		b = append(b, "\r\n"...)
	}
	for _, h := range in.headers {
		b = append(b, h.key...)
		b = append(b, ": "...)
		b = appendHeaderValue(b, h.value)
		b = append(b, "\r\n"...)
	}
	b = append(b, "MIME-Version: 1.0\r\n"...)
	parts := c
	if in.text != "" && in.html != "" && (bodyHas(in.text, c.boundary) || bodyHas(in.html, c.boundary)) {
		// A body that quotes the Sender's boundary (it is visible to every
		// recipient) must not split the message: use a fresh one.
		parts = newComposer()
	}
	switch {
	case in.text != "" && in.html != "":
		b = append(b, parts.ctAlt...)
		b = append(b, "\r\n"...)
		b = append(b, parts.partText...)
		b = appendQP(b, in.text)
		b = append(b, "\r\n"...)
		b = append(b, parts.partHTML...)
		b = appendQP(b, in.html)
		b = append(b, "\r\n"...)
		b = append(b, parts.closing...)
	case in.html != "":
		b = append(b, "Content-Transfer-Encoding: quoted-printable\r\nContent-Type: text/html; charset=UTF-8\r\n\r\n"...)
		b = appendQP(b, in.html)
		b = append(b, "\r\n"...)
	default:
		b = append(b, "Content-Transfer-Encoding: quoted-printable\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"...)
		b = appendQP(b, in.text)
		b = append(b, "\r\n"...)
	}
	return dotStuff(b)
}

func bodyHas(body, boundary string) bool {
	return len(body) >= len(boundary) && bytes.Contains([]byte(body), []byte(boundary))
}

// appendHeaderValue writes v as is when it is printable ASCII, otherwise as
// RFC 2047 encoded words.
func appendHeaderValue(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if v[i] >= utf8.RuneSelf {
			return append(b, mime.QEncoding.Encode("UTF-8", v)...)
		}
	}
	return append(b, v...)
}

const hexUpper = "0123456789ABCDEF"

// appendQP appends s quoted-printable encoded (RFC 2045 6.7): line ends
// become CRLF, lines are soft-broken at 76 characters, white space before a
// line end and every byte outside printable ASCII (and "=") is encoded. It
// replaced mime/quotedprintable's Writer, which costs an allocation and a
// call per byte.
func appendQP(b []byte, s string) []byte {
	if isPlainQP(s) {
		return append(b, s...)
	}
	lineLen := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\n' {
			b = append(b, '\r', '\n')
			lineLen = 0
			continue
		}
		if c == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			continue // CRLF: written at the LF
		}
		var enc bool
		if c == ' ' || c == '\t' {
			enc = i+1 == len(s) || s[i+1] == '\n' || s[i+1] == '\r' && i+2 < len(s) && s[i+2] == '\n'
		} else {
			enc = c < ' ' || c > '~' || c == '='
		}
		n := 1
		if enc {
			n = 3
		}
		if lineLen+n > 75 {
			b = append(b, '=', '\r', '\n')
			lineLen = 0
		}
		if enc {
			b = append(b, '=', hexUpper[c>>4], hexUpper[c&15])
		} else {
			b = append(b, c)
		}
		lineLen += n
	}
	return b
}

// isPlainQP reports whether s is its own quoted-printable encoding: one line
// of at most 76 printable ASCII characters other than '=', not ending in
// white space.
func isPlainQP(s string) bool {
	if len(s) > 76 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '=' {
			return false
		}
	}
	return s == "" || (s[len(s)-1] != ' ' && s[len(s)-1] != '\t')
}

// dotStuff doubles a "." at the start of a line (RFC 5321 4.5.2). Quoted-
// printable lines may start with one; headers and boundaries never do.
func dotStuff(b []byte) []byte {
	if len(b) > 0 && b[0] == '.' || bytes.Contains(b, []byte("\n.")) {
		out := make([]byte, 0, len(b)+16)
		if b[0] == '.' {
			out = append(out, '.')
		}
		for {
			i := bytes.Index(b, []byte("\n."))
			if i < 0 {
				out = append(out, b...)
				break
			}
			out = append(out, b[:i+1]...)
			out = append(out, '.')
			b = b[i+1:]
		}
		return out
	}
	return b
}
