package apns

import (
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // RFC 9562 name-based UUIDs are defined over SHA-1; not a security use
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/apns/internal/h2"
)

// Config holds what a Sender cannot work without. Credentials come from the
// caller; nothing is read from the environment.
type Config struct {
	// Topic is the app's bundle id, sent as apns-topic (with the suffix Apple
	// requires for voip, complication, fileprovider, location, liveactivity
	// and pushtotalk pushes).
	Topic string
	// Production selects api.push.apple.com; otherwise api.sandbox.push.apple.com.
	Production bool
	// Host overrides the endpoint ("https://host:port"), e.g. the sandbox fake.
	Host string

	// Token auth: a .p8 key (PEM bytes in Key or a path in KeyFile), its key
	// id and the team id. apns2's token package signs and refreshes the JWT.
	KeyID  string
	TeamID string
	Key    []byte
	// KeyFile is read once in New.
	KeyFile string

	// Certificate auth: a .p12 or .pem (certificate and key) in Certificate
	// or CertificateFile, with an optional password.
	Certificate         []byte
	CertificateFile     string
	CertificatePassword string

	// TLS sets the roots (and server name) used to verify APNs.
	TLS channels.TLS
}

// Option tunes a Sender.
type Option func(*options)

type options struct {
	connections     int
	maxInFlight     int
	logger          *slog.Logger
	now             func() time.Time
	dialTimeout     time.Duration
	readIdleTimeout time.Duration
	coalesce        bool
	transport       Transport
}

// Transport selects the HTTP/2 client under the Sender.
type Transport string

const (
	// TransportDirect (the default) writes each push as HTTP/2 frames on
	// notifyd's own lean client connection (internal/h2): no http.Request,
	// no json.Marshal, no goroutine per push. apns2 still signs the JWT,
	// loads certificates and names the reasons.
	TransportDirect Transport = "direct"
	// TransportAPNs2 pushes with apns2.Client.PushWithContext over
	// x/net/http2's Transport: the reference path, kept for A/B runs.
	TransportAPNs2 Transport = "apns2"
)

// WithTransport selects the client: TransportDirect (default) or
// TransportAPNs2.
func WithTransport(t Transport) Option { return func(o *options) { o.transport = t } }

// WithConnections sets how many HTTP/2 connections the Sender spreads
// pushes over; default 2. Apple asks for few long-lived
// connections, each carrying many streams.
func WithConnections(n int) Option { return func(o *options) { o.connections = n } }

// WithMaxInFlight bounds how many pushes one Send call has outstanding at
// once; default 500. Streams beyond a connection's limit wait for a slot
// rather than opening extra connections.
func WithMaxInFlight(n int) Option { return func(o *options) { o.maxInFlight = n } }

// WithLogger sets the logger; default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithClock injects the clock used for deadlines, Retry-After dates and
// token refresh decisions.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithDialTimeout bounds TCP connect plus TLS handshake; default 10s.
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithWriteCoalescing turns the merging of HTTP/2 frame writes into fewer TLS
// records and syscalls on or off for TransportAPNs2; default on. See
// coalescingConn. TransportDirect always batches its writes.
func WithWriteCoalescing(on bool) Option { return func(o *options) { o.coalesce = on } }

// WithReadIdleTimeout sets how long a silent connection waits before a
// health-check PING; default 15s (what apns2 uses).
func WithReadIdleTimeout(d time.Duration) Option {
	return func(o *options) { o.readIdleTimeout = d }
}

// Sender pushes over N HTTP/2 connections, choosing the least loaded per
// push. Each is an internal/h2 Client (TransportDirect) or an apns2 client
// with its own x/net/http2 transport (TransportAPNs2).
type Sender struct {
	topic     string
	topics    pushTopics
	host      string // scheme://host:port, for error text
	transport Transport
	conns     []*conn
	token     *token.Token
	log       *slog.Logger
	now       func() time.Time
	workers   int
	depth     int // pushes per Send worker in flight at once
	bufs      sync.Pool
	auth      atomic.Pointer[string] // "bearer <jwt>", see authorization
	authMu    sync.Mutex
	authTimer *time.Timer // drops auth when the JWT is due for re-signing

	// authFailing lets a run of auth failures log once, not per push.
	authFailing      atomic.Bool
	collapseIDLogged atomic.Bool
}

