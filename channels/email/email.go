package email

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/tracking"
)

// TLSMode says how the SMTP session is encrypted.
type TLSMode string

const (
	// TLSStartTLS requires STARTTLS; a server that does not offer it fails
	// the connection (go-mail's TLSMandatory). The default.
	TLSStartTLS TLSMode = "starttls"
	// TLSStartTLSOpportunistic upgrades when the server offers STARTTLS and
	// continues in plain text otherwise.
	TLSStartTLSOpportunistic TLSMode = "starttls-opportunistic"
	// TLSImplicit speaks TLS from the first byte (SMTPS, usually port 465).
	TLSImplicit TLSMode = "tls"
	// TLSNone never encrypts; for a relay on localhost or a trusted network.
	TLSNone TLSMode = "none"
)

// AuthMethod is the SMTP AUTH mechanism.
type AuthMethod string

// AUTH mechanisms notifyd supports.
const (
	AuthNone    AuthMethod = "none"
	AuthPlain   AuthMethod = "plain"
	AuthLogin   AuthMethod = "login"
	AuthCRAMMD5 AuthMethod = "cram-md5"
)

// Defaults for optional Config fields.
const (
	DefaultConnections     = 8
	DefaultMessagesPerConn = 500
	DefaultDialTimeout     = 10 * time.Second
	DefaultCommandTimeout  = 30 * time.Second
	DefaultMaxIdle         = 30 * time.Second
	// DefaultMessagesPerWrite: 25 messages of a few KB are ~100 KB, well
	// inside a loopback or LAN socket buffer, and half the default batch of
	// 50, so a Send on one session writes twice. Measured with notifyd bench
	// email --postfix: see docs/configuration.md.
	DefaultMessagesPerWrite = 25
)

// Config is what an SMTP Sender needs.
type Config struct {
	// Host is the SMTP server's name or IP; it is also the name verified in
	// its certificate unless TLS.ServerName says otherwise.
	Host string
	// Port defaults by TLSMode: 587 (STARTTLS), 465 (implicit TLS), 25 (none).
	Port int
	// TLSMode defaults to TLSStartTLS (mandatory STARTTLS).
	TLSMode TLSMode
	// TLS is the trust configuration (CA bundle, server name).
	TLS channels.TLS
	// Auth defaults to AuthPlain when Username is set, AuthNone otherwise.
	Auth               AuthMethod
	Username, Password string
	// AllowInsecureAuth lets PLAIN/LOGIN credentials travel unencrypted to a
	// host that is not localhost. Off by default: go-mail then refuses.
	AllowInsecureAuth bool
	// HELO is the name sent in EHLO (default "localhost"); set it to the
	// sending host's public name for real MTAs.
	HELO string
	// From is the envelope and header sender when a message's Mail.From is empty.
	From string
	// MessageIDDomain is the right-hand side of generated Message-IDs
	// (<key@domain>); default: the From address's domain.
	MessageIDDomain string
	// Connections is the pool size: at most this many SMTP sessions are open
	// at once across all concurrent Send calls (8: with PIPELINING, eight
	// sessions keep a local relay busy on two cores, as smtp-source -s 8
	// does against smtp-sink).
	Connections int
	// DisablePipelining sends every command in its own round trip even when
	// the server offers PIPELINING (RFC 2920), for a relay that advertises it
	// but mishandles it.
	DisablePipelining bool
	// DisableChunking keeps to DATA even when the server offers CHUNKING
	// (RFC 3030) besides PIPELINING, for a relay that mishandles BDAT.
	DisableChunking bool
	// MessagesPerWrite is how many messages leave in one write when the
	// server offers PIPELINING and CHUNKING (25): their replies come back
	// together, so a session waits and wakes once per group, not per
	// message. Each message is still confirmed by its own reply.
	MessagesPerWrite int
	// MessagesPerConn closes a session (QUIT) after this many messages and
	// opens a fresh one, as many providers limit messages per session (500).
	MessagesPerConn int
	// DialTimeout bounds connect + TLS + EHLO + AUTH (10s).
	DialTimeout time.Duration
	// CommandTimeout bounds each SMTP command and the DATA transfer (30s).
	CommandTimeout time.Duration
	// MaxIdle closes pooled sessions idle for longer, before the server's own
	// idle timeout turns them into errors (30s).
	MaxIdle time.Duration
}

