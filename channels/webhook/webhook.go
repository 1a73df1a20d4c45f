package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"golang.org/x/net/http/httpguts"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/webhook/internal/h1"
)

// Defaults for the optional Config fields.
const (
	DefaultMethod          = http.MethodPost
	DefaultTimeout         = 10 * time.Second
	DefaultMaxBodyBytes    = 1 << 20
	DefaultMaxRetryAfter   = 10 * time.Minute
	DefaultMaxConnsPerHost = 256
	DefaultConcurrency     = 64
	// DefaultPipeline is off. With it on, internal/h1 measures a
	// receiver's time per answer and gives a slow one (answers 1 ms or
	// more apart, as the drills' 2 ms receiver) a connection per request
	// while MaxConnsPerHost allows (TestPipelineSlowReceiverGetsConnections),
	// but by its answers alone a receiver that is slow per request cannot
	// be told from a fast one whose CPU is saturated (notifyd bench
	// webhook: answers ~260 µs apart on each of 8 lines), so receivers that
	// answer a few hundred µs per request on each of many connections would
	// wait in line. Opt in for receivers known to answer fast.
	DefaultPipeline = 1
)

// respSnippetBytes is how much of an error response body is kept in the error
// (receivers often explain a 4xx there); the rest is drained up to
// respDrainBytes so the keep-alive connection can be reused.
const (
	respSnippetBytes = 256
	respDrainBytes   = 64 << 10
)

// Config is what a webhook Sender needs. Only one of URL or a per-message
// Hook.URL is required.
type Config struct {
	// URL is the default endpoint; Message.Hook.URL overrides it per message.
	URL string
	// Method is the default HTTP method (POST); Hook.Method overrides it.
	Method string
	// Secret signs every request (HMAC-SHA256). Empty sends unsigned requests.
	Secret string
	// SignatureHeader names the signature header (X-Notifyd-Signature).
	SignatureHeader string
	// Timeout bounds one request, connect to last response byte (10s).
	Timeout time.Duration
	// AllowedHosts, when set, restricts destinations: an exact host name, or
	// "*.example.com" for any subdomain. Ports are ignored.
	AllowedHosts []string
	// AllowedSchemes restricts URL schemes; empty allows http and https.
	AllowedSchemes []string
	// AllowNetworks lets requests reach these CIDR prefixes (or addresses)
	// although they are loopback, private or link-local, e.g. an internal
	// receiver or the HTTP proxy. See channels.NetGuard.
	AllowNetworks []string
	// AllowPrivateNetworks turns the destination guard off entirely. URLs
	// come from templates and trigger data, so leave it off unless every
	// template author is trusted with the daemon's network.
	AllowPrivateNetworks bool
	// TLS is the trust configuration for https endpoints.
	TLS channels.TLS
	// MaxBodyBytes rejects larger bodies as invalid (1 MiB).
	MaxBodyBytes int
	// MaxRetryAfter caps a receiver's Retry-After hint (10 min); retryablehttp
	// itself would honour any value, including "come back next year".
	MaxRetryAfter time.Duration
	// DeadStatuses are statuses that mean "this recipient's endpoint is gone
	// for good" and produce ReasonDeadAddress. Default: 410 only. 404 is not
	// in the default set because a shared endpoint with a mistyped path would
	// otherwise prune every recipient at once.
	DeadStatuses []int
	// MaxConnsPerHost sizes the keep-alive pool per host and caps the
	// connections open to one host (256; at least the pool's workers, or
	// requests queue for a connection).
	MaxConnsPerHost int
	// Concurrency bounds parallel requests within one Send call (64).
	Concurrency int
	// Transport is TransportDirect (default: cleartext http:// requests go
	// through notifyd's lean HTTP/1.1 transport, https and proxied ones
	// through net/http) or TransportNetHTTP (net/http for every request).
	Transport Transport
	// Pipeline is how many requests may wait in line on one cleartext
	// keep-alive connection of the direct transport (HTTP/1.1
	// pipelining) before another connection is opened (default 8; 1: one request per connection at a time). Requests join
	// a line only while the receiver answers fast, see DefaultPipeline.
	Pipeline int
}

// Transport selects the HTTP client transport for cleartext requests.
type Transport string