type conn struct {
	client   *apns2.Client // TransportAPNs2
	h2       *h2.Client    // TransportDirect
	inFlight atomic.Int64
}

// pushTopics are the apns-topic values per push type, built once.
type pushTopics struct{ voip, complication, fileProvider, location, liveActivity, pushToTalk string }

var _ channels.Channel = (*Sender)(nil)

// minTokenRefresh is Apple's limit: refreshing the provider token more often
// than every 20 minutes earns 429 TooManyProviderTokenUpdates.
const minTokenRefresh = 20 * time.Minute

// New validates cfg, loads the credentials and prepares the clients. It does
// not connect: the first push does.
func New(cfg Config, opts ...Option) (*Sender, error) {
	o := options{connections: DefaultConnections, maxInFlight: 500, now: time.Now, dialTimeout: 10 * time.Second, readIdleTimeout: 15 * time.Second, coalesce: true, transport: TransportDirect}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	switch {
	case cfg.Topic == "":
		return nil, errors.New("configure apns: Topic (the bundle id) is required")
	case o.connections < 1 || o.connections > 64:
		return nil, fmt.Errorf("configure apns: connections must be 1..64, got %d", o.connections)
	case o.maxInFlight < 1:
		return nil, fmt.Errorf("configure apns: max in flight must be positive, got %d", o.maxInFlight)
	case o.transport != TransportDirect && o.transport != TransportAPNs2:
		return nil, fmt.Errorf("configure apns: transport must be %q or %q, got %q", TransportDirect, TransportAPNs2, o.transport)
	}
	host, err := endpoint(cfg)
	if err != nil {
		return nil, err
	}
	tokenAuth := len(cfg.Key) > 0 || cfg.KeyFile != "" || cfg.KeyID != "" || cfg.TeamID != ""
	certAuth := len(cfg.Certificate) > 0 || cfg.CertificateFile != ""
	if tokenAuth == certAuth {
		return nil, errors.New("configure apns: set exactly one of token auth (Key/KeyFile, KeyID, TeamID) or certificate auth (Certificate/CertificateFile)")
	}
	tlsCfg, err := cfg.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("configure apns: %w", err)
	}
	s := &Sender{topic: cfg.Topic, topics: topicsFor(cfg.Topic), host: host, transport: o.transport, log: o.logger.With("channel", channels.APNs), now: o.now, workers: o.maxInFlight, depth: pipelineDepth}
	if o.transport == TransportAPNs2 {
		s.depth = 1 // apns2 sends and waits in one call
	}
	s.bufs.New = func() any { b := make([]byte, 0, 1024); return &b }
	var cert tls.Certificate
	if tokenAuth {
		if s.token, err = loadToken(cfg); err != nil {
			return nil, err
		}
	} else {
		if cert, err = loadCertificate(cfg); err != nil {
			return nil, err
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	if o.transport == TransportDirect {
		s.conns = directConns(host, tlsCfg, o, s.log)
	} else {
		s.conns = apns2Conns(host, tlsCfg, cert, s.token, o)
	}
	auth := "certificate"
	if tokenAuth {
		auth = "token"
	}
	s.log.Info("apns sender ready", "host", host, "auth", auth, "connections", o.connections, "topic", cfg.Topic, "transport", string(o.transport))
	return s, nil
}

func endpoint(cfg Config) (string, error) {
	if cfg.Host == "" {
		if cfg.Production {
			return apns2.HostProduction, nil
		}
		return apns2.HostDevelopment, nil
	}
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil {
		return "", errors.New("configure apns: Host must look like https://host[:port]")
	}
	return "https://" + u.Host, nil
}

func loadToken(cfg Config) (*token.Token, error) {
	if cfg.KeyID == "" || cfg.TeamID == "" {
		return nil, errors.New("configure apns: token auth needs KeyID and TeamID")
	}
	if len(cfg.Key) > 0 && cfg.KeyFile != "" {
		return nil, errors.New("configure apns: set Key or KeyFile, not both")
	}
	pemBytes := cfg.Key
	if cfg.KeyFile != "" {
		b, err := os.ReadFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("read apns key file: %w", err)
		}
		pemBytes = b
	}
	if len(pemBytes) == 0 {
		return nil, errors.New("configure apns: token auth needs Key or KeyFile")
	}
	key, err := token.AuthKeyFromBytes(pemBytes)
	if err != nil {
		// apns2's messages name the problem without echoing key material.
		return nil, fmt.Errorf("parse apns .p8 key: %w", err)
	}
	t := &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
	if _, err := t.Generate(); err != nil {
		return nil, fmt.Errorf("sign apns provider token: %w", err)
	}
	return t, nil
}