// Option configures optional Sender behaviour.
type Option func(*Sender)

// WithLogger sets the structured logger.
func WithLogger(l *slog.Logger) Option { return func(s *Sender) { s.logger = l } }

// WithTracking applies messages' tracking opt-in (Message.Track) with the
// daemon's tracking endpoint: open pixel, click links, one-click unsubscribe.
func WithTracking(l *tracking.Links) Option { return func(s *Sender) { s.links = l } }

// WithClock injects the clock for the Date header, deadlines and idle checks.
func WithClock(now func() time.Time) Option { return func(s *Sender) { s.now = now } }

// WithDialer replaces the TCP dialer (e.g. to bind a source address). The
// Sender still layers implicit TLS on top when TLSMode is TLSImplicit.
func WithDialer(d *net.Dialer) Option { return func(s *Sender) { s.dialer = d } }

// Sender sends Mail messages over a pool of reused SMTP sessions. It is safe
// for concurrent use.
type Sender struct {
	cfg    Config
	client *mail.Client
	tlsCfg *tls.Config
	dialer *net.Dialer
	logger *slog.Logger
	now    func() time.Time

	// slots holds one token per open-or-opening session, bounding the pool.
	slots chan struct{}

	mu     sync.Mutex
	idle   []*session // most recently used last
	closed bool

	dialFailing atomic.Bool // log a dead server once, not per message

	composer *composer
	links    *tracking.Links // nil: no tracking endpoint, Message.Track is ignored
}

var _ channels.Channel = (*Sender)(nil)

// session is one SMTP connection and what the pool knows about it.
type session struct {
	c        *smtp.Client
	raw      *guardedConn
	sent     int
	lastUsed time.Time
	broken   bool

	pipelining bool   // the server offers PIPELINING (RFC 2920)
	smtputf8   bool   // the server offers SMTPUTF8 (RFC 6531)
	chunking   bool   // PIPELINING and CHUNKING (RFC 3030): groups of messages per write
	dirty      bool   // chunking: the last transaction failed, so the next starts with RSET
	wbuf       []byte // the next write: commands and message content
}

// guardedConn is the TCP connection under a session (under TLS too). Once
// interrupted, every deadline it is given is in the past: go-mail refreshes
// deadlines before each command (and its UpdateDeadline waits for the mutex a
// blocked command holds), so a plain SetDeadline on cancellation could be
// undone a moment later.
type guardedConn struct {
	net.Conn
	mu          sync.Mutex
	interrupted bool
}

// pastDeadline is any instant already gone: it fails blocked I/O at once.
func pastDeadline() time.Time { return time.Unix(1, 0) }

func (g *guardedConn) interrupt() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.interrupted = true
	_ = g.Conn.SetDeadline(pastDeadline())
}

func (g *guardedConn) guard(t time.Time) time.Time {
	if g.interrupted {
		return pastDeadline()
	}
	return t
}

func (g *guardedConn) SetDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.Conn.SetDeadline(g.guard(t))
}

func (g *guardedConn) SetReadDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.Conn.SetReadDeadline(g.guard(t))
}

func (g *guardedConn) SetWriteDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.Conn.SetWriteDeadline(g.guard(t))
}

type dialHolderKey struct{}

// dialHolder receives the connection from inside go-mail's dial (through the
// dial context) so open can interrupt a handshake when its context ends.
type dialHolder struct {
	mu    sync.Mutex
	conn  *guardedConn
	fired bool
}

func (h *dialHolder) set(g *guardedConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conn = g
	if h.fired {
		g.interrupt()
	}
}

func (h *dialHolder) fire() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fired = true
	if h.conn != nil {
		h.conn.interrupt()
	}
}

