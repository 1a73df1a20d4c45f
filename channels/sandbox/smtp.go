package sandbox

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // CRAM-MD5 is defined on MD5 (RFC 2195)
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SMTP TLS modes of the fake.
const (
	SMTPStartTLS = "starttls" // plain listener offering STARTTLS (the default)
	SMTPImplicit = "tls"      // TLS from the first byte (SMTPS, port 465 style)
	SMTPNoTLS    = "none"     // no TLS offered at all
)

// SMTPOptions configures the SMTP fake.
type SMTPOptions struct {
	// Addr to listen on; default "127.0.0.1:0".
	Addr string
	// TLS is SMTPStartTLS (default), SMTPImplicit or SMTPNoTLS.
	TLS string
	// Username and Password, when set, make AUTH (PLAIN, LOGIN, CRAM-MD5)
	// mandatory before MAIL FROM, as a submission server does.
	Username, Password string
	// AllowInsecureAuth permits AUTH before TLS (needed with SMTPNoTLS).
	AllowInsecureAuth bool
	// Domain is the server's name in its greeting ("sandbox.notifyd.test").
	Domain string
	// MaxMessageBytes rejects larger DATA with 552 (10 MiB).
	MaxMessageBytes int64
	// RecorderLimit sets Recorder.Limit (negative: count only, no parsing).
	RecorderLimit int
	// Now is the fake's clock for the recorder (time.Now).
	Now func() time.Time
}

// SMTP is a real SMTP server on loopback, built on github.com/emersion/go-smtp.
// It speaks ESMTP with STARTTLS (a certificate generated at start, trusted
// through CertPool), AUTH PLAIN/LOGIN/CRAM-MD5, PIPELINING and CHUNKING (go-smtp
// offers both and answers pipelined commands, BDAT too, in order; a MAIL
// inside an open transaction is refused as Postfix refuses it), and records every
// accepted message: envelope, parsed headers, the raw message
// (Received.Body) and its decoded text and HTML parts (Messages).
//
// Faults match the recipient address. Faults apply at RCPT TO: a Status of
// 4xx/5xx is the reply code, Reason the enhanced code and text ("5.1.1 user
// unknown"). DataFaults apply to the reply after the message content
// (end of DATA). Either may carry Latency or Drop (close the connection).
type SMTP struct {
	Faults     *Faults
	DataFaults *Faults
	Recorder   *Recorder

	opts SMTPOptions
	srv  *smtp.Server
	ln   net.Listener
	pool *x509.CertPool
	// certPEM is the generated certificate, for other processes to trust.
	certPEM []byte
	conns   atomic.Int64
	reads   atomic.Int64
	live    sync.Map
	msgs    atomic.Int64
	auths   atomic.Int64
	closed  chan struct{}
	once    sync.Once

	mu       sync.Mutex
	messages []SMTPMessage
}

// SMTPMessage is one message the fake accepted, parsed.
type SMTPMessage struct {
	From     string
	To       []string
	Header   mail.Header
	Text     string // the text/plain part, decoded
	HTML     string // the text/html part, decoded
	Raw      []byte
	TLS      bool   // the session was encrypted
	AuthUser string // who authenticated, if anyone
	Conn     int64  // ordinal of the TCP connection that carried it (1-based)
}

// NewSMTP starts the fake on 127.0.0.1 and an ephemeral port.
func NewSMTP(opts SMTPOptions) (*SMTP, error) {
	switch opts.TLS {
	case "":
		opts.TLS = SMTPStartTLS
	case SMTPStartTLS, SMTPImplicit, SMTPNoTLS:
	default:
		return nil, fmt.Errorf("start SMTP sandbox: unknown TLS mode %q", opts.TLS)
	}
	if opts.Domain == "" {
		opts.Domain = "sandbox.notifyd.test"
	}
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = 10 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	cert, pool, certPEM, err := loopbackCert()
	if err != nil {
		return nil, fmt.Errorf("start SMTP sandbox: %w", err)
	}
	s := &SMTP{
		Faults:     &Faults{},
		DataFaults: &Faults{},
		Recorder:   &Recorder{Limit: opts.RecorderLimit},
		opts:       opts,
		pool:       pool,
		certPEM:    certPEM,
		closed:     make(chan struct{}),
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = opts.Domain
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = 100
	srv.AllowInsecureAuth = opts.AllowInsecureAuth || opts.TLS == SMTPNoTLS
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if opts.TLS == SMTPStartTLS {
		srv.TLSConfig = tlsCfg
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for SMTP sandbox: %w", err)
	}
	counted := net.Listener(&smtpCountingListener{Listener: ln, n: &s.conns, live: &s.live, reads: &s.reads})
	if opts.TLS == SMTPImplicit {
		counted = tls.NewListener(counted, tlsCfg)
	}
	s.srv, s.ln = srv, ln
	go func() { _ = srv.Serve(counted) }()
	return s, nil
}

type smtpCountingListener struct {
	net.Listener
	n     *atomic.Int64
	reads *atomic.Int64
	live  *sync.Map // *smtpOrdinalConn -> struct{}
}

func (l *smtpCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	oc := &smtpOrdinalConn{Conn: c, ordinal: l.n.Add(1), live: l.live, reads: l.reads}
	l.live.Store(oc, struct{}{})
	return oc, nil
}

// smtpOrdinalConn remembers which accepted connection it is, so recorded
// messages say which connection carried them.
type smtpOrdinalConn struct {
	net.Conn
	ordinal int64
	live    *sync.Map
	reads   *atomic.Int64
}

func (c *smtpOrdinalConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.reads.Add(1)
	}
	return n, err
}

