package apns

import (
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // RFC 9562 name-based UUIDs are defined over SHA-1; not a security use
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"

	"github.com/notifyd/notifyd/channels"
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
}

// WithConnections sets how many HTTP/2 connections (one apns2 client each)
// the Sender spreads pushes over; default 2. Apple asks for few long-lived
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
// records and syscalls on or off; default on. See coalescingConn.
func WithWriteCoalescing(on bool) Option { return func(o *options) { o.coalesce = on } }

// WithReadIdleTimeout sets how long a silent connection waits before a
// health-check PING; default 15s (what apns2 uses).
func WithReadIdleTimeout(d time.Duration) Option {
	return func(o *options) { o.readIdleTimeout = d }
}

// Sender pushes through N apns2 clients, each with its own HTTP/2 transport
// (and so its own connection), choosing the least loaded per push.
type Sender struct {
	topic   string
	host    string // scheme://host:port, for error text
	conns   []*conn
	token   *token.Token
	log     *slog.Logger
	now     func() time.Time
	workers int
	bufs    sync.Pool

	// authFailing lets a run of auth failures log once, not per push.
	authFailing      atomic.Bool
	collapseIDLogged atomic.Bool
}

type conn struct {
	client   *apns2.Client
	inFlight atomic.Int64
}

var _ channels.Channel = (*Sender)(nil)

// minTokenRefresh is Apple's limit: refreshing the provider token more often
// than every 20 minutes earns 429 TooManyProviderTokenUpdates.
const minTokenRefresh = 20 * time.Minute

// New validates cfg, loads the credentials and prepares the clients. It does
// not connect: the first push does.
func New(cfg Config, opts ...Option) (*Sender, error) {
	o := options{connections: 2, maxInFlight: 500, now: time.Now, dialTimeout: 10 * time.Second, readIdleTimeout: 15 * time.Second, coalesce: true}
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
	s := &Sender{topic: cfg.Topic, host: host, log: o.logger.With("channel", channels.APNs), now: o.now, workers: o.maxInFlight}
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
	for range o.connections {
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
		s.conns = append(s.conns, &conn{client: &apns2.Client{
			Host:        host,
			Certificate: cert,
			Token:       s.token,
			// No http.Client.Timeout: the caller's ctx bounds each push, and
			// a client timeout would arm a timer per request.
			HTTPClient: &http.Client{Transport: retryAfterCapture{tr}},
		}})
	}
	auth := "certificate"
	if tokenAuth {
		auth = "token"
	}
	s.log.Info("apns sender ready", "host", host, "auth", auth, "connections", o.connections, "topic", cfg.Topic)
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

// Name is channels.APNs.
func (s *Sender) Name() string { return channels.APNs }

// Close closes idle connections. Pushes in flight finish first.
func (s *Sender) Close() {
	for _, c := range s.conns {
		c.client.CloseIdleConnections()
	}
}

// Send pushes the batch concurrently (at most the in-flight limit at once)
// and answers per message, in order.
func (s *Sender) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	results := make([]channels.Result, len(batch))
	workers := min(len(batch), s.workers)
	if workers <= 1 {
		for i, m := range batch {
			results[i] = s.push(ctx, m)
		}
		return results
	}
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1)) - 1
			if i >= len(batch) {
				return
			}
			results[i] = s.push(ctx, batch[i])
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

var (
	errNoContent = errors.New("message has no push content")
	errExpired   = errors.New("message deadline passed before sending")
)

func (s *Sender) push(ctx context.Context, m *channels.Message) channels.Result {
	if err := ctx.Err(); err != nil {
		return channels.Result{Err: channels.Classify(fmt.Errorf("push notification: %w", err))}
	}
	if m == nil || m.Push == nil {
		return channels.Result{Err: channels.Permanent(channels.ReasonInvalid, "", errNoContent)}
	}
	if code, err := checkToken(m.To); err != nil {
		if code == apns2.ReasonBadDeviceToken {
			return channels.Result{Err: channels.Permanent(channels.ReasonDeadAddress, code, err)}
		}
		return channels.Result{Err: channels.Permanent(channels.ReasonInvalid, code, err)}
	}
	now := s.now()
	if !m.Deadline.IsZero() && !now.Before(m.Deadline) {
		return channels.Result{Err: channels.Permanent(channels.ReasonExpired, "", errExpired)}
	}
	pushType := m.Push.PushType
	if pushType == "" {
		pushType = string(apns2.PushTypeAlert)
	}

	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	payload, err := appendPayload((*bp)[:0], m.Push, pushType)
	*bp = payload[:0]
	if err != nil {
		return channels.Result{Err: channels.Permanent(channels.ReasonInvalid, "", fmt.Errorf("build payload: %w", err))}
	}
	limit := maxPayload
	if pushType == string(apns2.PushTypeVOIP) {
		limit = maxVoIPPayload
	}
	if len(payload) > limit {
		return channels.Result{Err: channels.Permanent(channels.ReasonInvalid, apns2.ReasonPayloadTooLarge,
			fmt.Errorf("build payload: %d bytes exceeds the %d-byte limit", len(payload), limit))}
	}

	n := &apns2.Notification{
		DeviceToken: m.To,
		Topic:       s.topicFor(pushType),
		Payload:     payload, // apns2 copies it (json.Marshal) before the request, so the pooled buffer may be reused after Push returns
		PushType:    apns2.EPushType(pushType),
		Priority:    apns2.PriorityLow,
	}
	// Apple rejects priority 10 for background pushes.
	if m.High && pushType != string(apns2.PushTypeBackground) {
		n.Priority = apns2.PriorityHigh
	}
	if !m.Deadline.IsZero() {
		n.Expiration = m.Deadline
	}
	if id := m.Push.CollapseID; id != "" {
		if len(id) <= maxCollapseID {
			n.CollapseID = id
		} else if !s.collapseIDLogged.Swap(true) {
			// Sending it would get 400 BadCollapseId for the whole message;
			// dropping it only loses coalescing. Logged once per Sender.
			s.log.Warn("apns collapse id longer than 64 bytes; sending without it", "message_id", m.ID, "bytes", len(id))
		}
	}
	if m.IdempotencyKey != "" {
		n.ApnsID = apnsID(m.IdempotencyKey)
	}

	c := s.pick()
	c.inFlight.Add(1)
	pc := &pushCtx{Context: ctx}
	res, err := c.client.PushWithContext(pc, n)
	c.inFlight.Add(-1)
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
	return channels.Result{ProviderID: res.ApnsID, Err: s.classify(res, pc.retryAfter, m)}
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

func (s *Sender) topicFor(pushType string) string {
	// Apple requires these suffixes on the bundle id for these push types.
	switch apns2.EPushType(pushType) {
	case apns2.PushTypeVOIP:
		return s.topic + ".voip"
	case apns2.PushTypeComplication:
		return s.topic + ".complication"
	case apns2.PushTypeFileProvider:
		return s.topic + ".pushkit.fileprovider"
	case apns2.PushTypeLocation:
		return s.topic + ".location-query"
	case apns2.PushTypeLiveActivity:
		return s.topic + ".push-type.liveactivity"
	case apns2.PushTypePushToTalk:
		return s.topic + ".voip-ptt"
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
	s.token.Lock()
	defer s.token.Unlock()
	if s.now().Unix()-s.token.IssuedAt >= int64(minTokenRefresh/time.Second) {
		s.token.IssuedAt = 0
	}
}

func (s *Sender) retryAfter(h string) time.Duration {
	return channels.ParseRetryAfter(h, s.now(), 0) // the pool caps it
}