func (h *dialHolder) get() *guardedConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conn
}

// New validates cfg and builds a Sender. It does not connect; sessions are
// opened on first use.
func New(cfg Config, opts ...Option) (*Sender, error) {
	s := &Sender{now: time.Now, logger: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	s.logger = s.logger.With("channel", channels.Email)
	if err := applyDefaults(&cfg); err != nil {
		return nil, err
	}
	s.cfg = cfg
	if s.dialer == nil {
		s.dialer = &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	}
	tlsCfg, err := cfg.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("build email TLS config: %w", err)
	}
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = cfg.Host
	}
	s.tlsCfg = tlsCfg

	mopts := []mail.Option{
		mail.WithPort(cfg.Port),
		mail.WithTimeout(cfg.CommandTimeout),
		mail.WithHELO(cfg.HELO),
		mail.WithTLSConfig(tlsCfg),
		mail.WithDialContextFunc(s.dial),
		// A NOOP before every message and an RSET after every success would
		// double the round trips per message; the pool detects dead
		// sessions on MAIL FROM instead and RSETs itself after failures.
		mail.WithoutNoop(),
		mail.WithoutRset(),
	}
	switch cfg.TLSMode {
	case TLSStartTLS:
		mopts = append(mopts, mail.WithTLSPolicy(mail.TLSMandatory))
	case TLSStartTLSOpportunistic:
		mopts = append(mopts, mail.WithTLSPolicy(mail.TLSOpportunistic))
	case TLSImplicit:
		// With a custom dial func go-mail leaves TLS to the dialer (s.dial);
		// WithSSL keeps it from also trying STARTTLS inside the TLS session.
		mopts = append(mopts, mail.WithSSL(), mail.WithTLSPolicy(mail.NoTLS))
	case TLSNone:
		mopts = append(mopts, mail.WithTLSPolicy(mail.NoTLS))
	}
	switch cfg.Auth {
	case AuthPlain:
		t := mail.SMTPAuthPlain
		if cfg.AllowInsecureAuth {
			t = mail.SMTPAuthPlainNoEnc
		}
		mopts = append(mopts, mail.WithSMTPAuth(t), mail.WithUsername(cfg.Username), mail.WithPassword(cfg.Password))
	case AuthLogin:
		t := mail.SMTPAuthLogin
		if cfg.AllowInsecureAuth {
			t = mail.SMTPAuthLoginNoEnc
		}
		mopts = append(mopts, mail.WithSMTPAuth(t), mail.WithUsername(cfg.Username), mail.WithPassword(cfg.Password))
	case AuthCRAMMD5:
		mopts = append(mopts, mail.WithSMTPAuth(mail.SMTPAuthCramMD5), mail.WithUsername(cfg.Username), mail.WithPassword(cfg.Password))
	}
	client, err := mail.NewClient(cfg.Host, mopts...)
	if err != nil {
		// go-mail's option errors never contain the password.
		return nil, fmt.Errorf("build SMTP client: %w", err)
	}
	s.client = client
	s.composer = newComposer()
	s.slots = make(chan struct{}, cfg.Connections)
	return s, nil
}