func (c *smtpOrdinalConn) Close() error {
	c.live.Delete(c)
	return c.Conn.Close()
}

// DropConnections closes every open client connection without a word, as a
// server does on its idle timeout or a restart. It returns how many it closed.
func (s *SMTP) DropConnections() int {
	n := 0
	s.live.Range(func(k, _ any) bool {
		_ = k.(*smtpOrdinalConn).Conn.Close()
		s.live.Delete(k)
		n++
		return true
	})
	return n
}

func (s *SMTP) liveConnections() int {
	n := 0
	s.live.Range(func(any, any) bool { n++; return true })
	return n
}

// Addr is the listening host:port.
func (s *SMTP) Addr() string { return s.ln.Addr().String() }

// Host is the listening IP ("127.0.0.1").
func (s *SMTP) Host() string { h, _, _ := net.SplitHostPort(s.Addr()); return h }

// Port is the listening port.
func (s *SMTP) Port() int { _, p, _ := net.SplitHostPort(s.Addr()); n, _ := strconv.Atoi(p); return n }

// URL is "smtp://127.0.0.1:port" (or smtps:// in implicit TLS mode).
func (s *SMTP) URL() string {
	if s.opts.TLS == SMTPImplicit {
		return "smtps://" + s.Addr()
	}
	return "smtp://" + s.Addr()
}

// CertPool trusts the fake's generated certificate (valid for 127.0.0.1, ::1
// and localhost).
func (s *SMTP) CertPool() *x509.CertPool { return s.pool }

// CertPEM is the fake's certificate in PEM, for other processes to trust.
func (s *SMTP) CertPEM() []byte { return s.certPEM }

// Connections is how many TCP connections the fake accepted.
func (s *SMTP) Connections() int64 { return s.conns.Load() }

// Accepted is how many messages the fake accepted (250 after DATA).
func (s *SMTP) Accepted() int64 { return s.msgs.Load() }

// Reads counts the reads from client connections that returned data: with
// PIPELINING (RFC 2920) a message costs about one, without it four or more
// (MAIL, RCPT, DATA and the content each wait for a reply).
func (s *SMTP) Reads() int64 { return s.reads.Load() }

// Auths is how many successful AUTH exchanges the fake saw.
func (s *SMTP) Auths() int64 { return s.auths.Load() }

// Messages returns the accepted messages kept, oldest first.
func (s *SMTP) Messages() []SMTPMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SMTPMessage(nil), s.messages...)
}

// Reset forgets recorded messages and counters (faults stay).
func (s *SMTP) Reset() {
	s.mu.Lock()
	s.messages = nil
	s.mu.Unlock()
	s.Recorder.Reset()
	s.msgs.Store(0)
	s.auths.Store(0)
	s.conns.Store(0)
}

