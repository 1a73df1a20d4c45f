package sandbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/notifyd/notifyd/channels"
)

// WebPushOptions configures the web push fake. The zero value works.
type WebPushOptions struct {
	// Addr and PlainAddr are the HTTPS and plain HTTP listen addresses;
	// default "127.0.0.1:0" each.
	Addr, PlainAddr string
	// ApplicationServerKey, when set, binds every minted subscription to this
	// VAPID public key (base64url), as a browser's
	// pushManager.subscribe({applicationServerKey}) does: a push signed with
	// another key is answered 403.
	ApplicationServerKey string
	// Now is the fake's clock for VAPID expiry checks (time.Now when nil).
	Now func() time.Time
}

// WebPush is a push service (RFC 8030) on loopback that really decrypts:
// it mints subscriptions and keeps their private keys, verifies VAPID
// (RFC 8292), decrypts aes128gcm bodies (RFC 8291) and records the plaintext.
// It serves HTTPS (HTTP/2 and HTTP/1.1, with a certificate generated at
// start) and plain HTTP on two ports; a subscription's endpoint picks one.
//
// Faults match the subscription id, the endpoint's last path segment, which
// NewNamedSubscription lets a test choose ("dead-*").
type WebPush struct {
	Faults   *Faults
	Recorder *Recorder

	now       func() time.Time
	serverKey []byte
	pool      *x509.CertPool
	certPEM   []byte
	tlsSrv    *http.Server
	plainSrv  *http.Server
	tlsLn     net.Listener
	plainLn   net.Listener

	mu    sync.RWMutex
	subs  map[string]*webPushSub
	vapid map[string]int64 // verified Authorization value -> exp, so a repeated token is checked once
}

type webPushSub struct {
	key     *ecdh.PrivateKey
	auth    []byte
	expired bool
}

const (
	webPushMaxBody    = 4096
	webPushMaxTokens  = 4096
	webPushMaxJWTLife = 24 * time.Hour
	webPushClockSkew  = time.Minute
)

// NewWebPush starts the fake on 127.0.0.1 (two random ports).
func NewWebPush(opts WebPushOptions) (*WebPush, error) {
	w := &WebPush{
		Faults:   &Faults{},
		Recorder: &Recorder{},
		now:      opts.Now,
		subs:     make(map[string]*webPushSub),
		vapid:    make(map[string]int64),
	}
	if w.now == nil {
		w.now = time.Now
	}
	if opts.ApplicationServerKey != "" {
		k, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(opts.ApplicationServerKey, "="))
		if err != nil || len(k) != 65 {
			return nil, errors.New("start web push sandbox: ApplicationServerKey is not a base64url P-256 point")
		}
		w.serverKey = k
	}
	cert, pool, certPEM, err := loopbackCert()
	if err != nil {
		return nil, fmt.Errorf("start web push sandbox: %w", err)
	}
	w.pool, w.certPEM = pool, certPEM
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.PlainAddr == "" {
		opts.PlainAddr = "127.0.0.1:0"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /push/{id}", w.handlePush)
	quiet := log.New(io.Discard, "", 0) // handshake noise from aborted test clients
	w.tlsSrv = &http.Server{Handler: mux, ErrorLog: quiet, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}}
	w.plainSrv = &http.Server{Handler: mux, ErrorLog: quiet, ReadHeaderTimeout: 10 * time.Second}
	if w.tlsLn, err = net.Listen("tcp", opts.Addr); err != nil {
		return nil, fmt.Errorf("start web push sandbox: %w", err)
	}
	if w.plainLn, err = net.Listen("tcp", opts.PlainAddr); err != nil {
		w.tlsLn.Close()
		return nil, fmt.Errorf("start web push sandbox: %w", err)
	}
	go func() { _ = w.tlsSrv.ServeTLS(w.tlsLn, "", "") }()
	go func() { _ = w.plainSrv.Serve(w.plainLn) }()
	return w, nil
}

// URL is the HTTPS base URL ("https://127.0.0.1:port").
func (w *WebPush) URL() string { return "https://" + w.tlsLn.Addr().String() }

// PlainURL is the plain HTTP base URL.
func (w *WebPush) PlainURL() string { return "http://" + w.plainLn.Addr().String() }

// Addr is the HTTPS listener's address.
func (w *WebPush) Addr() string { return w.tlsLn.Addr().String() }

// CertPool trusts the fake's generated certificate (for channels.TLS.RootCAs).
func (w *WebPush) CertPool() *x509.CertPool { return w.pool }

// CertPEM is the fake's certificate in PEM, for other processes to trust.
func (w *WebPush) CertPEM() []byte { return w.certPEM }

// Close stops both listeners and drops open connections.
func (w *WebPush) Close() error {
	return errors.Join(w.tlsSrv.Close(), w.plainSrv.Close())
}

// NewSubscription mints an HTTPS subscription with a random id, as a
// browser's pushManager.subscribe() would.
func (w *WebPush) NewSubscription() (channels.Subscription, error) {
	return w.NewNamedSubscription("", false)
}

