package email

import (
	"crypto/rand"
	"encoding/hex"
	netmail "net/mail"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
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

	// lastFrom is the last sender parsed: the same for every message of a
	// campaign, so neither parsed nor formatted again, and read without a lock.
	lastFrom atomic.Pointer[parsedFrom]

	// The encoded bodies of the last message, reused for the lines a
	// message shares with it (see qpCache).
	textQP, htmlQP qpCache

	// The last Date and Expires values formatted: the same for every
	// message of a second (Date) or of a campaign (Expires, its deadline).
	date, expires dateCache
}

// dateCache keeps the last time formatted as RFC 1123 with a numeric zone
// (time.Format costs about 0.7 µs, on every message). Safe for concurrent
// use: entries are immutable and swapped whole.
type dateCache struct{ last atomic.Pointer[formattedDate] }

type formattedDate struct {
	sec int64
	loc *time.Location
	s   []byte
}

func (d *dateCache) appendDate(b []byte, t time.Time) []byte {
	sec, loc := t.Unix(), t.Location()
	if p := d.last.Load(); p != nil && p.sec == sec && p.loc == loc {
		return append(b, p.s...)
	}
	s := t.AppendFormat(nil, time.RFC1123Z)
	d.last.Store(&formattedDate{sec: sec, loc: loc, s: s})
	return append(b, s...)
}

// parsedFrom is a From value, its parsed address and its header form.
type parsedFrom struct {
	raw    string
	addr   *netmail.Address
	header string
}

func newComposer() *composer {
	var r [12]byte
	_, _ = rand.Read(r[:])
	c := &composer{}
	c.setBoundary("=_notifyd-" + hex.EncodeToString(r[:]))
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
func (c *composer) parseFrom(from string) (*parsedFrom, error) {
	if p := c.lastFrom.Load(); p != nil && p.raw == from {
		return p, nil
	}
	a, err := netmail.ParseAddress(from)
	if err != nil {
		return nil, err
	}
	p := &parsedFrom{raw: from, addr: a, header: a.String()}
	c.lastFrom.Store(p)
	return p, nil
}

// header is one extra header, already validated and canonicalised.
type header struct{ key, value string }

// composeInput is what build hands the composer.
type composeInput struct {
	date               time.Time
	from               *parsedFrom
	to, replyTo        *netmail.Address
	toPlain            bool // to is a bare dot-atom address (see plainAddress)
	subject, messageID string
	listUnsub          string
	oneClick           bool
	expires            time.Time
	headers            []header
	text, html         string
}

// compose writes the message into a pooled buffer, dot-stuffed for DATA.
func (c *composer) compose(in *composeInput) []byte {
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, "Date: "...)
	b = c.date.appendDate(b, in.date)
	b = append(b, "\r\nFrom: "...)
	b = append(b, in.from.header...)
	b = append(b, "\r\nTo: "...)
	if in.toPlain {
		b = append(b, '<')
		b = append(b, in.to.Address...)
		b = append(b, '>')
	} else {
		b = append(b, in.to.String()...)
	}
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
		b = c.expires.appendDate(b, in.expires)
		b = append(b, "\r\n"...)
	}
	for _, h := range in.headers {
		b = append(b, h.key...)
		b = append(b, ": "...)
		b = appendHeaderValue(b, h.value)
		b = append(b, "\r\n"...)
	}
	b = append(b, "MIME-Version: 1.0\r\n"...)
	// Both parts are quoted-printable, whose output never contains "=_"
	// (an "=" is always followed by two hex digits or a line end), and the
	// boundary starts with "=_": no body can contain it, whatever it quotes,
	// so the bodies need no search for it.
	switch {
	case in.text != "" && in.html != "":
		b = append(b, c.ctAlt...)
		b = append(b, "\r\n"...)
		b = append(b, c.partText...)
		b = c.textQP.appendQPDot(b, in.text)
		b = append(b, "\r\n"...)
		b = append(b, c.partHTML...)
		b = c.htmlQP.appendQPDot(b, in.html)
		b = append(b, "\r\n"...)
		b = append(b, c.closing...)
	case in.html != "":
		b = append(b, "Content-Transfer-Encoding: quoted-printable\r\nContent-Type: text/html; charset=UTF-8\r\n\r\n"...)
		b = c.htmlQP.appendQPDot(b, in.html)
		b = append(b, "\r\n"...)
	default:
		b = append(b, "Content-Transfer-Encoding: quoted-printable\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"...)
		b = c.textQP.appendQPDot(b, in.text)
		b = append(b, "\r\n"...)
	}
	// Only the bodies' lines can start with "." (headers are single lines
	// that start with a field name): appendQPDot has stuffed them.
	return b
}

