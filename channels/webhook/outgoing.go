package webhook

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"github.com/hashicorp/go-retryablehttp"
)

// outgoing is the reusable parts of one request on the lean path: the
// retryablehttp and http requests, the header map and its values, and a
// body retryablehttp can replay without copying. Building them afresh cost
// about a tenth of the CPU per request (notifyd bench webhook
// --cpuprofile: NewRequestWithContext, a bytes.Reader and an io.NopCloser
// per attempt, the header map, a copy of the body in the transport).
//
// Reuse is safe only where the transport is done with a request when
// RoundTrip returns: internal/h1 writes the request and reads the answer
// in the calling goroutine, and takes the body's bytes without reading them
// (h1.BytesBody). net/http's Transport may still read a request's body after
// RoundTrip returns, so requests through it are built afresh.
//
// An http.Request's context cannot be changed in place, so an outgoing
// belongs to one context: the worker pool sends under its long-lived run
// context, and an outgoing made for another context is rebuilt.
//
// The headers travel with the body, as wire lines (h1.HeaderLines), and the
// request's Header map stays empty: net/http's Client clones that map per
// request, and building, cloning and walking it cost more than the lines.
type outgoing struct {
	ctx  context.Context
	req  retryablehttp.Request
	hdr  http.Header
	body replayBody
	head []byte // the header lines' buffer, kept across requests
}

// replayBody is a request body over bytes it does not own: every attempt
// rewinds it (retryablehttp's ReaderFunc) instead of copying the bytes, and
// internal/h1 writes Bytes as they are.
type replayBody struct {
	b    []byte
	off  int
	head []byte
	idem bool
}

func (r *replayBody) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	return n, nil
}

// Len is what retryablehttp sets Content-Length from.
func (r *replayBody) Len() int { return len(r.b) - r.off }

func (r *replayBody) Close() error { return nil }

// Bytes is the whole body (h1.BytesBody).
func (r *replayBody) Bytes() []byte { return r.b }

// HeaderLines are the request's headers (h1.HeaderLines).
func (r *replayBody) HeaderLines() ([]byte, bool) { return r.head, r.idem }

func (s *Sender) getOutgoing(ctx context.Context) *outgoing {
	o, _ := s.outgoing.Get().(*outgoing)
	if o == nil {
		o = &outgoing{hdr: make(http.Header, 6)}
	}
	if o.ctx != ctx {
		hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "", nil)
		if err != nil {
			panic("webhook: a request with an empty URL and a constant method must build: " + err.Error())
		}
		hr.Header = o.hdr
		o.req = retryablehttp.Request{Request: hr}
		// One ReaderFunc per outgoing: it rewinds the same replayBody.
		if err := o.req.SetBody(retryablehttp.ReaderFunc(func() (io.Reader, error) {
			o.body.off = 0
			return &o.body, nil
		})); err != nil {
			panic("webhook: a ReaderFunc body must be accepted: " + err.Error())
		}
		o.ctx = ctx
	}
	return o
}

// putOutgoing returns o (nil: nothing) for another request, keeping no
// reference to the message's body or headers.
func (s *Sender) putOutgoing(o *outgoing) {
	if o == nil {
		return
	}
	o.body = replayBody{}
	o.head = o.head[:0]
	s.outgoing.Put(o)
}

// prepare fills o for one request and returns it.
func (o *outgoing) prepare(method string, target *url.URL, body []byte) *retryablehttp.Request {
	hr := o.req.Request
	hr.Method = method
	hr.URL = target
	hr.Host = ""
	clear(o.hdr)
	hr.Header = o.hdr
	o.body = replayBody{b: body, head: o.head[:0]}
	hr.ContentLength = int64(len(body))
	if len(body) == 0 {
		hr.Body = http.NoBody
	}
	return &o.req
}