// NewNamedSubscription mints a subscription whose id starts with name (so
// faults can target it), on the plain HTTP port when plain is set.
func (w *WebPush) NewNamedSubscription(name string, plain bool) (channels.Subscription, error) {
	if strings.ContainsAny(name, "/?#%") {
		return channels.Subscription{}, fmt.Errorf("mint subscription: name %q must not contain / ? # %%", name)
	}
	key, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return channels.Subscription{}, fmt.Errorf("mint subscription: %w", err)
	}
	auth := make([]byte, 16)
	_, _ = rand.Read(auth)
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	sid := base64.RawURLEncoding.EncodeToString(id)
	if name != "" {
		sid = name + "-" + sid
	}
	w.mu.Lock()
	w.subs[sid] = &webPushSub{key: key, auth: auth}
	w.mu.Unlock()
	base := w.URL()
	if plain {
		base = w.PlainURL()
	}
	return channels.Subscription{
		Endpoint: base + "/push/" + sid,
		P256dh:   base64.RawURLEncoding.EncodeToString(key.PublicKey().Bytes()),
		Auth:     base64.RawURLEncoding.EncodeToString(auth),
	}, nil
}

// Expire makes the push service answer 410 Gone for a subscription from now
// on, as when a user revokes permission. It reports whether it existed.
func (w *WebPush) Expire(endpoint string) bool {
	id := endpoint[strings.LastIndexByte(endpoint, '/')+1:]
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.subs[id]
	if ok {
		s.expired = true
	}
	return ok
}

// webPushError answers with autopush's (Mozilla's push service) error envelope.
func webPushError(rw http.ResponseWriter, status, errno int, msg string) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(map[string]any{"code": status, "errno": errno, "error": http.StatusText(status), "message": msg})
}