// appendHeaderValue writes v as is when it is printable ASCII, otherwise as
// RFC 2047 encoded words.
func appendHeaderValue(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if v[i] >= utf8.RuneSelf {
			return appendQWords(b, v)
		}
	}
	return append(b, v...)
}

// appendQWords appends v as RFC 2047 "Q" encoded words in UTF-8, byte for
// byte what mime.QEncoding.Encode("UTF-8", v) returns (a test holds it to
// that), without its builder and string: a personalised Subject with a
// non-ASCII name is encoded for every recipient.
func appendQWords(b []byte, v string) []byte {
	const (
		open    = "=?UTF-8?q?"
		maxWord = 75 - len(open) - len("?=") // RFC 2047 2: an encoded word is at most 75 characters
	)
	b = append(b, open...)
	wordLen := 0
	for i := 0; i < len(v); {
		c := v[i]
		n, encLen := 1, 1
		if c < ' ' || c > '~' || c == '=' || c == '?' || c == '_' {
			// A character's bytes stay in one word (RFC 2047 5.3).
			_, n = utf8.DecodeRuneInString(v[i:])
			encLen = 3 * n
		}
		if wordLen+encLen > maxWord {
			b = append(b, "?= "...)
			b = append(b, open...)
			wordLen = 0
		}
		for _, c := range []byte(v[i : i+n]) {
			switch {
			case c == ' ':
				b = append(b, '_')
			case c >= '!' && c <= '~' && c != '=' && c != '?' && c != '_':
				b = append(b, c)
			default:
				b = append(b, '=', hexUpper[c>>4], hexUpper[c&15])
			}
		}
		wordLen += encLen
		i += n
	}
	return append(b, "?="...)
}

const hexUpper = "0123456789ABCDEF"

// appendQP appends s quoted-printable encoded (RFC 2045 6.7): line ends
// become CRLF, lines are soft-broken at 76 characters, white space before a
// line end and every byte outside printable ASCII (and "=") is encoded. It
// replaced mime/quotedprintable's Writer, which costs an allocation and a
// call per byte.
func appendQP(b []byte, s string) []byte { return appendQPBody(b, s, false) }

// appendQPDot is appendQP followed by SMTP dot-stuffing (RFC 5321 4.5.2) of
// its lines, in the same pass: a body is the only part of a message whose
// lines may start with ".", so the message needs no second scan.
func appendQPDot(b []byte, s string) []byte { return appendQPBody(b, s, true) }

func appendQPBody(b []byte, s string, stuff bool) []byte {
	if isPlainQP(s) {
		if stuff && s != "" && s[0] == '.' {
			b = append(b, '.')
		}
		return append(b, s...)
	}
	for len(s) > 0 {
		line, rest, nl := strings.Cut(s, "\n")
		if nl {
			line = strings.TrimSuffix(line, "\r") // CRLF: written below
		}
		b = appendQPLine(b, line, stuff)
		if nl {
			b = append(b, '\r', '\n')
		}
		s = rest
	}
	return b
}

