package email

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	netmail "net/mail"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAppendQP(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // decoded, with LF line ends as CRLF; empty: in with CRLF
	}{
		{name: "plain short line", in: "Hello"},
		{name: "equals sign", in: "a=b"},
		{name: "trailing space and tab", in: "end \nnext\t\nlast "},
		{name: "utf-8", in: "Grüße — 日本語"},
		{name: "long line is soft-broken", in: strings.Repeat("abcdefghij", 30)},
		{name: "long line of encoded bytes", in: strings.Repeat("é", 100)},
		{name: "CRLF kept, lone CR encoded", in: "one\r\ntwo\rthree"},
		{name: "leading dots", in: ".\n.hidden\n..two"},
		{name: "empty", in: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc := appendQP(nil, tc.in)
			for _, line := range strings.Split(string(enc), "\r\n") {
				if len(line) > 76 {
					t.Fatalf("line of %d characters: %q", len(line), line)
				}
				if strings.HasSuffix(line, " ") || strings.HasSuffix(line, "\t") {
					t.Fatalf("line ends in white space: %q", line)
				}
			}
			if bytes.ContainsAny(bytes.ReplaceAll(enc, []byte("\r\n"), nil), "\r\n") {
				t.Fatalf("bare CR or LF in %q", enc)
			}
			dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(enc)))
			if err != nil {
				t.Fatalf("decode %q: %v", enc, err)
			}
			want := strings.ReplaceAll(strings.ReplaceAll(tc.in, "\r\n", "\n"), "\n", "\r\n")
			if string(dec) != want {
				t.Fatalf("round trip: got %q, want %q (encoded %q)", dec, want, enc)
			}
		})
	}
}