func applyDefaults(c *Config) error {
	if c.Host == "" {
		return errors.New("validate email config: host is required")
	}
	if c.TLSMode == "" {
		c.TLSMode = TLSStartTLS
	}
	switch c.TLSMode {
	case TLSStartTLS, TLSStartTLSOpportunistic:
		if c.Port == 0 {
			c.Port = 587
		}
	case TLSImplicit:
		if c.Port == 0 {
			c.Port = 465
		}
	case TLSNone:
		if c.Port == 0 {
			c.Port = 25
		}
	default:
		return fmt.Errorf("validate email config: TLS mode %q is not one of starttls, starttls-opportunistic, tls, none", c.TLSMode)
	}
	if c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("validate email config: port %d out of range", c.Port)
	}
	if c.Auth == "" {
		c.Auth = AuthNone
		if c.Username != "" {
			c.Auth = AuthPlain
		}
	}
	switch c.Auth {
	case AuthNone:
	case AuthPlain, AuthLogin, AuthCRAMMD5:
		if c.Username == "" || c.Password == "" {
			return fmt.Errorf("validate email config: auth %s needs a username and a password", c.Auth)
		}
	default:
		return fmt.Errorf("validate email config: auth %q is not one of none, plain, login, cram-md5", c.Auth)
	}
	if c.HELO == "" {
		c.HELO = "localhost"
	}
	if c.Connections < 0 || c.MessagesPerConn < 0 || c.MessagesPerWrite < 0 || c.DialTimeout < 0 || c.CommandTimeout < 0 || c.MaxIdle < 0 {
		return errors.New("validate email config: counts and timeouts must not be negative")
	}
	if c.Connections == 0 {
		c.Connections = DefaultConnections
	}
	if c.MessagesPerConn == 0 {
		c.MessagesPerConn = DefaultMessagesPerConn
	}
	if c.MessagesPerWrite == 0 {
		c.MessagesPerWrite = DefaultMessagesPerWrite
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	if c.MaxIdle == 0 {
		c.MaxIdle = DefaultMaxIdle
	}
	if c.From != "" {
		if err := checkHeaderValue("From", c.From); err != nil {
			return fmt.Errorf("validate email config: %w", err)
		}
	}
	return nil
}

// dial is go-mail's DialContextFunc. It wraps the TCP connection in a
// guardedConn, hands it to the dialHolder carried in ctx, and adds implicit
// TLS itself (go-mail skips its own TLS dialer when a dial func is set).
func (s *Sender) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	tcp, err := s.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	g := &guardedConn{Conn: tcp}
	if h, ok := ctx.Value(dialHolderKey{}).(*dialHolder); ok {
		h.set(g)
	}
	if s.cfg.TLSMode != TLSImplicit {
		return g, nil
	}
	// go-mail's smtp client recognises TLS by the *tls.Conn type (PLAIN and
	// LOGIN refuse to run otherwise), so the TLS layer must be outermost.
	tc := tls.Client(g, s.tlsCfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = tcp.Close()
		return nil, err
	}
	return tc, nil
}

// Name implements channels.Channel.
func (s *Sender) Name() string { return channels.Email }

// Close QUITs idle sessions; sessions in use close when their Send returns.
func (s *Sender) Close() error {
	s.mu.Lock()
	idle := s.idle
	s.idle, s.closed = nil, true
	s.mu.Unlock()
	for _, ss := range idle {
		s.closeSession(ss)
	}
	return nil
}

// Send delivers a batch over up to Config.Connections sessions and answers
// per message, in order. A message is accepted only once the server has
// answered 250 to its own end of DATA.
func (s *Sender) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	results := make([]channels.Result, len(batch))
	msgs := make([]*outMsg, len(batch))
	pending := make([]int, 0, len(batch))
	for i := range batch {
		if err := ctx.Err(); err != nil {
			results[i] = channels.Result{Err: ctxError(err)}
			continue
		}
		pending = append(pending, i)
	}
	defer func() {
		for _, m := range msgs {
			m.release()
		}
	}()
	if len(pending) == 0 {
		return results
	}
	w := &batchWork{s: s, batch: batch, msgs: msgs, pending: pending, results: results}
	// Spread the batch over the sessions that are free now, not over all
	// of them: with PIPELINING one session moves a message per round trip,
	// and workers that could only wait for a slot another Send holds cost a
	// goroutine and a wake-up each. At least one worker always waits.
	workers := max(1, min(s.cfg.Connections-len(s.slots), len(pending)))
	if workers == 1 {
		w.run(ctx)
	} else {
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() { w.run(ctx) })
		}
		wg.Wait()
	}
	// Messages no worker got to: every worker stopped on the context or on
	// failing to open a session.
	for k := int(min(w.next.Load(), int64(len(pending)))); k < len(pending); k++ {
		i := pending[k]
		w.mu.Lock()
		err := w.stopErr
		w.mu.Unlock()
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxError(ctxErr)
		}
		if err == nil {
			err = channels.Transient(channels.ReasonUnavailable, "", 0, errors.New("send mail: no SMTP session available"))
		}
		results[i] = channels.Result{ProviderID: results[i].ProviderID, Err: err}
	}
	return results
}