func loadCertificate(cfg Config) (tls.Certificate, error) {
	if len(cfg.Certificate) > 0 && cfg.CertificateFile != "" {
		return tls.Certificate{}, errors.New("configure apns: set Certificate or CertificateFile, not both")
	}
	raw := cfg.Certificate
	if cfg.CertificateFile != "" {
		b, err := os.ReadFile(cfg.CertificateFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("read apns certificate file: %w", err)
		}
		raw = b
	}
	var (
		cert tls.Certificate
		err  error
	)
	if bytes.Contains(raw, []byte("-----BEGIN")) {
		cert, err = certificate.FromPemBytes(raw, cfg.CertificatePassword)
	} else {
		cert, err = certificate.FromP12Bytes(raw, cfg.CertificatePassword)
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load apns certificate: %w", err)
	}
	return cert, nil
}

// directConns makes one lazily dialled internal/h2 client per connection.
func directConns(host string, tlsCfg *tls.Config, o options, log *slog.Logger) []*conn {
	authority := host[len("https://"):]
	addr := authority
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "443")
	}
	cfg := h2.Config{
		Dial:            directDialer(addr, tlsCfg, o.dialTimeout),
		Authority:       authority,
		DialTimeout:     o.dialTimeout,
		ReadIdleTimeout: o.readIdleTimeout,
		PingTimeout:     15 * time.Second,
		Logger:          log,
	}
	conns := make([]*conn, o.connections)
	for i := range conns {
		conns[i] = &conn{h2: h2.NewClient(cfg)}
	}
	return conns
}

// apns2Conns makes one apns2 client, with its own x/net/http2 transport and
// so its own connection, per connection.
func apns2Conns(host string, tlsCfg *tls.Config, cert tls.Certificate, tok *token.Token, o options) []*conn {
	conns := make([]*conn, o.connections)
	for i := range conns {
		tr := &http2.Transport{
			TLSClientConfig: tlsCfg.Clone(),
			DialTLSContext:  dialer(o.dialTimeout, o.coalesce),
			ReadIdleTimeout: o.readIdleTimeout,
			PingTimeout:     15 * time.Second,
			// APNs answers with at most a tiny JSON body: asking for gzip
			// only adds a header to encode on every push.
			DisableCompression: true,
			// Wait for a free stream instead of dialling more connections:
			// each client stays one connection, as Apple asks.
			StrictMaxConcurrentStreams: true,
		}
		conns[i] = &conn{client: &apns2.Client{
			Host:        host,
			Certificate: cert,
			Token:       tok,
			// No http.Client.Timeout: the caller's ctx bounds each push, and
			// a client timeout would arm a timer per request.
			HTTPClient: &http.Client{Transport: retryAfterCapture{tr}},
		}}
	}
	return conns
}

// directDialer opens TLS connections for internal/h2, offering only h2
// (h2.Dial checks the server took it).
func directDialer(addr string, cfg *tls.Config, timeout time.Duration) func(ctx context.Context) (net.Conn, error) {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{http2.NextProtoTLS}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}, Config: cfg}
	return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

func dialer(timeout time.Duration, coalesce bool) func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
	return func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}, Config: cfg}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := c.(*tls.Conn) // tls.Dialer promises this
		// A custom dialer skips http2's own ALPN check; APNs speaks only h2.
		if p := tc.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
			_ = tc.Close()
			return nil, fmt.Errorf("dial apns: server negotiated %q, want h2", p)
		}
		if coalesce {
			return newCoalescingConn(tc), nil
		}
		return tc, nil
	}
}

// DefaultConnections is the number of HTTP/2 connections without
// WithConnections.
const DefaultConnections = 2

// ServerMaxStreams is the sum over the connections of the streams the
// server allows at once (its SETTINGS_MAX_CONCURRENT_STREAMS): how many
// pushes can be in flight. Pushes started beyond it wait for a stream, so
// concurrency follows the provider; 0 before the first push and on
// TransportAPNs2, whose transport does not tell.
func (s *Sender) ServerMaxStreams() int {
	n := 0
	for _, c := range s.conns {
		if c.h2 != nil {
			n += c.h2.MaxStreams()
		}
	}
	return n
}