// Close stops the server and drops every connection.
//
// It waits for the connection handlers to end rather than calling go-smtp's
// Server.Close while they run: that one races with a BDAT transfer in
// progress (Conn.Close clears the chunk pipe under a lock handleBdat does
// not take), which the race detector reports in the tests that stop a stalled
// server.
func (s *SMTP) Close() error {
	s.once.Do(func() { close(s.closed) })
	err := s.ln.Close()
	s.DropConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := s.srv.Shutdown(ctx); serr != nil && !errors.Is(serr, net.ErrClosed) && !errors.Is(serr, smtp.ErrServerClosed) {
		return serr
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (s *SMTP) newSession(c *smtp.Conn) (smtp.Session, error) {
	var ordinal int64
	raw := c.Conn()
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if oc, ok := raw.(*smtpOrdinalConn); ok {
		ordinal = oc.ordinal
	}
	return &smtpSession{srv: s, conn: c, ordinal: ordinal}, nil
}

type smtpSession struct {
	srv      *SMTP
	conn     *smtp.Conn
	ordinal  int64
	authUser string
	from     string
	rcpts    []string
	inMail   bool // MAIL accepted, transaction not ended by RSET or an answered DATA
}

func (ss *smtpSession) AuthMechanisms() []string {
	if ss.srv.opts.Username == "" {
		return nil
	}
	return []string{sasl.Plain, sasl.Login, "CRAM-MD5"}
}

func (ss *smtpSession) Auth(mech string) (sasl.Server, error) {
	o := ss.srv.opts
	check := func(user, pass string) error {
		if user != o.Username || pass != o.Password {
			return smtp.ErrAuthFailed
		}
		ss.authUser = user
		ss.srv.auths.Add(1)
		return nil
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return smtp.ErrAuthFailed
			}
			return check(user, pass)
		}), nil
	case sasl.Login:
		return &smtpLoginServer{check: check}, nil
	case "CRAM-MD5":
		return &smtpCRAMServer{domain: o.Domain, verify: func(user, digest string, challenge []byte) error {
			if !hmac.Equal([]byte(digest), []byte(smtpCRAMDigest(o.Password, challenge))) {
				return smtp.ErrAuthFailed
			}
			return check(user, o.Password)
		}}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (ss *smtpSession) Reset() { ss.from, ss.rcpts, ss.inMail = "", nil, false }

func (ss *smtpSession) Logout() error { return nil }

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if ss.srv.opts.Username != "" && ss.authUser == "" {
		return smtp.ErrAuthRequired
	}
	if ss.inMail {
		// As Postfix answers: a transaction whose RCPT or BDAT was refused
		// stays open until RSET (go-smtp alone would start a new one), so a
		// client that pipelines the next MAIL without RSET is caught here.
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Error: nested MAIL command"}
	}
	if _, err := mail.ParseAddress(from); err != nil && from != "" {
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "Malformed sender address"}
	}
	ss.from, ss.inMail = from, true
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if _, err := mail.ParseAddress(to); err != nil {
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Malformed recipient address"}
	}
	if err := ss.applyFault(ss.srv.Faults.Match(to)); err != nil {
		return err
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err // go-smtp maps a too-large body to 552
	}
	for _, to := range ss.rcpts {
		if err := ss.applyFault(ss.srv.DataFaults.Match(to)); err != nil {
			return err
		}
	}
	if len(ss.rcpts) == 0 {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No recipients"}
	}
	ss.srv.msgs.Add(1)
	if ss.srv.Recorder.Limit < 0 {
		ss.srv.Recorder.Add(Received{})
		return nil
	}
	msg := SMTPMessage{From: ss.from, To: append([]string(nil), ss.rcpts...), Raw: raw, AuthUser: ss.authUser, Conn: ss.ordinal}
	_, msg.TLS = ss.conn.TLSConnectionState()
	parsed, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Malformed message headers"}
	}
	msg.Header = parsed.Header
	if err := smtpParseBody(&msg, parsed); err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Malformed MIME body: " + err.Error()}
	}
	hdr := make(map[string]string, len(parsed.Header)+2)
	for k, v := range parsed.Header {
		hdr[k] = strings.Join(v, ", ")
	}
	hdr[":mail-from"] = ss.from
	hdr[":conn"] = strconv.FormatInt(ss.ordinal, 10)
	at := ss.srv.opts.Now()
	for _, to := range ss.rcpts {
		ss.srv.Recorder.Add(Received{Provider: "smtp", Address: to, Headers: hdr, Body: raw, Status: 250, At: at})
	}
	limit := ss.srv.Recorder.Limit
	if limit == 0 {
		limit = 10000
	}
	ss.srv.mu.Lock()
	if len(ss.srv.messages) >= limit {
		ss.srv.messages = ss.srv.messages[1:]
	}
	ss.srv.messages = append(ss.srv.messages, msg)
	ss.srv.mu.Unlock()
	return nil
}