type batchWork struct {
	s       *Sender
	batch   []*channels.Message
	msgs    []*outMsg
	pending []int
	results []channels.Result
	next    atomic.Int64

	mu      sync.Mutex
	stopErr error
}

func (w *batchWork) stop(err error) {
	w.mu.Lock()
	w.stopErr = err
	w.mu.Unlock()
}

// claim takes the next message of the batch that is still worth sending and
// builds it, answering expired and malformed ones on the way. ok is false when none is left or ctx
// has ended.
func (w *batchWork) claim(ctx context.Context) (int, bool) {
	for {
		if ctx.Err() != nil {
			return -1, false
		}
		k := int(w.next.Add(1) - 1)
		if k >= len(w.pending) {
			return -1, false
		}
		i := w.pending[k]
		m := w.batch[i]
		now := w.s.now()
		if m != nil && !m.Deadline.IsZero() && !now.Before(m.Deadline) {
			w.results[i].Err = expiredError(now, m.Deadline)
			continue
		}
		// Messages are built by the workers as they claim them, so the
		// MIME work of one overlaps the network wait of another.
		msg, id, err := w.s.build(m, now)
		if err != nil {
			w.results[i].Err = err
			continue
		}
		w.msgs[i] = msg
		w.results[i].ProviderID = id
		return i, true
	}
}

// fail records a failed message; when ctx has ended the session may have
// been interrupted mid-command, so the context's error is the answer.
func (w *batchWork) fail(ctx context.Context, i int, te *txError) {
	if ctxErr := ctx.Err(); ctxErr != nil {
		w.results[i].Err = ctxError(ctxErr)
		return
	}
	w.results[i].Err = te.err
}

// run is one worker: it holds one pool slot, sends claimed messages on one
// session (replacing it when it breaks or reaches MessagesPerConn), and stops
// when the batch is done, ctx ends, or a session cannot be opened. With
// PIPELINING it claims the next message before ending the current one's
// DATA, so the end of one message and the envelope of the next share a
// write and a round trip.
func (w *batchWork) run(ctx context.Context) {
	s := w.s
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-s.slots }()

	// One AfterFunc per worker, not per message: it interrupts whichever
	// session the worker is using when ctx ends.
	var cur atomic.Pointer[guardedConn]
	stopWatch := context.AfterFunc(ctx, func() {
		if g := cur.Load(); g != nil {
			g.interrupt()
		}
	})
	ss := s.takeIdle()
	defer func() {
		if !stopWatch() && ss != nil {
			ss.broken = true // interrupted: its protocol state is unknown
		}
		if ss != nil {
			s.putIdle(ss)
		}
	}()
	drop := func() {
		ss.broken = true
		s.discard(ss)
		ss = nil
	}
	// Only a session taken from the idle pool may have been closed by the
	// server while idle; the chunking path checks it once (see probe).
	probed := ss == nil
	timeout := s.cfg.CommandTimeout

	i, ok := w.claim(ctx)
	for ok {
		reused := ss != nil
		if ss == nil {
			var err error
			if ss, err = s.open(ctx); err != nil {
				w.results[i].Err = err
				w.stop(err)
				return
			}
		}
		cur.Store(ss.raw)
		if ss.chunking {
			if reused && !probed {
				probed = true
				if te := ss.probe(timeout); te != nil {
					// Nothing was handed over: a fresh session takes
					// message i, as on the DATA path below.
					drop()
					if ctx.Err() != nil {
						w.fail(ctx, i, te)
						return
					}
					continue
				}
			}
			probed = true
			w.chunks(ctx, ss, i, timeout)
			ss.lastUsed = s.now()
			if ss.broken || ss.sent >= s.cfg.MessagesPerConn {
				s.discard(ss)
				ss = nil
			}
			i, ok = w.claim(ctx)
			continue
		}
		te := ss.envelope(w.msgs[i], timeout)
		if te != nil && reused && te.stale && ctx.Err() == nil {
			// A pooled session the server closed while idle fails on its
			// first command, before any mail was handed over: reopen once,
			// as net/http does for a reused keep-alive connection.
			drop()
			var err error
			if ss, err = s.open(ctx); err != nil {
				w.results[i].Err = err
				w.stop(err)
				return
			}
			cur.Store(ss.raw)
			te = ss.envelope(w.msgs[i], timeout)
		}
		if te != nil {
			w.fail(ctx, i, te)
			if te.broken || ctx.Err() != nil {
				drop()
			}
			i, ok = w.claim(ctx)
			continue
		}
		// The session is inside DATA for message i.
		i, ok = w.data(ctx, ss, i, timeout)
		ss.lastUsed = s.now()
		if ss.broken || ss.sent >= s.cfg.MessagesPerConn {
			s.discard(ss)
			ss = nil
		}
		if !ok {
			i, ok = w.claim(ctx)
		}
	}
}