// Name is channels.APNs.
func (s *Sender) Name() string { return channels.APNs }

// Close closes the connections. Pushes in flight finish first (on
// TransportDirect within h2.DefaultCloseTimeout; after it they fail).
func (s *Sender) Close() {
	s.authMu.Lock()
	if s.authTimer != nil {
		s.authTimer.Stop()
	}
	s.authMu.Unlock()
	var wg sync.WaitGroup
	for _, c := range s.conns {
		if c.client != nil {
			c.client.CloseIdleConnections()
			continue
		}
		wg.Go(func() { _ = c.h2.Close() })
	}
	wg.Wait()
}

// pipelineDepth is how many pushes one Send worker keeps in flight on
// TransportDirect, and reapBatch how many answers wake it: it starts
// pushes, then waits (h2.Group) until a few of them, any of them, are
// answered, collects those and starts new ones in their places. So it parks
// about once per reapBatch answers instead of once per push, and a slow push
// holds up only its own slot. In TestAPNsLoad that park-and-wake was the
// largest per-push cost left: one push per worker parked once per push;
// keeping 8 in flight (waiting on the oldest) cut that to 0.26 per push and
// the CPU per push by about a tenth; 32 cut parks to 0.09.
const (
	pipelineDepth = 32
	reapBatch     = 4
)