// Transports.
const (
	// TransportDirect sends http:// requests through internal/h1: the
	// calling goroutine writes and reads, no hand-offs to per-connection
	// goroutines (about half the CPU per request of net/http's Transport,
	// measured with notifyd bench webhook). https (HTTP/2 when the receiver
	// offers it) and requests through a proxy use net/http.
	TransportDirect Transport = "direct"
	// TransportNetHTTP sends every request through net/http's Transport.
	TransportNetHTTP Transport = "net/http"
)

// Option configures optional Sender behaviour.
type Option func(*Sender)

// WithHTTPClient sends through c. Its Transport is used as is, so the
// destination guard only checks literal IP hosts: the caller's dialer owns
// where connections go. Its CheckRedirect is replaced (redirects are never
// followed) on a copy.
func WithHTTPClient(c *http.Client) Option { return func(s *Sender) { s.httpClient = c } }

// WithLogger sets the structured logger.
func WithLogger(l *slog.Logger) Option { return func(s *Sender) { s.logger = l } }

// WithClock injects the clock used for signature timestamps, deadlines and
// Retry-After dates.
func WithClock(now func() time.Time) Option { return func(s *Sender) { s.now = now } }

// Sender delivers Hook messages. It is safe for concurrent use.
type Sender struct {
	cfg        Config
	defaultURL *url.URL
	method     string
	sigHeader  string
	signer     *signer
	client     *retryablehttp.Client
	httpClient *http.Client
	logger     *slog.Logger
	now        func() time.Time
	dead       map[int]bool
	guard      *channels.NetGuard // nil when AllowPrivateNetworks

	// warnedNetwork keeps a receiver outage from logging once per message.
	warnedNetwork atomic.Bool
	// lastURL is the last per-message URL that passed checkURL.
	lastURL atomic.Pointer[checkedURL]
	// leanHTTP: every http:// request goes through internal/h1 (no proxy),
	// which enforces Config.Timeout itself.
	leanHTTP bool
	// outgoing holds *outgoing: requests on the lean path are built in
	// reused parts (see outgoing).
	outgoing sync.Pool
}

// checkedURL is a URL string that passed checkURL, parsed. Requests share
// the *url.URL: net/http never modifies Request.URL.
type checkedURL struct {
	raw string
	u   *url.URL
}

var _ channels.Channel = (*Sender)(nil)

