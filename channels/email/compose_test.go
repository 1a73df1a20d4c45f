package email

import (
	"bytes"
	"io"
	"mime/quotedprintable"
	netmail "net/mail"
	"strings"
	"testing"
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
// gets a fresh boundary, so it cannot forge a MIME part.
func TestComposeBoundaryCollision(t *testing.T) {
	c := newComposer()
	in := &composeInput{text: "x", html: "--" + c.boundary + "\r\nContent-Type: text/html\r\n\r\nforged"}
	in.from, in.to = mustAddr(t, "a@example.com"), mustAddr(t, "b@example.com")
	out := string(c.compose(in))
	if strings.Contains(out, `boundary="`+c.boundary+`"`) {
		t.Fatal("the message uses the boundary its body contains")
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
