package sandbox

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// APNsOptions configures the APNs fake.
type APNsOptions struct {
	// Addr to listen on; default "127.0.0.1:0".
	Addr string
	// TokenKey, when set, turns on token auth: every request needs a bearer
	// ES256 JWT signed by the matching private key, with KeyID as kid and
	// TeamID as iss, issued within the last hour.
	TokenKey *ecdsa.PublicKey
	KeyID    string
	TeamID   string
	// ClientCAs, when set, turns on certificate auth: the TLS handshake
	// requires a client certificate signed by one of these.
	ClientCAs *x509.CertPool
	// Topics, when non-empty, are the only apns-topic values accepted.
	Topics []string
	// MaxConcurrentStreams per connection; default 1000 (what APNs grants).
	MaxConcurrentStreams uint32
	// RecordLimit is the Recorder's Limit (negative: count only).
	RecordLimit int
	// Now is the clock for JWT age checks and 410 timestamps; default time.Now.
	Now func() time.Time
}

// APNs is a fake of Apple's provider API: HTTP/2 over TLS, POST
// /3/device/{token}, the apns-* headers, bearer JWT or client-certificate
// auth, and {"reason": ...} error bodies.
type APNs struct {
	Faults   *Faults
	Recorder *Recorder

	opts     APNsOptions
	ln       net.Listener
	srv      *http.Server
	certPEM  []byte
	pool     *x509.CertPool
	topics   map[string]bool
	served   sync.WaitGroup
	bufs     sync.Pool
	nextID   atomic.Uint64
	conns    atomic.Int64
	inFlight atomic.Int64 // requests being answered now
	peak     atomic.Int64 // most requests answered at once
	bearer   atomic.Pointer[verifiedBearer]
	closed   atomic.Bool
	serveErr error
}

// verifiedBearer caches the last JWT that verified, as APNs does: ES256
// verification costs ~100 µs and the fake must stay cheap (it is measured).
type verifiedBearer struct {
	token string
	iat   int64
}

// apnsMaxPayload and apnsMaxVoIPPayload are Apple's payload limits.
const (
	apnsMaxPayload     = 4096
	apnsMaxVoIPPayload = 5120
	apnsTokenLifetime  = time.Hour
)