func (w *WebPush) handlePush(rw http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec := Received{Provider: channels.WebPush, Address: id, At: w.now(), Headers: map[string]string{
		"TTL":              r.Header.Get("TTL"),
		"Urgency":          r.Header.Get("Urgency"),
		"Topic":            r.Header.Get("Topic"),
		"Content-Encoding": r.Header.Get("Content-Encoding"),
		"Authorization":    r.Header.Get("Authorization"),
		"proto":            r.Proto,
	}}
	answer := func(status, errno int, msg string) {
		rec.Status = status
		w.Recorder.Add(rec)
		webPushError(rw, status, errno, msg)
	}
	if f := w.Faults.Match(id); f != nil {
		if f.Latency > 0 {
			t := time.NewTimer(f.Latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if f.Drop {
			rec.Status = -1
			w.Recorder.Add(rec)
			panic(http.ErrAbortHandler) // closes the HTTP/1 connection, resets the HTTP/2 stream
		}
		if f.Status != 0 {
			if f.RetryAfter > 0 {
				rw.Header().Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
			}
			msg := f.Reason
			if msg == "" {
				msg = http.StatusText(f.Status)
			}
			answer(f.Status, 0, msg)
			return
		}
	}

	w.mu.RLock()
	sub := w.subs[id]
	expired := sub != nil && sub.expired
	w.mu.RUnlock()
	switch {
	case sub == nil:
		answer(http.StatusNotFound, 102, "Request did not validate invalid token")
		return
	case expired:
		answer(http.StatusGone, 103, "Request did not validate subscription expired")
		return
	}

	claims, status, msg := w.checkVAPID(r)
	if status != 0 {
		errno := 109
		if status == http.StatusForbidden {
			errno = 110
		}
		answer(status, errno, msg)
		return
	}
	rec.Headers["vapid.sub"] = claims.Sub
	rec.Headers["vapid.aud"] = claims.Aud
	rec.Headers["vapid.exp"] = strconv.FormatInt(claims.Exp, 10)

	ttl := r.Header.Get("TTL")
	if n, err := strconv.ParseInt(ttl, 10, 64); err != nil || n < 0 {
		answer(http.StatusBadRequest, 111, "Missing or invalid TTL header")
		return
	}
	if u := r.Header.Get("Urgency"); u != "" && u != "very-low" && u != "low" && u != "normal" && u != "high" {
		answer(http.StatusBadRequest, 111, "Invalid Urgency header")
		return
	}
	if t := r.Header.Get("Topic"); t != "" && !webPushTopic(t) {
		answer(http.StatusBadRequest, 111, "Invalid Topic header")
		return
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "aes128gcm" {
		answer(http.StatusBadRequest, 110, "Unknown Content-Encoding; aes128gcm required")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, webPushMaxBody+1))
	if err != nil {
		return // the client went away
	}
	if len(body) > webPushMaxBody {
		answer(http.StatusRequestEntityTooLarge, 104, "Body too large")
		return
	}
	plain, err := webPushDecrypt(body, sub.key, sub.auth)
	if err != nil {
		answer(http.StatusBadRequest, 110, "Decrypt body: "+err.Error())
		return
	}
	rec.Body = plain
	rec.Status = http.StatusCreated
	w.Recorder.Add(rec)
	rw.Header().Set("Location", "https://"+r.Host+"/m/"+id+"-"+strconv.Itoa(w.Recorder.Count()))
	rw.Header().Set("TTL", ttl)
	rw.WriteHeader(http.StatusCreated)
}

type webPushClaims struct {
	Aud string `json:"aud"`
	Exp int64  `json:"exp"`
	Sub string `json:"sub"`
}

// checkVAPID verifies "Authorization: vapid t=<jwt>, k=<key>" (RFC 8292 §3):
// an ES256 JWT signed by k, aud the origin the request was sent to, exp in
// the future and at most 24 hours away, sub a mailto: or https: contact.
// It answers a status (0 when valid) and why.
func (w *WebPush) checkVAPID(r *http.Request) (webPushClaims, int, string) {
	var c webPushClaims
	h := r.Header.Get("Authorization")
	scheme, params, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "vapid") {
		return c, http.StatusUnauthorized, "Missing vapid Authorization"
	}
	var token, key string
	for p := range strings.SplitSeq(params, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch k {
		case "t":
			token = v
		case "k":
			key = v
		}
	}
	if token == "" || key == "" {
		return c, http.StatusUnauthorized, "vapid Authorization needs t= and k="
	}
	kb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(key, "="))
	if err != nil || len(kb) != 65 {
		return c, http.StatusUnauthorized, "vapid k is not a base64url P-256 point"
	}
	if w.serverKey != nil && string(kb) != string(w.serverKey) {
		return c, http.StatusForbidden, "vapid k does not match the subscription's applicationServerKey"
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, http.StatusUnauthorized, "vapid t is not a JWS compact token"
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(cb, &c) != nil {
		return c, http.StatusUnauthorized, "vapid claims are not base64url JSON"
	}
	origin := "http://" + r.Host
	if r.TLS != nil {
		origin = "https://" + r.Host
	}
	now := w.now()
	switch {
	case c.Aud != origin:
		return c, http.StatusUnauthorized, "vapid aud does not match the push service origin"
	case c.Exp <= now.Unix():
		return c, http.StatusUnauthorized, "vapid token expired"
	case c.Exp > now.Add(webPushMaxJWTLife+webPushClockSkew).Unix():
		return c, http.StatusUnauthorized, "vapid exp more than 24 hours away"
	case !strings.HasPrefix(c.Sub, "mailto:") && !strings.HasPrefix(c.Sub, "https:"):
		return c, http.StatusUnauthorized, "vapid sub must be a mailto: or https: contact"
	}
	w.mu.RLock()
	_, seen := w.vapid[h]
	w.mu.RUnlock()
	if seen {
		return c, 0, ""
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err != nil || json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "ES256" {
		return c, http.StatusUnauthorized, "vapid JWT header must say alg ES256"
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return c, http.StatusUnauthorized, "vapid signature is not 64 bytes base64url"
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), kb)
	if err != nil {
		return c, http.StatusUnauthorized, "vapid k is not on P-256"
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return c, http.StatusUnauthorized, "vapid signature does not verify"
	}
	w.mu.Lock()
	if len(w.vapid) >= webPushMaxTokens {
		clear(w.vapid)
	}
	w.vapid[h] = c.Exp
	w.mu.Unlock()
	return c, 0, ""
}

func webPushTopic(t string) bool {
	if len(t) > 32 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// webPushDecrypt is the user agent's side of RFC 8291: read the RFC 8188
// header, derive the key from the subscription's private key and auth
// secret, open the single record and strip its padding.
func webPushDecrypt(body []byte, ua *ecdh.PrivateKey, auth []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("body shorter than the aes128gcm header")
	}
	salt := body[:16]
	rs := binary.BigEndian.Uint32(body[16:20])
	idlen := int(body[20])
	if idlen != 65 || len(body) < 21+idlen {
		return nil, errors.New("keyid must be the sender's 65-byte P-256 key")
	}
	asPub := body[21 : 21+idlen]
	ct := body[21+idlen:]
	switch {
	case rs < 18:
		return nil, errors.New("record size below 18")
	case len(ct) < 17:
		return nil, errors.New("record shorter than tag and delimiter")
	case uint64(len(ct)) > uint64(rs):
		return nil, errors.New("push message must be a single record")
	}
	as, err := ecdh.P256().NewPublicKey(asPub)
	if err != nil {
		return nil, errors.New("sender key is not on P-256")
	}
	shared, err := ua.ECDH(as)
	if err != nil {
		return nil, errors.New("derive ECDH secret")
	}
	info := "WebPush: info\x00" + string(ua.PublicKey().Bytes()) + string(asPub)
	ikm, err := hkdf.Key(sha256.New, shared, auth, info, 32)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, nonce, ct, nil)
	if err != nil {
		return nil, errors.New("authentication tag does not verify")
	}
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 || plain[i] != 0x02 {
		return nil, errors.New("last record lacks the 0x02 padding delimiter")
	}
	return plain[:i], nil
}