// Send pushes the batch concurrently (at most the in-flight limit at once)
// and answers per message, in order.
func (s *Sender) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	results := make([]channels.Result, len(batch))
	if len(batch) == 0 {
		return results
	}
	inFlight := min(len(batch), s.workers)
	workers := (inFlight + s.depth - 1) / s.depth
	depth := inFlight / workers // workers*depth <= inFlight, and close to it
	var next atomic.Int64
	work := func() {
		w := newSendWorker(depth)
		for {
			// Refill. Indexes are claimed depth at a time, so workers do
			// not all contend on next, and each writes its own stretch of
			// results.
			for len(w.free) > 0 {
				if w.claimed == w.end {
					lo := int(next.Add(int64(depth))) - depth
					if lo >= len(batch) {
						break
					}
					w.claimed, w.end = lo, min(lo+depth, len(batch))
				}
				slot := w.free[len(w.free)-1]
				w.free = w.free[:len(w.free)-1]
				w.index[slot] = w.claimed
				s.start(ctx, batch[w.claimed], &w.slots[slot], w.group)
				w.claimed++
				w.active = append(w.active, slot)
			}
			if len(w.active) == 0 {
				return
			}
			if w.reap(func(slot int) { results[w.index[slot]] = s.finish(ctx, &w.slots[slot]) }) > 0 {
				continue
			}
			if err := w.group.Wait(ctx, min(reapBatch, len(w.active))); err != nil {
				// Give up on what is in flight: each finish resets its stream.
				for _, slot := range w.active {
					results[w.index[slot]] = s.finish(ctx, &w.slots[slot])
					w.free = append(w.free, slot)
				}
				w.active = w.active[:0]
			}
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	return results
}

// sendWorker is one Send worker's pushes in flight.
type sendWorker struct {
	slots   []pushState
	index   []int // batch index per slot
	free    []int // slots not in flight
	active  []int // slots in flight
	group   *h2.Group
	claimed int // next batch index of the claimed stretch
	end     int
}

func newSendWorker(depth int) *sendWorker {
	w := &sendWorker{slots: make([]pushState, depth), index: make([]int, depth), free: make([]int, depth), active: make([]int, 0, depth), group: h2.NewGroup()}
	for i := range w.free {
		w.free[i] = i
	}
	return w
}

// reap collects every push in flight whose answer is in, and returns how
// many it collected.
func (w *sendWorker) reap(collect func(slot int)) int {
	n := 0
	for j := 0; j < len(w.active); {
		slot := w.active[j]
		if !w.slots[slot].answered() {
			j++
			continue
		}
		collect(slot)
		w.free = append(w.free, slot)
		w.active[j] = w.active[len(w.active)-1]
		w.active = w.active[:len(w.active)-1]
		n++
	}
	return n
}

var (
	errNoContent = errors.New("message has no push content")
	errExpired   = errors.New("message deadline passed before sending")
)

// pushState is one push from start to finish. A worker reuses its few.
type pushState struct {
	m      *channels.Message
	result channels.Result
	ended  bool // result is final: rejected locally, or the send failed
	bp     *[]byte
	p      pushRequest
	conn   *conn
	// TransportDirect
	fields [8]h2.Field
	req    h2.Request
	call   *h2.Call
}

// pushRequest is one push, built once and sent by either transport.
type pushRequest struct {
	token, topic, pushType string
	priority               int
	expiration             time.Time
	collapseID, apnsID     string
	payload                []byte // pooled: valid until finish
}

// start validates and builds the push and, on TransportDirect, sends it
// without waiting for the answer (g counts it when it comes).
func (s *Sender) start(ctx context.Context, m *channels.Message, ps *pushState, g *h2.Group) {
	// Not *ps = pushState{}: the header array need not be cleared per push.
	ps.m, ps.result, ps.ended, ps.conn, ps.call = m, channels.Result{}, false, nil, nil
	if r, ok := s.prepare(ctx, m, ps); !ok {
		ps.result, ps.ended = r, true
		return
	}
	ps.conn = s.pick()
	ps.conn.inFlight.Add(1)
	if ps.conn.h2 == nil {
		return // apns2 sends and waits in one call, in finish
	}
	s.buildDirect(ps)
	ps.req.Group = g
	call, err := ps.conn.h2.Start(ctx, &ps.req)
	if err != nil {
		ps.result, ps.ended = channels.Result{Err: s.transportError(ctx, err)}, true
		s.release(ps)
		return
	}
	ps.call = call
}

// answered reports whether finish will not wait: the push ended before a
// request, its answer is in, or (apns2) it has yet to be sent in one call.
func (ps *pushState) answered() bool {
	return ps.ended || ps.call == nil || ps.call.Finished()
}

// finish waits for the answer to a started push and classifies it.
func (s *Sender) finish(ctx context.Context, ps *pushState) channels.Result {
	if ps.ended {
		return ps.result
	}
	var (
		res        apns2.Response
		retryAfter string
		err        error
	)
	if ps.conn.h2 != nil {
		retryAfter, err = s.waitDirect(ctx, ps, &res)
	} else {
		retryAfter, err = s.pushAPNs2(ctx, ps.conn.client, &ps.p, &res)
	}
	s.release(ps)
	if err != nil {
		return channels.Result{Err: s.transportError(ctx, err)}
	}
	if res.StatusCode == http.StatusOK {
		if s.authFailing.Load() {
			s.authFailing.Store(false)
			s.log.Info("apns accepting pushes again")
		}
		return channels.Result{ProviderID: res.ApnsID}
	}
	return channels.Result{ProviderID: res.ApnsID, Err: s.classify(&res, retryAfter, ps.m)}
}

func (s *Sender) release(ps *pushState) {
	ps.conn.inFlight.Add(-1)
	s.bufs.Put(ps.bp)
	ps.bp, ps.call, ps.req.Body, ps.p.payload = nil, nil, nil, nil
}

// prepare checks m and builds its payload and headers' values into ps, or
// returns the result that ends it without a request.
func (s *Sender) prepare(ctx context.Context, m *channels.Message, ps *pushState) (channels.Result, bool) {
	if err := ctx.Err(); err != nil {
		return channels.Result{Err: channels.Classify(fmt.Errorf("push notification: %w", err))}, false
	}
	if m == nil || m.Push == nil {
		return channels.Result{Err: channels.Permanent(channels.ReasonInvalid, "", errNoContent)}, false
	}
	if code, err := checkToken(m.To); err != nil {
		if code == apns2.ReasonBadDeviceToken {
			return channels.Result{Err: channels.Permanent(channels.ReasonDeadAddress, code, err)}, false
		}
		return channels.Result{Err: channels.Permanent(channels.ReasonInvalid, code, err)}, false
	}
	// Reading the clock costs ~0.1 µs on a VM: only when there is a deadline.
	if !m.Deadline.IsZero() && !s.now().Before(m.Deadline) {
		return channels.Result{Err: channels.Permanent(channels.ReasonExpired, "", errExpired)}, false
	}
	pushType := m.Push.PushType
	if pushType == "" {
		pushType = string(apns2.PushTypeAlert)
	}

	bp := s.bufs.Get().(*[]byte)
	payload, err := appendPayload((*bp)[:0], m.Push, pushType)
	*bp = payload[:0]
	if err != nil {
		s.bufs.Put(bp)
		return channels.Result{Err: channels.Permanent(channels.ReasonInvalid, "", fmt.Errorf("build payload: %w", err))}, false
	}
	limit := maxPayload
	if pushType == string(apns2.PushTypeVOIP) {
		limit = maxVoIPPayload
	}
	if len(payload) > limit {
		s.bufs.Put(bp)
		return channels.Result{Err: channels.Permanent(channels.ReasonInvalid, apns2.ReasonPayloadTooLarge,
			fmt.Errorf("build payload: %d bytes exceeds the %d-byte limit", len(payload), limit))}, false
	}
	ps.bp = bp

	p := &ps.p
	*p = pushRequest{token: m.To, topic: s.topicFor(pushType), pushType: pushType, priority: apns2.PriorityLow, payload: payload}
	// Apple rejects priority 10 for background pushes.
	if m.High && pushType != string(apns2.PushTypeBackground) {
		p.priority = apns2.PriorityHigh
	}
	if !m.Deadline.IsZero() {
		p.expiration = m.Deadline
	}
	if id := m.Push.CollapseID; id != "" {
		if len(id) <= maxCollapseID {
			p.collapseID = id
		} else if !s.collapseIDLogged.Swap(true) {
			// Sending it would get 400 BadCollapseId for the whole message;
			// dropping it only loses coalescing. Logged once per Sender.
			s.log.Warn("apns collapse id longer than 64 bytes; sending without it", "message_id", m.ID, "bytes", len(id))
		}
	}
	if m.IdempotencyKey != "" {
		p.apnsID = apnsID(m.IdempotencyKey)
	}
	return channels.Result{}, true
}

const (
	devicePath  = "/3/device/"
	contentType = "application/json; charset=utf-8" // what apns2 sends
)

// buildDirect fills ps.req for the lean HTTP/2 client. The per-connection
// constant headers (authorization, topic, push type, priority, content
// type) are HPACK-indexed and cost a byte each after the first push; the
// per-push ones go as never-indexed literals.
func (s *Sender) buildDirect(ps *pushState) {
	p := &ps.p
	hdr := ps.fields[:0]
	if s.token != nil {
		hdr = append(hdr, h2.Field{Name: "authorization", Value: s.authorization()})
	}
	priority := "5"
	if p.priority == apns2.PriorityHigh {
		priority = "10"
	}
	hdr = append(hdr,
		h2.Field{Name: "apns-topic", Value: p.topic},
		h2.Field{Name: "apns-push-type", Value: p.pushType},
		h2.Field{Name: "apns-priority", Value: priority},
		h2.Field{Name: "content-type", Value: contentType},
	)
	if !p.expiration.IsZero() {
		hdr = append(hdr, h2.Field{Name: "apns-expiration", Value: strconv.FormatInt(p.expiration.Unix(), 10), Unique: true})
	}
	if p.collapseID != "" {
		hdr = append(hdr, h2.Field{Name: "apns-collapse-id", Value: p.collapseID, Unique: true})
	}
	if p.apnsID != "" {
		hdr = append(hdr, h2.Field{Name: "apns-id", Value: p.apnsID, Unique: true})
	}
	ps.req = h2.Request{Path: devicePath, PathSuffix: p.token, Header: hdr, Body: p.payload}
}

func (s *Sender) waitDirect(ctx context.Context, ps *pushState, res *apns2.Response) (retryAfter string, err error) {
	var resp h2.Response
	if err := ps.conn.h2.Wait(ctx, ps.call, &ps.req, &resp); err != nil {
		return "", err
	}
	res.StatusCode, res.ApnsID, res.ApnsUniqueID = resp.Status, resp.ID, resp.UniqueID
	if resp.Status != http.StatusOK && len(resp.Body) > 0 {
		decodeReason(resp.Body, res)
	}
	return resp.RetryAfter, nil
}

// decodeReason reads {"reason": ..., "timestamp": ...} as apns2 does. A body
// that is not JSON leaves the status to speak for itself.
func decodeReason(body []byte, res *apns2.Response) {
	var r apns2.Response
	if json.Unmarshal(body, &r) == nil {
		res.Reason, res.Timestamp = r.Reason, r.Timestamp
	}
}

// authorization returns the authorization header for the current JWT. It
// is cached until the JWT is due for re-signing (a timer drops it then) or
// refreshToken invalidates it: asking token.GenerateIfExpired per push
// costs a mutex and a clock read per push. Both happen under authMu, so a
// JWT that refreshToken just invalidated cannot be cached again.
func (s *Sender) authorization() string {
	if h := s.auth.Load(); h != nil {
		return *h
	}
	s.authMu.Lock()
	defer s.authMu.Unlock()
	if h := s.auth.Load(); h != nil {
		return *h
	}
	h := new("bearer " + s.token.GenerateIfExpired())
	s.token.Lock()
	due := time.Unix(s.token.IssuedAt+token.TokenTimeout, 0)
	s.token.Unlock()
	s.auth.Store(h)
	if s.authTimer != nil {
		s.authTimer.Stop()
	}
	s.authTimer = time.AfterFunc(time.Until(due), func() { s.auth.CompareAndSwap(h, nil) })
	return *h
}

func (s *Sender) pushAPNs2(ctx context.Context, cl *apns2.Client, p *pushRequest, res *apns2.Response) (retryAfter string, err error) {
	n := &apns2.Notification{
		DeviceToken: p.token,
		Topic:       p.topic,
		Payload:     p.payload, // apns2 copies it (json.Marshal) before the request, so the pooled buffer may be reused after Push returns
		PushType:    apns2.EPushType(p.pushType),
		Priority:    p.priority,
		Expiration:  p.expiration,
		CollapseID:  p.collapseID,
		ApnsID:      p.apnsID,
	}
	pc := &pushCtx{Context: ctx}
	r, err := cl.PushWithContext(pc, n)
	if err != nil {
		return "", err
	}
	*res = *r
	return pc.retryAfter, nil
}

// pick returns the connection with the fewest pushes in flight.
func (s *Sender) pick() *conn {
	best := s.conns[0]
	if len(s.conns) == 1 {
		return best
	}
	low := best.inFlight.Load()
	for _, c := range s.conns[1:] {
		if n := c.inFlight.Load(); n < low {
			best, low = c, n
		}
	}
	return best
}

func topicsFor(topic string) pushTopics {
	// Apple requires these suffixes on the bundle id for these push types.
	return pushTopics{
		voip:         topic + ".voip",
		complication: topic + ".complication",
		fileProvider: topic + ".pushkit.fileprovider",
		location:     topic + ".location-query",
		liveActivity: topic + ".push-type.liveactivity",
		pushToTalk:   topic + ".voip-ptt",
	}
}

func (s *Sender) topicFor(pushType string) string {
	switch apns2.EPushType(pushType) {
	case apns2.PushTypeVOIP:
		return s.topics.voip
	case apns2.PushTypeComplication:
		return s.topics.complication
	case apns2.PushTypeFileProvider:
		return s.topics.fileProvider
	case apns2.PushTypeLocation:
		return s.topics.location
	case apns2.PushTypeLiveActivity:
		return s.topics.liveActivity
	case apns2.PushTypePushToTalk:
		return s.topics.pushToTalk
	}
	return s.topic
}

// checkToken rejects what APNs would answer 400 for, without a round trip.
func checkToken(tok string) (code string, err error) {
	if tok == "" {
		return apns2.ReasonMissingDeviceToken, errors.New("device token is empty")
	}
	if len(tok)%2 != 0 || len(tok) > 200 {
		return apns2.ReasonBadDeviceToken, fmt.Errorf("device token has %d characters, want an even number up to 200", len(tok))
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return apns2.ReasonBadDeviceToken, errors.New("device token is not hex")
		}
	}
	return "", nil
}