// New validates cfg and builds a Sender.
func New(cfg Config, opts ...Option) (*Sender, error) {
	s := &Sender{cfg: cfg, now: time.Now, logger: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	s.logger = s.logger.With("channel", channels.Webhook)
	if err := s.applyDefaults(); err != nil {
		return nil, err
	}
	if cfg.URL != "" {
		u, err := s.checkURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("validate webhook config: url: %w", err)
		}
		s.defaultURL = u
	}
	hc, err := s.buildHTTPClient()
	if err != nil {
		return nil, err
	}
	// The pool owns retries (rate limits, deadlines and the attempt budget
	// live there), so retryablehttp must only ever make one attempt. A
	// CheckRetry that says "retry" with RetryMax 0 would also make Do call
	// CloseIdleConnections on the shared transport for every 5xx, tearing
	// down every other goroutine's keep-alive connections.
	s.client = &retryablehttp.Client{
		HTTPClient:   hc,
		Logger:       nil, // it would log full URLs; we log redacted ones ourselves
		RetryMax:     0,
		CheckRetry:   func(context.Context, *http.Response, error) (bool, error) { return false, nil },
		Backoff:      retryablehttp.DefaultBackoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	return s, nil
}

func (s *Sender) applyDefaults() error {
	c := &s.cfg
	if c.Method == "" {
		c.Method = DefaultMethod
	}
	if !validMethod(c.Method) {
		return fmt.Errorf("validate webhook config: method %q is not an HTTP token", c.Method)
	}
	if c.SignatureHeader == "" {
		c.SignatureHeader = DefaultSignatureHeader
	}
	if !validHeaderName(c.SignatureHeader) {
		return fmt.Errorf("validate webhook config: signature header %q is not a valid header name", c.SignatureHeader)
	}
	c.SignatureHeader = textproto.CanonicalMIMEHeaderKey(c.SignatureHeader)
	if c.Timeout < 0 || c.MaxBodyBytes < 0 || c.MaxRetryAfter < 0 || c.MaxConnsPerHost < 0 || c.Concurrency < 0 {
		return errors.New("validate webhook config: timeouts, sizes and counts must not be negative")
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if c.MaxConnsPerHost == 0 {
		c.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Pipeline < 0 {
		return errors.New("validate webhook config: pipeline must not be negative")
	}
	if c.Pipeline == 0 {
		c.Pipeline = DefaultPipeline
	}
	switch c.Transport {
	case "":
		c.Transport = TransportDirect
	case TransportDirect, TransportNetHTTP:
	default:
		return fmt.Errorf("validate webhook config: transport %q is not direct or net/http", c.Transport)
	}
	if len(c.AllowedSchemes) == 0 {
		c.AllowedSchemes = []string{"https", "http"}
	}
	for i, sc := range c.AllowedSchemes {
		sc = strings.ToLower(sc)
		if sc != "http" && sc != "https" {
			return fmt.Errorf("validate webhook config: scheme %q is not http or https", sc)
		}
		c.AllowedSchemes[i] = sc
	}
	for _, h := range c.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/:@ ") {
			return fmt.Errorf("validate webhook config: allowed host %q must be a bare host name or *.domain", h)
		}
	}
	if c.DeadStatuses == nil {
		c.DeadStatuses = []int{http.StatusGone}
	}
	s.dead = make(map[int]bool, len(c.DeadStatuses))
	for _, st := range c.DeadStatuses {
		if st < 400 || st > 499 {
			return fmt.Errorf("validate webhook config: dead status %d is not a 4xx status", st)
		}
		s.dead[st] = true
	}
	if !c.AllowPrivateNetworks {
		g, err := channels.NewNetGuard(c.AllowNetworks)
		if err != nil {
			return fmt.Errorf("validate webhook config: %w", err)
		}
		s.guard = g
	}
	s.method = c.Method
	s.sigHeader = c.SignatureHeader
	if c.Secret != "" {
		s.signer = newSigner(c.Secret)
	}
	return nil
}

func (s *Sender) buildHTTPClient() (*http.Client, error) {
	if s.httpClient != nil {
		hc := *s.httpClient
		hc.CheckRedirect = noRedirect
		return &hc, nil
	}
	tlsCfg, err := s.cfg.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("build webhook TLS config: %w", err)
	}
	dialer := s.guard.Dialer(&net.Dialer{Timeout: s.cfg.Timeout, KeepAlive: 30 * time.Second})
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsCfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        4 * s.cfg.MaxConnsPerHost,
		MaxIdleConnsPerHost: s.cfg.MaxConnsPerHost,
		// A hard cap as large as the idle pool: without it, a request that
		// finds no idle connection dials a new one even when one is about
		// to come back, and the surplus is closed again when the idle pool
		// is full (measured: 85 connections opened for 64 workers).
		MaxConnsPerHost:       s.cfg.MaxConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   s.cfg.Timeout,
		ExpectContinueTimeout: time.Second,
	}
	if s.cfg.Transport == TransportNetHTTP {
		return &http.Client{Transport: tr, CheckRedirect: noRedirect}, nil
	}
	rt := &router{
		std: tr,
		plain: &h1.Transport{Dial: dialer.DialContext, MaxConnsPerHost: s.cfg.MaxConnsPerHost, MaxIdleConns: tr.MaxIdleConns, IdleConnTimeout: tr.IdleConnTimeout,
			Timeout: s.cfg.Timeout, Pipeline: s.cfg.Pipeline},
		proxy: tr.Proxy,
	}
	// The environment's proxy settings are read once by net/http; with no
	// http proxy configured (the usual case), no request needs asking.
	probe := &http.Request{URL: &url.URL{Scheme: "http", Host: "notifyd.invalid"}, Header: http.Header{}}
	if u, err := http.ProxyFromEnvironment(probe); u == nil && err == nil && os.Getenv("HTTP_PROXY") == "" && os.Getenv("http_proxy") == "" {
		rt.proxy = nil
		s.leanHTTP = true
	}
	return &http.Client{Transport: rt, CheckRedirect: noRedirect}, nil
}