// NewAPNs starts the fake with a freshly generated self-signed certificate
// for 127.0.0.1, ::1 and localhost.
func NewAPNs(opts APNsOptions) (*APNs, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.MaxConcurrentStreams == 0 {
		opts.MaxConcurrentStreams = 1000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TokenKey != nil && (opts.KeyID == "" || opts.TeamID == "") {
		return nil, errors.New("start apns sandbox: token auth needs KeyID and TeamID")
	}
	cert, _, certPEM, err := loopbackCert()
	if err != nil {
		return nil, fmt.Errorf("start apns sandbox: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	a := &APNs{
		Faults:   &Faults{},
		Recorder: &Recorder{Limit: opts.RecordLimit},
		opts:     opts,
		certPEM:  certPEM,
		pool:     pool,
	}
	if len(opts.Topics) > 0 {
		a.topics = make(map[string]bool, len(opts.Topics))
		for _, t := range opts.Topics {
			a.topics[t] = true
		}
	}
	a.bufs.New = func() any { b := make([]byte, apnsMaxVoIPPayload+1); return &b }
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	if opts.ClientCAs != nil {
		tlsCfg.ClientCAs = opts.ClientCAs
		tlsCfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	a.ln, err = net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("start apns sandbox: %w", err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP2(true)
	a.srv = &http.Server{
		Handler:           a,
		TLSConfig:         tlsCfg,
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: int(opts.MaxConcurrentStreams)},
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				a.conns.Add(1)
			}
		},
	}
	a.served.Add(1)
	go func() {
		defer a.served.Done()
		if err := a.srv.ServeTLS(a.ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.serveErr = err
		}
	}()
	return a, nil
}

// URL is the base URL to configure as the APNs host ("https://127.0.0.1:port").
func (a *APNs) URL() string { return "https://" + a.ln.Addr().String() }

// Addr is the listening address.
func (a *APNs) Addr() string { return a.ln.Addr().String() }

// CertPool trusts the fake's certificate.
func (a *APNs) CertPool() *x509.CertPool { return a.pool }

// CertPEM is the fake's certificate in PEM, for other processes to trust.
func (a *APNs) CertPEM() []byte { return a.certPEM }

// Connections is how many client connections the fake has accepted.
func (a *APNs) Connections() int { return int(a.conns.Load()) }

// PeakInFlight is the most requests the fake was answering at once (a
// latency fault holds each one): the concurrency a client reached.
func (a *APNs) PeakInFlight() int { return int(a.peak.Load()) }

// Close stops the fake and drops its connections.
func (a *APNs) Close() error {
	if a.closed.Swap(true) {
		return nil
	}
	err := a.srv.Close()
	a.served.Wait()
	if err == nil {
		err = a.serveErr
	}
	return err
}

const apnsPathPrefix = "/3/device/"

// ServeHTTP answers one push the way APNs does.
func (a *APNs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cur := a.inFlight.Add(1)
	defer a.inFlight.Add(-1)
	for p := a.peak.Load(); cur > p && !a.peak.CompareAndSwap(p, cur); p = a.peak.Load() {
	}
	tok, ok := strings.CutPrefix(r.URL.Path, apnsPathPrefix)
	switch {
	case !ok:
		a.reject(w, r, tok, http.StatusNotFound, "BadPath", nil)
		return
	case r.Method != http.MethodPost:
		a.reject(w, r, tok, http.StatusMethodNotAllowed, "MethodNotAllowed", nil)
		return
	case r.ProtoMajor != 2:
		a.reject(w, r, tok, http.StatusBadRequest, "BadPath", nil)
		return
	}
	if reason, status := a.checkAuth(r); reason != "" {
		a.reject(w, r, tok, status, reason, nil)
		return
	}
	if reason := apnsCheckHeaders(r.Header, a.topics); reason != "" {
		a.reject(w, r, tok, http.StatusBadRequest, reason, nil)
		return
	}
	if tok == "" {
		a.reject(w, r, tok, http.StatusBadRequest, "MissingDeviceToken", nil)
		return
	}
	if !apnsIsHexToken(tok) {
		a.reject(w, r, tok, http.StatusBadRequest, "BadDeviceToken", nil)
		return
	}
	limit := apnsMaxPayload
	if r.Header.Get("Apns-Push-Type") == "voip" {
		limit = apnsMaxVoIPPayload
	}
	bp := a.bufs.Get().(*[]byte)
	defer a.bufs.Put(bp)
	n, err := apnsReadAtMost(r.Body, (*bp)[:limit+1])
	if err != nil {
		// The client reset the stream or went away: nothing to answer.
		return
	}
	body := (*bp)[:n]
	switch {
	case n == 0:
		a.reject(w, r, tok, http.StatusBadRequest, "PayloadEmpty", body)
		return
	case n > limit:
		a.reject(w, r, tok, http.StatusRequestEntityTooLarge, "PayloadTooLarge", body)
		return
	}
	if f := a.Faults.Match(tok); f != nil {
		if !a.applyFault(w, r, tok, f, body) {
			return
		}
	}
	id := r.Header.Get("Apns-Id")
	if id == "" {
		id = a.newID()
	}
	w.Header()["Apns-Id"] = []string{id}
	w.WriteHeader(http.StatusOK)
	a.record(r, tok, http.StatusOK, body)
}

// applyFault plays f; it reports whether the request should go on to succeed
// (a pure latency fault).
func (a *APNs) applyFault(w http.ResponseWriter, r *http.Request, tok string, f *Fault, body []byte) bool {
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return false
		}
	}
	if f.Drop {
		// HTTP/2 multiplexes many pushes on one connection; APNs drops a
		// stream with RST_STREAM, which is what aborting the handler sends.
		panic(http.ErrAbortHandler)
	}
	if f.Status == 0 || f.Status == http.StatusOK {
		return true
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
	}
	a.reject(w, r, tok, f.Status, f.Reason, body)
	return false
}

func (a *APNs) reject(w http.ResponseWriter, r *http.Request, tok string, status int, reason string, body []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	id := r.Header.Get("Apns-Id")
	if id == "" {
		id = a.newID()
	}
	h["Apns-Id"] = []string{id}
	w.WriteHeader(status)
	var out []byte
	out = append(out, `{"reason":`...)
	out = strconv.AppendQuote(out, reason)
	if status == http.StatusGone {
		out = append(out, `,"timestamp":`...)
		out = strconv.AppendInt(out, a.opts.Now().UnixMilli(), 10)
	}
	out = append(out, '}')
	_, _ = w.Write(out)
	a.record(r, tok, status, body)
}

func (a *APNs) record(r *http.Request, tok string, status int, body []byte) {
	if a.Recorder.Limit < 0 {
		a.Recorder.Add(Received{})
		return
	}
	hdr := make(map[string]string, 8)
	for k, v := range r.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "apns-") || lk == "content-type" {
			hdr[lk] = strings.Join(v, ",")
		}
	}
	// The bearer is a credential: record that it came, never what it was.
	if r.Header.Get("Authorization") != "" {
		hdr["authorization"] = "bearer [redacted]"
	}
	a.Recorder.Add(Received{
		Provider: "apns",
		Address:  tok,
		Headers:  hdr,
		Body:     append([]byte(nil), body...),
		Status:   status,
		At:       a.opts.Now(),
	})
}