// uuidNamespace is the namespace notifyd's apns-id UUIDs are derived in.
const uuidNamespace = "notifyd-apns-id1" // 16 bytes, like a namespace UUID

func apnsID(key string) string {
	var scratch [128]byte
	b := append(append(scratch[:0], uuidNamespace...), key...)
	var out [36]byte
	return string(appendUUID(out[:0], sha1.Sum(b))) //nolint:gosec // see import
}

// pushCtx carries the push's context and a slot for the Retry-After header,
// which apns2 drops from its Response. Embedding the caller's ctx makes it one
// allocation instead of context.WithValue plus a holder.
type pushCtx struct {
	context.Context
	retryAfter string
}

type pushCtxKey struct{}

func (p *pushCtx) Value(key any) any {
	if _, ok := key.(pushCtxKey); ok {
		return p
	}
	return p.Context.Value(key)
}

// retryAfterCapture copies Retry-After from non-200 answers into the push's
// pushCtx, the only way to get it past apns2.
type retryAfterCapture struct{ next *http2.Transport }

// CloseIdleConnections is what apns2's Client.CloseIdleConnections calls.
func (r retryAfterCapture) CloseIdleConnections() { r.next.CloseIdleConnections() }

func (r retryAfterCapture) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil && resp.StatusCode != http.StatusOK {
		if pc, ok := req.Context().Value(pushCtxKey{}).(*pushCtx); ok {
			pc.retryAfter = resp.Header.Get("Retry-After")
		}
	}
	return resp, err
}