// router sends cleartext requests that go straight to their host through
// the lean HTTP/1.1 transport and everything else through net/http.
type router struct {
	std   *http.Transport
	plain *h1.Transport
	proxy func(*http.Request) (*url.URL, error)
}

func (r *router) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" {
		if r.proxy == nil {
			return r.plain.RoundTrip(req)
		}
		if u, err := r.proxy(req); err == nil && u == nil {
			return r.plain.RoundTrip(req)
		}
	}
	return r.std.RoundTrip(req)
}

func (r *router) CloseIdleConnections() {
	r.std.CloseIdleConnections()
	r.plain.CloseIdleConnections()
}

// noRedirect keeps the 3xx as the answer: following a redirect would send the
// signed body to a destination the allow-list never saw.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Name implements channels.Channel.
func (s *Sender) Name() string { return channels.Webhook }

// Close releases idle connections.
func (s *Sender) Close() error {
	s.client.HTTPClient.CloseIdleConnections()
	return nil
}

// Send delivers each message's Hook and answers per message, in order.
// Requests of one batch run in parallel (up to Config.Concurrency).
func (s *Sender) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	results := make([]channels.Result, len(batch))
	workers := min(s.cfg.Concurrency, len(batch))
	if workers <= 1 {
		for i, m := range batch {
			results[i] = s.sendOne(ctx, m)
		}
		return results
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(batch) {
					return
				}
				results[i] = s.sendOne(ctx, batch[i])
			}
		})
	}
	wg.Wait()
	return results
}

func (s *Sender) sendOne(ctx context.Context, m *channels.Message) channels.Result {
	if err := ctx.Err(); err != nil {
		return channels.Result{Err: channels.Classify(fmt.Errorf("send webhook: %w", err))}
	}
	if m == nil || m.Hook == nil {
		return channels.Result{Err: channels.Permanent(channels.ReasonInvalid, "", errors.New("send webhook: message has no Hook content"))}
	}
	now := s.now()
	if !m.Deadline.IsZero() && !now.Before(m.Deadline) {
		return channels.Result{Err: channels.Permanent(channels.ReasonExpired, "", fmt.Errorf("send webhook: deadline passed %s ago", now.Sub(m.Deadline).Round(time.Millisecond)))}
	}
	var (
		req *retryablehttp.Request
		out *outgoing
	)
	target, err := s.target(m.Hook)
	if err == nil {
		if s.leanHTTP && target.Scheme == "http" {
			// internal/h1 bounds the request by Config.Timeout on its own
			// (the connection's deadline): no timer per request here. It
			// is done with the request when RoundTrip returns, so the
			// request's parts can be reused (see outgoing).
			out = s.getOutgoing(ctx)
			req, err = s.buildRequest(ctx, m, target, now, out)
		} else {
			rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
			defer cancel()
			req, err = s.buildRequest(rctx, m, target, now, nil)
		}
	}
	if err != nil {
		s.putOutgoing(out)
		code := ""
		if errors.Is(err, channels.ErrBlockedDestination) {
			code = "blocked_destination"
		}
		return channels.Result{Err: channels.Permanent(channels.ReasonInvalid, code, err)}
	}

	resp, err := s.client.Do(req)
	if err != nil {
		res := channels.Result{Err: s.classifyTransportError(ctx, req.Method, target, err)}
		s.putOutgoing(out)
		return res
	}
	var res channels.Result
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		drain(resp)
		s.warnedNetwork.Store(false)
		res = channels.Result{ProviderID: resp.Header.Get("X-Request-Id")}
	} else {
		snippet := readSnippet(resp.Body)
		drain(resp)
		res = channels.Result{Err: s.classifyStatus(resp, req.Method, target, snippet)}
	}
	_ = resp.Body.Close()
	s.putOutgoing(out)
	return res
}

// drain reads what is left of a response (bounded) so its connection can go
// back to the keep-alive pool; an empty body costs nothing.
func drain(resp *http.Response) {
	if resp.ContentLength == 0 {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, respDrainBytes))
}