// chunks sends message i and those claimed after it on ss, in groups of
// up to MessagesPerWrite, one write each (see sendChunked), until the batch
// is done, ctx ends, or the session breaks or reaches MessagesPerConn. Every
// message it claims is answered: its content leaves with its envelope, so
// none is handed to another session.
func (w *batchWork) chunks(ctx context.Context, ss *session, i int, timeout time.Duration) {
	s := w.s
	idx := make([]int, 0, s.cfg.MessagesPerWrite)
	group := make([]*outMsg, 0, s.cfg.MessagesPerWrite)
	fail := func(k int, te *txError) { w.fail(ctx, idx[k], te) }
	for ok := true; ok; {
		idx, group = idx[:0], group[:0]
		for ; ok; i, ok = w.claim(ctx) {
			o := w.msgs[i]
			if o.utf8 && !ss.smtputf8 {
				// envelope answers it without a word to the server.
				w.results[i].Err = ss.envelope(o, timeout).err
			} else {
				idx, group = append(idx, i), append(group, o)
			}
			if len(group) == s.cfg.MessagesPerWrite || ss.sent+len(group) >= s.cfg.MessagesPerConn {
				break
			}
		}
		if len(group) == 0 {
			return
		}
		ss.sendChunked(group, timeout, fail)
		if ss.broken || ctx.Err() != nil || ss.sent >= s.cfg.MessagesPerConn {
			ss.broken = ss.broken || ctx.Err() != nil
			return
		}
		if ok {
			i, ok = w.claim(ctx)
		}
	}
}

// data sends message i, already inside DATA on ss, and, with PIPELINING,
// the messages that follow on the same session. It returns a claimed
// message that still needs a session (the session broke before its
// envelope was answered), or ok false.
func (w *batchWork) data(ctx context.Context, ss *session, i int, timeout time.Duration) (int, bool) {
	s := w.s
	for {
		next, hasNext := -1, false
		if ss.pipelining && ss.sent+1 < s.cfg.MessagesPerConn {
			next, hasNext = w.claim(ctx)
		}
		var nextMsg *outMsg
		if hasNext {
			nextMsg = w.msgs[next]
			if nextMsg.utf8 && !ss.smtputf8 {
				// envelope answers it without a word to the server.
				w.results[next].Err = ss.envelope(nextMsg, timeout).err
				nextMsg, hasNext = nil, false
			}
		}
		te := ss.finish(w.msgs[i], nextMsg, timeout)
		if te != nil {
			w.fail(ctx, i, te)
			if te.broken || ctx.Err() != nil {
				// Nothing of the next message was handed over.
				ss.broken = true
				return next, hasNext
			}
		}
		if !hasNext {
			return -1, false
		}
		if te = ss.readEnvelope(); te != nil {
			if te.broken && ctx.Err() == nil {
				// Its envelope was never answered: another session may
				// still carry it.
				ss.broken = true
				return next, true
			}
			w.fail(ctx, next, te)
			if te.broken || ctx.Err() != nil {
				ss.broken = true
			}
			return -1, false
		}
		i = next
	}
}

