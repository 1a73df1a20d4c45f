package sms

import (
	"context"
	"net/http"
	"net/url"
	"strings"
)

// call is the transport of one CreateMessage call. twilio-go builds its
// request with context.Background() and returns only a decoded error body, so
// call attaches the Send context (cancellation aborts the request and returns
// at once, leaking nothing), redirects the fixed api.twilio.com URL to the
// configured base URL, and keeps the status and Retry-After twilio-go drops.
type call struct {
	ctx    context.Context
	next   http.RoundTripper
	target *url.URL

	// Written by RoundTrip and read after CreateMessage returns, on the same goroutine.
	status     int
	retryAfter string
}

func (c *call) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(c.ctx)
	if c.target != nil {
		out.URL.Scheme = c.target.Scheme
		out.URL.Host = c.target.Host
		out.URL.Path = strings.TrimSuffix(c.target.Path, "/") + out.URL.Path
		if out.URL.RawPath != "" {
			out.URL.RawPath = strings.TrimSuffix(c.target.EscapedPath(), "/") + out.URL.RawPath
		}
		out.Host = ""
	}
	resp, err := c.next.RoundTrip(out)
	if resp != nil {
		c.status = resp.StatusCode
		c.retryAfter = resp.Header.Get("Retry-After")
	}
	return resp, err
}