// target is the message's URL, parsed and checked, or the default one.
func (s *Sender) target(h *channels.Hook) (*url.URL, error) {
	if h.URL == "" {
		if s.defaultURL == nil {
			return nil, errors.New("build webhook request: no URL in the message or the config")
		}
		return s.defaultURL, nil
	}
	// A campaign's URL is usually the same string for every message:
	// parse and check it once (the checks depend only on the string and
	// the config; addresses are judged again at every dial).
	if p := s.lastURL.Load(); p != nil && p.raw == h.URL {
		return p.u, nil
	}
	u, err := s.checkURL(h.URL)
	if err != nil {
		return nil, fmt.Errorf("build webhook request: %w", err)
	}
	s.lastURL.Store(&checkedURL{raw: h.URL, u: u})
	return u, nil
}

// buildRequest builds m's request; into out's parts when out is not nil
// (out was made for ctx).
func (s *Sender) buildRequest(ctx context.Context, m *channels.Message, target *url.URL, now time.Time, out *outgoing) (*retryablehttp.Request, error) {
	h := m.Hook
	method := s.method
	if h.Method != "" {
		method = strings.ToUpper(h.Method)
		if !validMethod(method) {
			return nil, fmt.Errorf("build webhook request: method %q is not an HTTP token", h.Method)
		}
	}
	if len(h.Body) > s.cfg.MaxBodyBytes {
		return nil, fmt.Errorf("build webhook request: body is %d bytes, limit %d", len(h.Body), s.cfg.MaxBodyBytes)
	}
	// Only a JSON body must be JSON: the template may name another type
	// (text/plain, as docs/templates.md allows), which is sent as given.
	if len(h.Body) > 0 && !h.BodyIsJSON && declaresJSON(h.Headers) && !json.Valid(h.Body) {
		return nil, errors.New("build webhook request: body is not valid JSON")
	}
	if out != nil {
		return s.buildLean(m, out.prepare(method, target, h.Body), out, now)
	}
	var body any
	if len(h.Body) > 0 {
		// A []byte body is replayable as is: retryablehttp hands each
		// attempt a bytes.Reader over it, without copying or buffering.
		body = h.Body
	}
	// The URL is already parsed (and checked): printing it for
	// NewRequestWithContext to parse again cost two allocations and a
	// parse per request. net/http never modifies Request.URL, so the
	// parsed default URL is shared by every request.
	req, err := retryablehttp.NewRequestWithContext(ctx, method, "", body)
	if err != nil {
		return nil, fmt.Errorf("build webhook request: %s %s: invalid request", method, redactURL(target))
	}
	req.URL = target
	hdr := req.Header
	for k, v := range h.Headers {
		ck, err := s.checkHeader(k, v)
		if err != nil {
			return nil, err
		}
		hdr[ck] = []string{v}
	}
	// One backing array for the fixed headers' value slices: four
	// allocations fewer per request.
	vals := make([]string, 4)
	// The template may name the body's type (a text body, a vendor JSON
	// type); otherwise it is JSON.
	if _, set := hdr["Content-Type"]; len(h.Body) > 0 && !set {
		vals[0] = "application/json"
		hdr["Content-Type"] = vals[0:1:1]
	}
	vals[1] = userAgent
	hdr["User-Agent"] = vals[1:2:2]
	if m.IdempotencyKey != "" {
		if err := checkIdempotencyKey(m.IdempotencyKey); err != nil {
			return nil, err
		}
		vals[2] = m.IdempotencyKey
		hdr["Idempotency-Key"] = vals[2:3:3]
	}
	if s.signer != nil {
		vals[3] = s.signer.sign(now.Unix(), h.Body)
		hdr[s.sigHeader] = vals[3:4:4]
	}
	return req, nil
}

// userAgent names notifyd to receivers.
const userAgent = "notifyd-webhook/1"