func (a *APNs) newID() string {
	n := a.nextID.Add(1)
	var b [16]byte
	b[0] = 0xa5
	for i := 15; i >= 8; i-- {
		b[i] = byte(n)
		n >>= 8
	}
	b[6], b[8] = 0x40, 0x80
	const hexd = "0123456789ABCDEF" // APNs answers upper-case ids
	out := make([]byte, 0, 36)
	for i, c := range b {
		switch i {
		case 4, 6, 8, 10:
			out = append(out, '-')
		}
		out = append(out, hexd[c>>4], hexd[c&0xf])
	}
	return string(out)
}

func (a *APNs) checkAuth(r *http.Request) (reason string, status int) {
	if a.opts.ClientCAs != nil && (r.TLS == nil || len(r.TLS.PeerCertificates) == 0) {
		return "BadCertificate", http.StatusForbidden
	}
	if a.opts.TokenKey == nil {
		return "", 0
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return "MissingProviderToken", http.StatusForbidden
	}
	bearer, ok := apnsCutPrefixFold(auth, "bearer ")
	if !ok || bearer == "" {
		return "InvalidProviderToken", http.StatusForbidden
	}
	now := a.opts.Now().Unix()
	if v := a.bearer.Load(); v != nil && v.token == bearer {
		if now-v.iat >= int64(apnsTokenLifetime/time.Second) {
			return "ExpiredProviderToken", http.StatusForbidden
		}
		return "", 0
	}
	iat, err := apnsVerifyES256(bearer, a.opts.TokenKey, a.opts.KeyID, a.opts.TeamID)
	if err != nil {
		return "InvalidProviderToken", http.StatusForbidden
	}
	if now-iat >= int64(apnsTokenLifetime/time.Second) {
		return "ExpiredProviderToken", http.StatusForbidden
	}
	a.bearer.Store(&verifiedBearer{token: bearer, iat: iat})
	return "", 0
}

func apnsCutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// apnsVerifyES256 checks a compact JWT's ES256 signature and the claims APNs
// reads (kid, iss, iat), returning iat.
func apnsVerifyES256(jwt string, key *ecdsa.PublicKey, kid, iss string) (int64, error) {
	h, rest, ok := strings.Cut(jwt, ".")
	if !ok {
		return 0, errors.New("not a compact JWT")
	}
	c, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, errors.New("not a compact JWT")
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var claims struct {
		Iss string `json:"iss"`
		Iat int64  `json:"iat"`
	}
	if err := apnsDecodeJWTSegment(h, &header); err != nil {
		return 0, err
	}
	if err := apnsDecodeJWTSegment(c, &claims); err != nil {
		return 0, err
	}
	if header.Alg != "ES256" || header.Kid != kid || claims.Iss != iss || claims.Iat == 0 {
		return 0, errors.New("unexpected JWT header or claims")
	}
	rawSig, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || len(rawSig) != 64 {
		return 0, errors.New("bad JWT signature encoding")
	}
	digest := sha256.Sum256([]byte(jwt[:len(h)+1+len(c)]))
	rr, ss := new(big.Int).SetBytes(rawSig[:32]), new(big.Int).SetBytes(rawSig[32:])
	if !ecdsa.Verify(key, digest[:], rr, ss) {
		return 0, errors.New("JWT signature does not verify")
	}
	return claims.Iat, nil
}

func apnsDecodeJWTSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return fmt.Errorf("decode JWT segment: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode JWT segment: %w", err)
	}
	return nil
}

func apnsKnownPushType(pt string) bool {
	switch pt {
	case "alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity", "pushtotalk", "widgets", "controls":
		return true
	}
	return false
}

// apnsCheckHeaders validates the apns-* request headers as APNs does. Keys
// are spelled canonically so Header.Get does not allocate to canonicalise.
func apnsCheckHeaders(h http.Header, topics map[string]bool) string {
	topic := h.Get("Apns-Topic")
	switch {
	case topic == "":
		return "MissingTopic"
	case topics != nil && !topics[topic]:
		return "TopicDisallowed"
	}
	if pt := h.Get("Apns-Push-Type"); pt != "" && !apnsKnownPushType(pt) {
		return "InvalidPushType"
	}
	if p := h.Get("Apns-Priority"); p != "" && p != "10" && p != "5" && p != "1" {
		return "BadPriority"
	}
	if e := h.Get("Apns-Expiration"); e != "" {
		if _, err := strconv.ParseInt(e, 10, 64); err != nil {
			return "BadExpirationDate"
		}
	}
	if id := h.Get("Apns-Collapse-Id"); len(id) > 64 {
		return "BadCollapseId"
	}
	if id := h.Get("Apns-Id"); id != "" && !apnsIsUUID(id) {
		return "BadMessageId"
	}
	return ""
}

func apnsIsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !apnsIsHex(c) {
				return false
			}
		}
	}
	return true
}

func apnsIsHexToken(s string) bool {
	if len(s)%2 != 0 || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !apnsIsHex(s[i]) {
			return false
		}
	}
	return true
}

func apnsIsHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// apnsReadAtMost fills buf from r until EOF or buf is full, returning the count.
func apnsReadAtMost(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