// appendQPLine encodes one line (without its line end). The common line of a
// newsletter, printable ASCII without "=" and not ending in white space, is
// copied in runs of 75 characters with soft breaks between them instead of
// byte by byte: it made quoted-printable the largest CPU cost of composing
// (20% of the email path's CPU, measured with notifyd bench email).
func appendQPLine(b []byte, line string, stuff bool) []byte {
	const maxLine = 75 // characters before a soft break's "="
	if plainQPLine(line) {
		for {
			chunk := line[:min(len(line), maxLine)]
			if stuff && chunk != "" && chunk[0] == '.' {
				b = append(b, '.')
			}
			b = append(b, chunk...)
			line = line[len(chunk):]
			if line == "" {
				return b
			}
			b = append(b, '=', '\r', '\n')
		}
	}
	lineLen := 0
	for i := 0; i < len(line); i++ {
		c := line[i]
		var enc bool
		if c == ' ' || c == '\t' {
			enc = i+1 == len(line)
		} else {
			enc = c < ' ' || c > '~' || c == '='
		}
		n := 1
		if enc {
			n = 3
		}
		if lineLen+n > maxLine {
			b = append(b, '=', '\r', '\n')
			lineLen = 0
		}
		if enc {
			b = append(b, '=', hexUpper[c>>4], hexUpper[c&15])
		} else {
			if stuff && lineLen == 0 && c == '.' {
				b = append(b, '.')
			}
			b = append(b, c)
		}
		lineLen += n
	}
	return b
}

// plainQPLine reports whether line needs no encoding: printable ASCII other
// than "=", not ending in white space.
func plainQPLine(line string) bool {
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < ' ' || c > '~' || c == '=' {
			return false
		}
	}
	return line == "" || (line[len(line)-1] != ' ' && line[len(line)-1] != '\t')
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

// qpCache keeps the last body it encoded (quoted-printable, dot-stuffed)
// with the offsets of its lines. A campaign's bodies differ per recipient
// only where the template interpolates, usually near the top ("Hello
// {{ first_name }}"); the lines after the last difference are the same for
// every recipient, and both encodings work line by line, so their encoding
// is copied from the cache instead of being redone. Finding the shared tail
// costs a few memory comparisons (a binary search over the cached line
// starts), not a pass over every byte. Safe for concurrent use: entries are
// immutable and swapped whole.
type qpCache struct {
	last atomic.Pointer[qpEncoded]
	// split is the cached line at which the last message's shared tail
	// began: a campaign's messages differ in the same lines, so it is
	// checked first, with two comparisons instead of a binary search's
	// several (each up to the whole body).
	split atomic.Int32
}

type qpEncoded struct {
	body  string
	enc   []byte
	lines []int // start of each line in body (lines[0] == 0)
	encAt []int // where each line's encoding starts in enc
}

func (q *qpCache) appendQPDot(b []byte, s string) []byte {
	if p := q.last.Load(); p != nil {
		if s == p.body {
			return append(b, p.enc...)
		}
		// The first cached line from which the rest of the cached body ends
		// s at a line start of s; if line i qualifies, so do those after it.
		shared := func(i int) bool {
			tail := p.body[p.lines[i]:]
			n := len(s) - len(tail)
			return n > 0 && s[n-1] == '\n' && s[n:] == tail
		}
		i := int(q.split.Load())
		if i >= len(p.lines) || !shared(i) || (i > 0 && shared(i-1)) {
			i = sort.Search(len(p.lines), shared)
			q.split.Store(int32(i))
		}
		if i < len(p.lines) {
			if n := len(s) - (len(p.body) - p.lines[i]); 2*n <= len(s) {
				b = appendQPBody(b, s[:n], true)
				return append(b, p.enc[p.encAt[i]:]...)
			}
		}
	}
	if !strings.Contains(s, "\n") {
		// One line: nothing to share between recipients (and the whole-
		// string fast path of appendQPBody may encode it differently from
		// a line of a longer body).
		return appendQPBody(b, s, true)
	}
	e := &qpEncoded{body: s, enc: make([]byte, 0, len(s)+len(s)/16)}
	for start := 0; start < len(s); {
		e.lines = append(e.lines, start)
		e.encAt = append(e.encAt, len(e.enc))
		line, _, nl := strings.Cut(s[start:], "\n")
		next := start + len(line)
		if nl {
			next++
			line = strings.TrimSuffix(line, "\r")
		}
		e.enc = appendQPLine(e.enc, line, true)
		if nl {
			e.enc = append(e.enc, '\r', '\n')
		}
		start = next
	}
	q.last.Store(e)
	return append(b, e.enc...)
}