// buildLean finishes a lean-path request: its headers go into the body's
// wire lines (h1.HeaderLines), in the order and with the precedence of
// the Header map the other path fills: the template's headers (a
// User-Agent of its own gives way to notifyd's), the default Content-Type
// unless the template named one, then User-Agent, Idempotency-Key and the
// signature.
func (s *Sender) buildLean(m *channels.Message, req *retryablehttp.Request, out *outgoing, now time.Time) (*retryablehttp.Request, error) {
	h := m.Hook
	w := out.body.head
	line := func(k, v string) {
		w = append(w, k...)
		w = append(w, ": "...)
		w = append(w, v...)
		w = append(w, "\r\n"...)
	}
	typed := false
	for k, v := range h.Headers {
		ck, err := s.checkHeader(k, v)
		if err != nil {
			return nil, err
		}
		switch ck {
		case "User-Agent":
			continue
		case "Content-Type":
			typed = true
		}
		line(ck, v)
	}
	if len(h.Body) > 0 && !typed {
		line("Content-Type", "application/json")
	}
	line("User-Agent", userAgent)
	if m.IdempotencyKey != "" {
		if err := checkIdempotencyKey(m.IdempotencyKey); err != nil {
			return nil, err
		}
		line("Idempotency-Key", m.IdempotencyKey)
		out.body.idem = true
	}
	if s.signer != nil {
		w = append(w, s.sigHeader...)
		w = append(w, ": "...)
		w = s.signer.appendSignature(w, now.Unix(), h.Body)
		w = append(w, "\r\n"...)
	}
	out.body.head, out.head = w, w
	return req, nil
}

// checkIdempotencyKey refuses a key that cannot travel as a header value.
func checkIdempotencyKey(key string) error {
	if !httpguts.ValidHeaderFieldValue(key) {
		return errors.New("build webhook request: idempotency key contains CR, LF, NUL or another control character")
	}
	return nil
}

// checkHeader checks a template's header and returns its canonical name.
// Errors name the header, never its value (it may be a token).
func (s *Sender) checkHeader(k, v string) (string, error) {
	if !validHeaderName(k) {
		return "", fmt.Errorf("build webhook request: header name %q is not a valid token", k)
	}
	if !httpguts.ValidHeaderFieldValue(v) {
		return "", fmt.Errorf("build webhook request: header %s: value contains CR, LF, NUL or another control character", k)
	}
	ck := textproto.CanonicalMIMEHeaderKey(k)
	if reservedHeader(ck) || ck == s.sigHeader {
		return "", fmt.Errorf("build webhook request: header %s is set by notifyd and cannot be overridden", ck)
	}
	return ck, nil
}

// checkURL parses raw and applies the scheme and host allow-lists. Errors
// never repeat the URL: it may carry a token in its path or query.
func (s *Sender) checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("parse URL: malformed")
	}
	scheme := strings.ToLower(u.Scheme)
	if !slices.Contains(s.cfg.AllowedSchemes, scheme) {
		return nil, fmt.Errorf("parse URL: scheme %q not allowed", u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return nil, errors.New("parse URL: no host")
	}
	if len(s.cfg.AllowedHosts) > 0 && !hostAllowed(s.cfg.AllowedHosts, host) {
		return nil, fmt.Errorf("parse URL: host %q not in the allowed hosts", host)
	}
	if err := s.guard.CheckHost(host); err != nil {
		return nil, fmt.Errorf("parse URL: %w", err)
	}
	return u, nil
}

func hostAllowed(allowed []string, host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, a := range allowed {
		a = strings.ToLower(a)
		if suffix, ok := strings.CutPrefix(a, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
			continue
		}
		if host == a {
			return true
		}
	}
	return false
}