// applyFault turns a matched fault into the SMTP answer. Drop closes the TCP
// connection under go-smtp, which the client sees as EOF mid-command.
func (ss *smtpSession) applyFault(f *Fault) error {
	if f == nil {
		return nil
	}
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-ss.srv.closed:
			t.Stop()
		}
	}
	if f.Drop {
		_ = ss.conn.Conn().Close()
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Connection dropped"}
	}
	if f.Status < 400 {
		return nil
	}
	enh, text := smtpSplitEnhanced(f.Reason)
	if enh == smtp.EnhancedCodeNotSet {
		enh = smtp.EnhancedCode{f.Status / 100, 0, 0}
	}
	if text == "" {
		text = "Injected failure"
	}
	return &smtp.SMTPError{Code: f.Status, EnhancedCode: enh, Message: text}
}

// smtpSplitEnhanced splits "5.1.1 user unknown" into the enhanced code and text.
func smtpSplitEnhanced(reason string) (smtp.EnhancedCode, string) {
	first, rest, _ := strings.Cut(strings.TrimSpace(reason), " ")
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return smtp.EnhancedCodeNotSet, strings.TrimSpace(reason)
	}
	var ec smtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return smtp.EnhancedCodeNotSet, strings.TrimSpace(reason)
		}
		ec[i] = n
	}
	return ec, rest
}

func smtpParseBody(msg *SMTPMessage, parsed *mail.Message) error {
	ct := parsed.Header.Get("Content-Type")
	if ct == "" {
		ct = "text/plain"
	}
	return smtpWalkPart(msg, ct, parsed.Header.Get("Content-Transfer-Encoding"), parsed.Body)
}

func smtpWalkPart(msg *SMTPMessage, contentType, cte string, body io.Reader) error {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return fmt.Errorf("parse content type: %w", err)
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read part: %w", err)
			}
			pct := p.Header.Get("Content-Type")
			if pct == "" {
				pct = "text/plain"
			}
			if err := smtpWalkPart(msg, pct, p.Header.Get("Content-Transfer-Encoding"), p); err != nil {
				return err
			}
		}
	}
	decoded, err := smtpDecodeCTE(cte, body)
	if err != nil {
		return err
	}
	switch mt {
	case "text/plain":
		msg.Text = decoded
	case "text/html":
		msg.HTML = decoded
	}
	return nil
}

func smtpDecodeCTE(cte string, r io.Reader) (string, error) {
	var rd io.Reader
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "quoted-printable":
		rd = quotedprintable.NewReader(r)
	case "base64":
		rd = base64.NewDecoder(base64.StdEncoding, r)
	default:
		rd = r
	}
	b, err := io.ReadAll(rd)
	if err != nil {
		return "", fmt.Errorf("decode %s body: %w", cte, err)
	}
	return string(b), nil
}

// smtpLoginServer is the server side of SASL LOGIN (draft-murchison-sasl-login),
// which go-sasl only implements as a client.
type smtpLoginServer struct {
	check func(user, pass string) error
	step  int
	user  string
}

func (l *smtpLoginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if len(resp) > 0 { // initial response carries the user name
			l.user = string(resp)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(resp)
		l.step++
		return []byte("Password:"), false, nil
	case 2:
		l.step++
		return nil, true, l.check(l.user, string(resp))
	}
	return nil, false, errors.New("unexpected LOGIN response")
}

// smtpCRAMServer is the server side of CRAM-MD5 (RFC 2195).
type smtpCRAMServer struct {
	verify    func(user, digest string, challenge []byte) error
	domain    string
	challenge []byte
}

func (c *smtpCRAMServer) Next(resp []byte) ([]byte, bool, error) {
	if c.challenge == nil {
		var n [8]byte
		_, _ = rand.Read(n[:])
		c.challenge = fmt.Appendf(nil, "<%s.%d@%s>", hex.EncodeToString(n[:]), time.Now().Unix(), c.domain)
		return c.challenge, false, nil
	}
	user, digest, ok := strings.Cut(string(resp), " ")
	if !ok {
		return nil, true, smtp.ErrAuthFailed
	}
	return nil, true, c.verify(user, digest, c.challenge)
}

// smtpCRAMDigest is HMAC-MD5(secret, challenge) in hex, per RFC 2195.
func smtpCRAMDigest(secret string, challenge []byte) string {
	m := hmac.New(md5.New, []byte(secret))
	m.Write(challenge)
	return hex.EncodeToString(m.Sum(nil))
}
