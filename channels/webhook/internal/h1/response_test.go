package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// leanVersusStd parses raw with readHead and with http.ReadResponse and
// reports a difference in what a caller sees: status, protocol, headers,
// length, keep-alive, the body, and what is left for the next answer.
// lean says whether the lean parser took the answer (false: it left it to
// http.ReadResponse, which is always correct).
func leanVersusStd(t testing.TB, raw, method string) (lean bool) {
	t.Helper()
	req := &http.Request{Method: method}
	br := bufio.NewReaderSize(strings.NewReader(raw), 4<<10)
	_, _ = br.Peek(1)
	lr, n, ok := readHead(br, method)
	if !ok {
		if br.Buffered() != min(len(raw), 4<<10) {
			t.Fatalf("declined answer consumed %d bytes", min(len(raw), 4<<10)-br.Buffered())
		}
		return false
	}
	var body []byte
	var bodyErr error
	switch {
	case n > 0:
		body, _ = io.ReadAll(io.LimitReader(br, n))
		if int64(len(body)) < n {
			bodyErr = io.ErrUnexpectedEOF
		}
	case n < 0:
		body, bodyErr = io.ReadAll(br)
	}
	rest, _ := io.ReadAll(br)

	sr := bufio.NewReader(strings.NewReader(raw))
	want, err := http.ReadResponse(sr, req)
	if err != nil {
		t.Fatalf("lean parser took an answer http.ReadResponse refuses (%v):\n%q", err, raw)
	}
	wantBody, wantErr := io.ReadAll(want.Body)
	wantRest, _ := io.ReadAll(sr)
	got := &lr.resp
	if got.StatusCode != want.StatusCode || got.Status != want.Status || got.Proto != want.Proto ||
		got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor {
		t.Errorf("status: lean %d %q %q %d.%d, std %d %q %q %d.%d", got.StatusCode, got.Status, got.Proto, got.ProtoMajor, got.ProtoMinor,
			want.StatusCode, want.Status, want.Proto, want.ProtoMajor, want.ProtoMinor)
	}
	if !reflect.DeepEqual(got.Header, want.Header) {
		t.Errorf("header: lean %q, std %q", got.Header, want.Header)
	}
	if got.ContentLength != want.ContentLength || got.Close != want.Close || want.TransferEncoding != nil {
		t.Errorf("framing: lean length %d close %v, std length %d close %v te %q", got.ContentLength, got.Close, want.ContentLength, want.Close, want.TransferEncoding)
	}
	if (bodyErr == nil) != (wantErr == nil) || !bytes.Equal(body, wantBody) {
		t.Errorf("body: lean %q (%v), std %q (%v)", body, bodyErr, wantBody, wantErr)
	}
	if !bytes.Equal(rest, wantRest) {
		t.Errorf("left after the answer: lean %q, std %q", rest, wantRest)
	}
	return true
}

func TestLeanResponseParser(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		method string
		lean   bool
	}{
		{"go server 200 empty", "HTTP/1.1 200 OK\r\nDate: Sat, 05 Dec 2026 13:00:00 GMT\r\nContent-Length: 0\r\n\r\n", "POST", true},
		{"body and request id", "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nX-Request-Id: r-1\r\nContent-Length: 11\r\n\r\n{\"ok\":true}NEXT", "POST", true},
		{"lower-case names", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-request-id: abc\r\n\r\nokHTTP", "POST", true},
		// Up to leanHeaderLines values live in the response; more get a slice of their own.
		{"six header lines, one repeated", "HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\nX-C: 4\r\nX-D: 5\r\nContent-Length: 0\r\n\r\n", "POST", true},
		{"nine header lines, one repeated", "HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\nX-C: 4\r\nX-D: 5\r\nX-E: 6\r\nX-F: 7\r\nX-G: 8\r\nContent-Length: 0\r\n\r\n", "POST", true},
		{"repeated header", "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n", "POST", true},
		{"spaces around value", "HTTP/1.1 429 Too Many Requests\r\nRetry-After:  7 \t\r\nContent-Length: 0\r\n\r\n", "POST", true},
		{"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "POST", true},
		{"connection close 1.1", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye", "POST", true},
		{"http 1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", "POST", true},
		{"http 1.0 default close", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", "POST", true},
		{"until close", "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nall of this", "POST", true},
		{"204 with a length", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "POST", true},
		{"304", "HTTP/1.1 304 Not Modified\r\n\r\n", "POST", true},
		{"no headers", "HTTP/1.1 200 OK\r\n\r\nrest", "POST", true},
		// Left to http.ReadResponse:
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "POST", false},
		{"trailer", "HTTP/1.1 200 OK\r\nTrailer: X-A\r\nContent-Length: 0\r\n\r\n", "POST", false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "POST", false},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx", "POST", false},
		{"100 continue", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "POST", false},
		{"head request", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD", false},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", "POST", false},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", "POST", false},
		{"space before colon", "HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 0\r\n\r\n", "POST", false},
		{"http 2 status line", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "POST", false},
		{"incomplete head", "HTTP/1.1 200 OK\r\nContent-Len", "POST", false},
		{"control byte in value", "HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n", "POST", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if lean := leanVersusStd(t, tc.raw, tc.method); lean != tc.lean {
				t.Errorf("lean parser took it: %v, want %v", lean, tc.lean)
			}
		})
	}
}

// FuzzLeanResponseParser: whatever the lean parser accepts, http.ReadResponse
// reads the same way.
func FuzzLeanResponseParser(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 202 Accepted\r\nX-Request-Id: r\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.0 500 E\r\nConnection: Keep-Alive, close\r\n\r\nbody",
		"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
	} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, raw string, head bool) {
		method := http.MethodPost
		if head {
			method = http.MethodHead
		}
		leanVersusStd(t, raw, method)
	})
}