func (s *Sender) classifyTransportError(parent context.Context, method string, target *url.URL, err error) *channels.Error {
	// retryablehttp's policy knows which transport failures no retry can
	// fix: an untrusted or invalid certificate, an invalid header, an
	// unsupported scheme, a redirect loop. Asked with a live context (the
	// parent's own end is judged below), it tells those apart from resets
	// and refusals, which the pool retries.
	retry, _ := retryablehttp.ErrorPropagatedRetryPolicy(context.Background(), nil, err)
	// The url.Error from net/http repeats the full URL; keep only its cause.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	wrapped := fmt.Errorf("%s %s: %w", method, redactURL(target), err)
	perr := parent.Err()
	if dl, ok := parent.Deadline(); perr == nil && ok && isTimeout(err) && !time.Now().Before(dl) {
		// The connection's deadline is the caller's (internal/h1 sets it
		// from the context): its timeout can beat the context's own timer
		// by a hair, and it is the caller's deadline that passed.
		perr = context.DeadlineExceeded
	}
	if perr != nil {
		return channels.Classify(fmt.Errorf("%s %s: %w", method, redactURL(target), perr))
	}
	if errors.Is(err, channels.ErrBlockedDestination) {
		return channels.Permanent(channels.ReasonInvalid, "blocked_destination", wrapped)
	}
	if !retry {
		return channels.Permanent(channels.ReasonNetwork, "not_retryable", wrapped)
	}
	code := "network"
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		code = "timeout"
	}
	if s.warnedNetwork.CompareAndSwap(false, true) {
		s.logger.Warn("webhook request failed", "host", target.Host, "code", code, "err", wrapped)
	}
	return channels.Transient(channels.ReasonNetwork, code, 0, wrapped)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Sender) classifyStatus(resp *http.Response, method string, target *url.URL, snippet string) *channels.Error {
	st := resp.StatusCode
	code := strconv.Itoa(st)
	msg := fmt.Sprintf("%s %s: status %d", method, redactURL(target), st)
	if snippet != "" {
		msg += ": " + snippet
	}
	cause := errors.New(msg)
	switch {
	case st == http.StatusRequestTimeout:
		return channels.Transient(channels.ReasonUnavailable, code, s.retryAfter(resp), cause)
	case st == http.StatusTooManyRequests:
		return channels.Transient(channels.ReasonRateLimited, code, s.retryAfter(resp), cause)
	case st == http.StatusUnauthorized || st == http.StatusForbidden:
		return channels.Permanent(channels.ReasonAuth, code, cause)
	case s.dead[st]:
		return channels.Permanent(channels.ReasonDeadAddress, code, cause)
	case st == http.StatusRequestEntityTooLarge:
		return channels.Permanent(channels.ReasonInvalid, code, cause)
	case st >= 300 && st < 400:
		return channels.Permanent(channels.ReasonRejected, code, fmt.Errorf("%w (redirects are not followed)", cause))
	case st >= 400 && st < 500:
		return channels.Permanent(channels.ReasonRejected, code, cause)
	case st == http.StatusNotImplemented:
		// As retryablehttp's policy: the receiver does not support the
		// method or the request, and will not next time either.
		return channels.Permanent(channels.ReasonRejected, code, cause)
	case st >= 500 && st < 600:
		return channels.Transient(channels.ReasonUnavailable, code, s.retryAfter(resp), cause)
	default:
		return channels.Transient(channels.ReasonUnknown, code, 0, cause)
	}
}

// retryAfter reads Retry-After as delay-seconds or an HTTP-date, capped at
// MaxRetryAfter. A date in the past or an unparsable value gives zero.
func (s *Sender) retryAfter(resp *http.Response) time.Duration {
	return ParseRetryAfter(resp.Header.Get("Retry-After"), s.now(), s.cfg.MaxRetryAfter)
}

// ParseRetryAfter reads a Retry-After value relative to now, capped at
// limit; see channels.ParseRetryAfter.
func ParseRetryAfter(v string, now time.Time, limit time.Duration) time.Duration {
	return channels.ParseRetryAfter(v, now, limit)
}

func readSnippet(r io.Reader) string {
	var buf [respSnippetBytes]byte
	n, _ := io.ReadFull(r, buf[:])
	b := bytes.TrimSpace(buf[:n])
	// Keep the error single-line and printable: it ends up in logs.
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			c = ' '
		}
		out = append(out, c)
	}
	return string(out)
}

// redactURL keeps scheme and host only: webhook URLs routinely carry their
// credential in the userinfo, the query or the path itself (Slack-style
// /services/T000/B000/XXXX), so none of those may reach a log or an error.
func redactURL(u *url.URL) string {
	if u == nil {
		return "<no url>"
	}
	s := u.Scheme + "://" + u.Host
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		s += "/[redacted]"
	}
	return s
}

func reservedHeader(k string) bool {
	switch k {
	case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Idempotency-Key":
		return true
	}
	return false
}

func validMethod(m string) bool { return m != "" && isToken(m) }

func validHeaderName(k string) bool { return k != "" && isToken(k) }

// isToken reports whether s is an RFC 9110 token (tchar only).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// declaresJSON reports whether a body under these headers is JSON: no
// Content-Type (notifyd then sends application/json) or one that says json.
func declaresJSON(headers map[string]string) bool {
	if len(headers) == 0 {
		return true
	}
	for k, v := range headers {
		if strings.EqualFold(k, "Content-Type") {
			return strings.Contains(strings.ToLower(v), "json")
		}
	}
	return true
}