func TestDotStuff(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{".a\r\n", "..a\r\n"},
		{"a\r\n.\r\n.b\r\n", "a\r\n..\r\n..b\r\n"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := string(dotStuff([]byte(tc.in))); got != tc.want {
			t.Errorf("dotStuff(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A body that quotes the Sender's boundary (every recipient can read it)
// cannot forge a MIME part: the boundary starts with "=_", which quoted-
// printable never writes, so a parser still finds exactly the two parts,
// each decoding to its body.
func TestComposeBoundaryCollision(t *testing.T) {
	c := newComposer()
	forged := "--" + c.boundary + "\r\nContent-Type: text/html\r\n\r\nforged\r\n--" + c.boundary + "--"
	for _, in := range []*composeInput{
		{text: "x", html: forged},
		{text: forged, html: "<p>y</p>"},
		{text: strings.Repeat("a", 73) + "--" + c.boundary, html: "<p>y</p>"}, // quoted across a soft break
	} {
		from, err := c.parseFrom("a@example.com")
		if err != nil {
			t.Fatal(err)
		}
		in.from, in.to = from, mustAddr(t, "b@example.com")
		msg, err := netmail.ReadMessage(bytes.NewReader(c.compose(in)))
		if err != nil {
			t.Fatal(err)
		}
		_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		if err != nil || params["boundary"] != c.boundary {
			t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
		}
		mr := multipart.NewReader(msg.Body, params["boundary"])
		var got []string
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(quotedprintable.NewReader(p))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(b))
		}
		if len(got) != 2 || got[0] != in.text || got[1] != in.html {
			t.Fatalf("parts %q, want [%q %q]", got, in.text, in.html)
		}
	}
}

func mustAddr(t *testing.T, s string) *netmail.Address {
	t.Helper()
	a, err := netmail.ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// dotStuff doubles a "." at the start of a line (RFC 5321 4.5.2): the
// reference for appendQPDot, which stuffs while it encodes.
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

// appendQPBytewise is the byte-at-a-time encoder appendQP replaced: the
// reference its output must equal.
func appendQPBytewise(b []byte, s string) []byte {
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
			continue
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

var qpCases = []string{
	"", "Hello", ".", ".hidden", "a=b", "end \nnext\t\nlast ", "Grüße — 日本語",
	strings.Repeat("abcdefghij", 30), strings.Repeat(".bcdefghij", 30), strings.Repeat("é", 100),
	"one\r\ntwo\rthree", ".\n.hidden\n..two", "a\r\r\n", "a \r", "a \r\n.b", strings.Repeat("x", 75) + ".tail",
	strings.Repeat("x", 76), strings.Repeat("x", 77), strings.Repeat("x", 74) + "=.", "\n\n.\n", "\t", " ",
	"<p>" + strings.Repeat("Our autumn collection is in: jackets, boots and scarves. ", 5) + "</p>\n" + strings.Repeat("line .\n", 3),
}

// TestAppendQPMatchesBytewise: the run-copying encoder writes exactly what
// the byte-wise one wrote, and appendQPDot exactly that, dot-stuffed.
func TestAppendQPMatchesBytewise(t *testing.T) {
	for _, in := range qpCases {
		checkQP(t, in)
	}
}

func FuzzAppendQP(f *testing.F) {
	for i, in := range qpCases {
		f.Add(in, qpCases[(i+1)%len(qpCases)])
	}
	f.Add("Hello Ann\n.line\n"+strings.Repeat("z", 80)+"\nend", "Hello Bob\n.line\n"+strings.Repeat("z", 80)+"\nend")
	f.Fuzz(func(t *testing.T, a, b string) {
		checkQP(t, a)
		checkQPCache(t, a, b)
	})
}

// TestQPCacheReusesSharedLines: bodies that differ in their first line
// reuse the cached encoding of the rest, and every output equals the
// reference encoding whatever the previous body was.
func TestQPCacheReusesSharedLines(t *testing.T) {
	tail := "\n" + strings.Repeat("Our autumn collection is in: jackets, boots and scarves at member prices.\n.dot\n", 8) + "end"
	checkQPCache(t, "Hello Ann"+tail, "Hello Bob"+tail, "Hi"+tail, "Hello Ann"+tail+"\n", strings.Repeat("x", 76)+tail,
		"x", "", "y\n", "Hello Ann"+tail)
	var q qpCache
	q.appendQPDot(nil, "Hello Ann"+tail)
	first := q.last.Load()
	q.appendQPDot(nil, "Hello Bob"+tail)
	if q.last.Load() != first {
		t.Fatal("a body sharing all but its first line replaced the cache entry instead of reusing it")
	}
}

func checkQPCache(t *testing.T, bodies ...string) {
	t.Helper()
	var q qpCache
	for range 2 { // each body after every other, the cache warm
		for _, in := range bodies {
			want := dotStuff(appendQPBytewise(nil, in))
			if got := q.appendQPDot([]byte("x"), in); !bytes.Equal(got[1:], want) || got[0] != 'x' {
				t.Fatalf("qpCache.appendQPDot(%q) = %q, want %q", in, got[1:], want)
			}
		}
	}
}

func checkQP(t *testing.T, in string) {
	want := appendQPBytewise(nil, in)
	if got := appendQP(nil, in); !bytes.Equal(got, want) {
		t.Fatalf("appendQP(%q) = %q, byte-wise %q", in, got, want)
	}
	if got, want := appendQPDot(nil, in), dotStuff(append([]byte(nil), want...)); !bytes.Equal(got, want) {
		t.Fatalf("appendQPDot(%q) = %q, want %q", in, got, want)
	}
}

// plainAddress lets build skip netmail.ParseAddress: only where the parser
// would return the address unchanged, and Address.String write it in angle
// brackets as it is.
func TestPlainAddress(t *testing.T) {
	tests := []struct {
		in    string
		plain bool
	}{
		{"member@example.org", true},
		{"first.last+tag@mail.example.co.uk", true},
		{"o'hara/x=y@example.org", true},
		{"a@b", true},
		{"", false},
		{"@example.org", false},
		{"member@", false},
		{"Member <member@example.org>", false},
		{`"quoted local"@example.org`, false},
		{"a..b@example.org", false},
		{".a@example.org", false},
		{"a@example..org", false},
		{"a@[127.0.0.1]", false},
		{"jürgen@example.org", false},
		{"a@b@c", false},
		{"member@example.org ", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := plainAddress(tc.in); got != tc.plain {
				t.Fatalf("plainAddress(%q) = %v, want %v", tc.in, got, tc.plain)
			}
			checkPlainAddress(t, tc.in)
		})
	}
}

func FuzzPlainAddress(f *testing.F) {
	for _, s := range []string{"member@example.org", "a.b@c.d", "x@y", `"a"@b`, "a b@c"} {
		f.Add(s)
	}
	f.Fuzz(checkPlainAddress)
}

func checkPlainAddress(t *testing.T, s string) {
	if !plainAddress(s) {
		return
	}
	a, err := netmail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s || a.String() != "<"+s+">" {
		t.Fatalf("plainAddress(%q) but ParseAddress = %+v, %v", s, a, err)
	}
}

// The cached Date/Expires formatting writes what time.Format writes, also
// across seconds and zones.
func TestDateCache(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skip("no tz database:", err)
	}
	base := time.Date(2026, 3, 29, 0, 59, 59, 0, time.UTC) // Paris moves to summer time at 01:00 UTC
	var d dateCache
	for _, tm := range []time.Time{
		base, base.Add(300 * time.Millisecond), base.Add(time.Second), base.Add(time.Second).In(paris),
		base.In(paris), base.Add(time.Second), base.Add(time.Hour).In(time.FixedZone("", -3*3600-1800)),
	} {
		got := string(d.appendDate([]byte("x"), tm))
		if want := "x" + tm.Format(time.RFC1123Z); got != want {
			t.Fatalf("appendDate(%v) = %q, want %q", tm, got, want)
		}
	}
}

// TestAppendQWordsMatchesMime holds the Subject's encoder to the standard
// library's, byte for byte, including where a long value is split into
// several words (never inside a character) and bytes that are not UTF-8.
func TestAppendQWordsMatchesMime(t *testing.T) {
	tests := []struct{ name, in string }{
		{"one accented name", "José, our autumn news"},
		{"specials", "Ünïcode = a?b_c\tend"},
		{"control byte", "Ä\x01b"},
		{"invalid UTF-8", "caf\xe9 \xff\xfe"},
		{"only non-ASCII", "日本語のお知らせ"},
		{"split at 63 encoded characters", strings.Repeat("a", 60) + "é" + strings.Repeat("b", 10)},
		{"split before a 4-byte character", strings.Repeat("x", 61) + "😀" + "y"},
		{"several words", strings.Repeat("Grüße aus München, ", 12)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := mime.QEncoding.Encode("UTF-8", tc.in)
			got := string(appendHeaderValue([]byte("Subject: "), tc.in))
			if got != "Subject: "+want {
				t.Fatalf("appendHeaderValue(%q)\n got %q\nwant %q", tc.in, got, "Subject: "+want)
			}
			dec, err := new(mime.WordDecoder).DecodeHeader(want)
			if err != nil || (utf8.ValidString(tc.in) && dec != tc.in) {
				t.Fatalf("decoding %q = %q, %v; want %q", want, dec, err, tc.in)
			}
		})
	}
}

// TestQPCacheSplitHint: the remembered split is always the first cached
// line of the shared tail, whether the hint was right, too late or too
// early for the next body, so the cache copies as much as it can.
func TestQPCacheSplitHint(t *testing.T) {
	line := "Our autumn collection is in: jackets, boots and scarves at member prices.\n"
	tail := strings.Repeat(line, 8) + "end"
	var q qpCache
	q.appendQPDot(nil, "Hello Ann\nsame\n"+tail)
	tests := []struct {
		name, body string
		split      int32
	}{
		{"first line differs", "Hello Bob\nsame\n" + tail, 1},
		{"same lines differ again", "Hello Cy\nsame\n" + tail, 1},
		{"two lines differ", "Hello Di\nother\n" + tail, 2},
		{"one line differs again", "Hello Ed\nsame\n" + tail, 1},
		{"three lines differ", "Hello Flo\nother\n" + strings.Repeat("x", 10) + "\n" + tail[len(line):], 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := dotStuff(appendQPBytewise(nil, tc.body))
			if got := q.appendQPDot(nil, tc.body); !bytes.Equal(got, want) {
				t.Fatalf("appendQPDot(%q) = %q, want %q", tc.body, got, want)
			}
			if got := q.split.Load(); got != tc.split {
				t.Fatalf("split = %d, want %d", got, tc.split)
			}
		})
	}
}
