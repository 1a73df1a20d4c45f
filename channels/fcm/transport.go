package fcm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"golang.org/x/oauth2"
)

// Headers guardTransport adds to the responses it shapes; classify reads them.
const (
	syntheticHeader           = "X-Notifyd-Synthetic"
	syntheticNetwork          = "network"
	syntheticTokenRefused     = "token-refused"
	syntheticTokenUnavailable = "token-unavailable"
	origRetryAfterHeader      = "X-Notifyd-Retry-After"
	// firebaseRetryCap is just above firebase's 2-minute MaxDelay: a Retry-After
	// longer than its cap makes firebase give up instead of sleeping.
	firebaseRetryCap = "86400"
)

// guardTransport stops firebase's built-in retries, which would sleep inside
// Send (internal.WithDefaultRetryConfig: up to 4 retries of network errors and
// 503s, up to 2 minutes apart, not configurable from outside the module):
//
//   - a 503 keeps its status and body, but its Retry-After is moved to
//     X-Notifyd-Retry-After and replaced by one past firebase's cap, so
//     firebase returns the error at once;
//   - a transport error (and an OAuth2 token failure, which oauth2.Transport
//     reports as one) becomes a synthetic error response in Google's envelope,
//     which firebase does not retry; classify recognises it by its header.
//
// A request whose context has ended passes its error through: firebase
// returns it without waiting.
type guardTransport struct {
	next http.RoundTripper
}

func (g *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := g.next.RoundTrip(req)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, err
		}
		return syntheticResponse(req, err), nil
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		ra := resp.Header.Get("Retry-After")
		if ra == "" {
			ra = "0" // so classify never reads the inflated value
		}
		resp.Header.Set(origRetryAfterHeader, ra)
		resp.Header.Set("Retry-After", firebaseRetryCap)
	}
	return resp, nil
}

func syntheticResponse(req *http.Request, err error) *http.Response {
	kind, status, grpc := syntheticNetwork, http.StatusBadGateway, "UNAVAILABLE"
	msg := "send request: " + err.Error()
	hdr := http.Header{"Content-Type": {"application/json"}}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		msg = "fetch access token: " + tokenErrorText(re)
		kind = syntheticTokenUnavailable
		if re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 && re.Response.StatusCode != http.StatusTooManyRequests {
			kind, status, grpc = syntheticTokenRefused, http.StatusUnauthorized, "UNAUTHENTICATED"
		}
		if re.Response != nil {
			if ra := re.Response.Header.Get("Retry-After"); ra != "" {
				hdr.Set(origRetryAfterHeader, ra)
			}
		}
	}
	hdr.Set(syntheticHeader, kind)
	var env struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
		} `json:"error"`
	}
	env.Error.Code, env.Error.Message, env.Error.Status = status, msg, grpc
	body, _ := json.Marshal(env)
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// tokenErrorText keeps the OAuth2 error code and description, not the raw
// token-endpoint body.
func tokenErrorText(re *oauth2.RetrieveError) string {
	s := "token endpoint refused the request"
	if re.Response != nil {
		s += " with status " + strconv.Itoa(re.Response.StatusCode)
	}
	code, desc := re.ErrorCode, re.ErrorDescription
	if code == "" {
		// x/oauth2/jwt leaves the RFC 6749 error fields unparsed.
		var body struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(re.Body, &body) == nil {
			code, desc = body.Error, body.Description
		}
	}
	if code != "" {
		s += ": " + code
		if desc != "" {
			s += " (" + desc + ")"
		}
	}
	return s
}
