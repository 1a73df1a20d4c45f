package h1

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"strconv"

	"golang.org/x/net/http/httpguts"
)

// Reading answers.
//
// http.ReadResponse was about a tenth of the webhook path's CPU per request
// (notifyd bench webhook --cpuprofile): a textproto.Reader, one string per
// header line, a Status string, a body wrapper with its own mutex. The answers
// webhook receivers send are nearly always the same few lines: a status, a
// Date, a Content-Length or nothing, a Content-Type. readHead parses exactly
// that shape from the bytes already in the connection's buffer, with one
// string for the whole head (keys and values are substrings of it), and hands
// anything else — 1xx, Transfer-Encoding, Trailer, obs-folded or odd lines,
// duplicate or unparsable Content-Length, a head longer than the buffer, a
// HEAD request — to http.ReadResponse, unread. A differential test
// (response_test.go) holds the lean path to ReadResponse's results.

var crlfcrlf = []byte("\r\n\r\n")

// leanResponse is an answer with its body and, for the usual few header
// lines, its header values in one allocation.
type leanResponse struct {
	resp http.Response
	body respBody
	vals [leanHeaderLines]string
}

// leanHeaderLines is how many header lines an answer may have for their
// values to live in its leanResponse (Go's net/http sends two to four).
const leanHeaderLines = 6

// readHead parses the response head at the start of br's buffer without
// consuming anything unless it succeeds. ok false means "use
// http.ReadResponse" (not an error: that parser reports any). n is the
// body's framing: its length, or -1 when it runs until the connection closes.
func readHead(br *bufio.Reader, method string) (lr *leanResponse, n int64, ok bool) {
	if method == http.MethodHead {
		return nil, 0, false
	}
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 {
		return nil, 0, false
	}
	head := string(buf[:end+2]) // every line with its CRLF
	line, rest, _ := cutLine(head)
	// "HTTP/1.x DDD[ reason]"
	if len(line) < 12 || line[:7] != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' || len(line) > 12 && line[12] != ' ' {
		return nil, 0, false
	}
	code := 0
	for _, c := range []byte(line[9:12]) {
		if c < '0' || c > '9' {
			return nil, 0, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 {
		return nil, 0, false // informational answers precede the real one: the general path
	}
	for i := 12; i < len(line); i++ {
		if c := line[i]; c < ' ' && c != '\t' || c == 0x7f {
			return nil, 0, false
		}
	}
	lines := 0
	for r := rest; r != ""; lines++ {
		var l string
		l, r, _ = cutLine(r)
		if l == "" {
			return nil, 0, false
		}
	}
	lr = &leanResponse{}
	resp := &lr.resp
	resp.Status = line[9:]
	resp.StatusCode = code
	resp.Proto = line[:8]
	resp.ProtoMajor, resp.ProtoMinor = 1, int(line[7]-'0')
	hdr := make(http.Header, lines)
	vals := lr.vals[:]
	if lines > leanHeaderLines {
		vals = make([]string, lines)
	}
	cl, haveCL := "", false
	for i := 0; rest != ""; i++ {
		var l string
		l, rest, _ = cutLine(rest)
		colon := -1
		for j := 0; j < len(l); j++ {
			if l[j] == ':' {
				colon = j
				break
			}
			if !httpguts.IsTokenRune(rune(l[j])) {
				return nil, 0, false // includes obs-fold (a leading space) and a space before the colon
			}
		}
		if colon <= 0 {
			return nil, 0, false
		}
		k, v := l[:colon], trimOWS(l[colon+1:])
		for j := 0; j < len(v); j++ {
			if c := v[j]; c < ' ' && c != '\t' || c == 0x7f {
				return nil, 0, false
			}
		}
		if !canonical(k) {
			k = textproto.CanonicalMIMEHeaderKey(k)
		}
		switch k {
		case "Transfer-Encoding", "Trailer":
			return nil, 0, false
		case "Content-Length":
			if haveCL || v == "" || len(v) > 18 {
				return nil, 0, false
			}
			cl, haveCL = v, true
		}
		vals[i] = v
		if prev, dup := hdr[k]; dup {
			hdr[k] = append(prev, v)
		} else {
			hdr[k] = vals[i : i+1 : i+1]
		}
	}
	resp.Header = hdr
	conn := hdr["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conn, "close")
	if resp.ProtoMinor == 0 {
		resp.Close = hasClose || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	} else {
		resp.Close = hasClose
		if hasClose {
			delete(hdr, "Connection") // as net/http does for HTTP/1.1
		}
	}
	if haveCL {
		for i := 0; i < len(cl); i++ {
			if cl[i] < '0' || cl[i] > '9' {
				return nil, 0, false
			}
		}
	}
	switch {
	case code == http.StatusNoContent || code == http.StatusNotModified:
		n = 0
	case haveCL:
		v, err := strconv.ParseUint(cl, 10, 63)
		if err != nil {
			return nil, 0, false
		}
		n = int64(v)
	default:
		// No length and not chunked: the body runs until the server closes.
		n = -1
		resp.Close = true
	}
	resp.ContentLength = n
	_, _ = br.Discard(end + 4)
	return lr, n, true
}

// cutLine splits s after its first CRLF. A lone CR or LF in the line makes
// it invalid (ok false): the general parser decides about those.
func cutLine(s string) (line, rest string, ok bool) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\r':
			if i+1 < len(s) && s[i+1] == '\n' {
				return s[:i], s[i+2:], true
			}
			return "", "", false
		case '\n':
			return "", "", false
		}
	}
	return "", "", false
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// canonical reports whether k is already in textproto's canonical form
// (what nearly every server sends), so no new string is needed.
func canonical(k string) bool {
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}
