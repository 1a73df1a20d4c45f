package h2

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"golang.org/x/net/http2"
)

// Defaults for Config's zero values.
const (
	DefaultDialTimeout     = 10 * time.Second
	DefaultReadIdleTimeout = 15 * time.Second
	DefaultPingTimeout     = 15 * time.Second
	DefaultCloseTimeout    = 5 * time.Second
	// DefaultStreamWindow and DefaultConnWindow are the receive windows we
	// advertise; answers are tiny, so these only matter for an odd large
	// body, which then flows without waiting for our WINDOW_UPDATEs.
	DefaultStreamWindow = 4 << 20
	DefaultConnWindow   = 1 << 30
	// DefaultMaxResponseBody is how much of an answer's body is kept; APNs
	// error bodies are ~50 bytes. The rest is read (and flow-controlled) but
	// dropped.
	DefaultMaxResponseBody = 8 << 10
	// DefaultMaxResponseHeaderBytes bounds one answer's decoded header list
	// (RFC 7541 sizes); it is advertised as SETTINGS_MAX_HEADER_LIST_SIZE.
	DefaultMaxResponseHeaderBytes = 256 << 10
)

// Config describes one connection (and a Client's every connection).
type Config struct {
	// Dial opens the transport connection. It must return a TLS connection
	// that negotiated ALPN "h2" (checked when the conn has a
	// ConnectionState method). Its ctx carries DialTimeout.
	Dial func(ctx context.Context) (net.Conn, error)
	// Authority is the :authority of every request (host[:port]).
	Authority string
	// DialTimeout bounds Dial plus the wait for the server's SETTINGS.
	DialTimeout time.Duration
	// ReadIdleTimeout is how long the connection may go without reading a
	// frame before it sends a health-check PING; negative disables.
	ReadIdleTimeout time.Duration
	// PingTimeout is how long a health-check PING may go unanswered before
	// the connection is closed.
	PingTimeout time.Duration
	// CloseTimeout bounds how long a graceful Close waits for streams in
	// flight.
	CloseTimeout time.Duration
	// StreamWindow and ConnWindow are the receive flow-control windows we
	// advertise (SETTINGS_INITIAL_WINDOW_SIZE and the connection's
	// WINDOW_UPDATE).
	StreamWindow uint32
	ConnWindow   uint32
	// MaxResponseBody is how many body bytes of an answer are kept.
	MaxResponseBody int
	// MaxResponseHeaderBytes bounds one answer's header list.
	MaxResponseHeaderBytes uint32
	// Logger receives connection-level events (GOAWAY, failed health
	// checks); default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ReadIdleTimeout == 0 {
		c.ReadIdleTimeout = DefaultReadIdleTimeout
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = DefaultPingTimeout
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = DefaultStreamWindow
	}
	// Not below the protocol's initial 65535: the server may send that
	// much before it has read our SETTINGS.
	c.StreamWindow = max(min(c.StreamWindow, maxWindow), initialWindow)
	if c.ConnWindow == 0 {
		c.ConnWindow = DefaultConnWindow
	}
	c.ConnWindow = max(min(c.ConnWindow, maxWindow), initialWindow)
	if c.MaxResponseBody <= 0 {
		c.MaxResponseBody = DefaultMaxResponseBody
	}
	if c.MaxResponseHeaderBytes == 0 {
		c.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Field is one request header field. Names must be lower case (HTTP/2).
type Field struct {
	Name, Value string
	// Unique marks a value that will not repeat on this connection (a
	// device token, a message id, an expiry). It is sent as a never-indexed
	// literal, so it does not evict the constant fields from the HPACK
	// dynamic table; every other field is indexed and costs one byte after
	// its first use.
	Unique bool
}

// Request is one POST (or Method) on a new stream. RoundTrip does not
// retain it or its slices after it returns.
type Request struct {
	// Method defaults to POST.
	Method string
	// Path is sent as a never-indexed literal: in APNs it carries the
	// device token, unique per push.
	Path string
	// PathSuffix, if set, is sent appended to Path: a caller with a
	// constant prefix ("/3/device/") need not build a string per request.
	PathSuffix string
	Header     []Field
	Body       []byte
	// Group, if set, counts the call's answer for a goroutine waiting on
	// several calls at once (see Group).
	Group *Group
}

// Response is what a finished stream answered. Only the headers APNs
// defines are kept.
type Response struct {
	Status int
	// ID is apns-id, UniqueID apns-unique-id (development environment).
	ID, UniqueID string
	RetryAfter   string
	// Body is appended to Body[:0], at most Config.MaxResponseBody bytes.
	Body []byte
}

// ErrUnprocessed marks a request the server certainly did not process: it
// was refused before being sent (the connection was going away, closed or
// out of stream ids), or the server said so (GOAWAY with a lower
// last-stream-id, REFUSED_STREAM). It is safe to send again, on another
// connection.
var ErrUnprocessed = errors.New("not processed, safe to retry")

// ErrHeaderListTooLarge is returned, without sending anything, for a request
// whose header list exceeds the server's SETTINGS_MAX_HEADER_LIST_SIZE.
var ErrHeaderListTooLarge = errors.New("request header list exceeds the server's limit")

// StreamResetError is a stream the server reset with RST_STREAM.
type StreamResetError struct{ Code http2.ErrCode }

func (e StreamResetError) Error() string { return "stream reset by server: " + e.Code.String() }

// Is makes a REFUSED_STREAM reset match ErrUnprocessed (RFC 9113 §8.7).
func (e StreamResetError) Is(target error) bool {
	return target == ErrUnprocessed && e.Code == http2.ErrCodeRefusedStream
}