func (s *Sender) transportError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return channels.Classify(fmt.Errorf("push notification: %w", ctxErr))
	}
	// url.Error repeats the request URL (with the device token); keep the cause.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, h2.ErrHeaderListTooLarge) {
		return channels.Permanent(channels.ReasonInvalid, "", fmt.Errorf("push to %s: %w", s.host, err))
	}
	return channels.Transient(channels.ReasonNetwork, "", 0, fmt.Errorf("push to %s: %w", s.host, err))
}

// classify maps a non-200 APNs answer to a *channels.Error.
func (s *Sender) classify(res *apns2.Response, retryAfterHeader string, m *channels.Message) *channels.Error {
	code := res.Reason
	err := fmt.Errorf("apns answered %d %s", res.StatusCode, code)
	switch {
	case res.StatusCode == http.StatusGone || code == apns2.ReasonUnregistered || code == apns2.ReasonExpiredToken:
		if !res.Timestamp.IsZero() {
			err = fmt.Errorf("apns answered %d %s: token invalid since %s", res.StatusCode, code, res.Timestamp.UTC().Format(time.RFC3339))
		}
		if code == "" {
			code = apns2.ReasonUnregistered
		}
		return channels.Permanent(channels.ReasonDeadAddress, code, err)
	case res.StatusCode == http.StatusBadRequest && (code == apns2.ReasonBadDeviceToken || code == apns2.ReasonDeviceTokenNotForTopic):
		return channels.Permanent(channels.ReasonDeadAddress, code, err)
	case res.StatusCode == http.StatusBadRequest, res.StatusCode == http.StatusRequestEntityTooLarge:
		return channels.Permanent(channels.ReasonInvalid, code, err)
	case res.StatusCode == http.StatusForbidden:
		if !s.authFailing.Swap(true) {
			s.log.Error("apns refused our credentials", "code", code, "message_id", m.ID)
		}
		if code == apns2.ReasonExpiredProviderToken {
			s.refreshToken()
			return channels.Transient(channels.ReasonAuth, code, 0, err)
		}
		return channels.Permanent(channels.ReasonAuth, code, err)
	case res.StatusCode == http.StatusTooManyRequests:
		return channels.Transient(channels.ReasonRateLimited, code, s.retryAfter(retryAfterHeader), err)
	case res.StatusCode >= 500:
		return channels.Transient(channels.ReasonUnavailable, code, s.retryAfter(retryAfterHeader), err)
	case res.StatusCode == http.StatusNotFound, res.StatusCode == http.StatusMethodNotAllowed:
		// BadPath/MethodNotAllowed: our request is wrong, not the message.
		return channels.Permanent(channels.ReasonRejected, code, err)
	}
	return channels.Permanent(channels.ReasonRejected, code, err)
}

// refreshToken makes apns2 sign a new JWT on the next push, unless the
// current one is younger than Apple's minimum refresh interval (refreshing
// then would only add TooManyProviderTokenUpdates).
func (s *Sender) refreshToken() {
	if s.token == nil {
		return
	}
	s.authMu.Lock()
	defer s.authMu.Unlock()
	s.token.Lock()
	defer s.token.Unlock()
	if s.now().Unix()-s.token.IssuedAt >= int64(minTokenRefresh/time.Second) {
		s.token.IssuedAt = 0
		s.auth.Store(nil)
	}
}

func (s *Sender) retryAfter(h string) time.Duration {
	return channels.ParseRetryAfter(h, s.now(), 0) // the pool caps it
}