// open dials, upgrades, authenticates and returns a new session.
func (s *Sender) open(ctx context.Context) (*session, error) {
	holder := &dialHolder{}
	dctx, cancel := context.WithTimeout(context.WithValue(ctx, dialHolderKey{}, holder), s.cfg.DialTimeout)
	defer cancel()
	stop := context.AfterFunc(dctx, holder.fire)
	c, err := s.client.DialToSMTPClientWithContext(dctx)
	stop()
	raw := holder.get()
	if err != nil {
		// go-mail leaves the connection open when EHLO, STARTTLS or AUTH fail.
		if raw != nil {
			_ = raw.Close()
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxError(ctxErr)
		}
		ce := classifyDial(err)
		if s.dialFailing.CompareAndSwap(false, true) {
			s.logger.Warn("open SMTP session failed", "server", s.serverAddr(), "reason", ce.Reason, "code", ce.Code, "err", ce.Err)
		}
		return nil, ce
	}
	if s.dialFailing.CompareAndSwap(true, false) {
		s.logger.Info("SMTP sessions open again", "server", s.serverAddr())
	}
	s.logger.Debug("SMTP session opened", "server", s.serverAddr())
	if raw == nil {
		_ = c.Close()
		return nil, channels.Transient(channels.ReasonNetwork, "", 0, errors.New("open SMTP session: dial did not go through the Sender's dialer"))
	}
	ss := &session{c: c, raw: raw, lastUsed: s.now(), wbuf: make([]byte, 0, 16<<10)}
	ss.pipelining, _ = c.Extension("PIPELINING")
	ss.smtputf8, _ = c.Extension("SMTPUTF8")
	ss.pipelining = ss.pipelining && !s.cfg.DisablePipelining
	ss.chunking, _ = c.Extension("CHUNKING")
	ss.chunking = ss.chunking && ss.pipelining && !s.cfg.DisableChunking
	return ss, nil
}

func (s *Sender) serverAddr() string { return net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port)) }

// takeIdle returns the most recently used idle session, closing any that sat
// idle past MaxIdle (the server has likely dropped them).
func (s *Sender) takeIdle() *session {
	now := s.now()
	var stale []*session
	s.mu.Lock()
	var got *session
	for len(s.idle) > 0 {
		ss := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if now.Sub(ss.lastUsed) > s.cfg.MaxIdle {
			stale = append(stale, ss)
			continue
		}
		got = ss
		break
	}
	s.mu.Unlock()
	for _, ss := range stale {
		s.closeSession(ss)
	}
	return got
}

func (s *Sender) putIdle(ss *session) {
	if ss.broken || ss.sent >= s.cfg.MessagesPerConn {
		s.discard(ss)
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.closeSession(ss)
		return
	}
	s.idle = append(s.idle, ss)
	s.mu.Unlock()
}

func (s *Sender) discard(ss *session) {
	if ss.broken {
		_ = ss.c.Close()
		return
	}
	s.closeSession(ss)
}

// closeSession QUITs politely with a short deadline; a server that does not
// answer in time is simply disconnected.
func (s *Sender) closeSession(ss *session) {
	_ = ss.raw.SetDeadline(s.now().Add(2 * time.Second))
	if err := ss.c.Quit(); err != nil {
		_ = ss.c.Close()
	}
	s.logger.Debug("SMTP session closed", "server", s.serverAddr(), "messages", ss.sent)
}

func ctxError(err error) *channels.Error {
	return channels.Classify(fmt.Errorf("send mail: %w", err))
}

func expiredError(now, deadline time.Time) *channels.Error {
	return channels.Permanent(channels.ReasonExpired, "", fmt.Errorf("send mail: deadline passed %s ago", now.Sub(deadline).Round(time.Millisecond)))
}
