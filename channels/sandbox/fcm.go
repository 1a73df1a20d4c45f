package sandbox

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FCMOptions configures the FCM fake.
type FCMOptions struct {
	// Addr to listen on; default "127.0.0.1:0".
	Addr string
	// ProjectID is the only project the fake serves; requests for another get 404. Default "sandbox-project".
	ProjectID string
	// AccessToken, when set, is accepted as a bearer token in addition to the
	// tokens the fake's own OAuth2 endpoint issues (for callers that bring an
	// oauth2.TokenSource instead of a service account).
	AccessToken string
	// RecordLimit is passed to the Recorder (negative: count only, for benchmarks).
	RecordLimit int
	// Now is the fake's clock (JWT expiry checks, record times). Default time.Now.
	Now func() time.Time
}

// FCM is a local Firebase Cloud Messaging HTTP v1 API: the messages:send
// endpoint with Google's error envelope, and a service-account OAuth2 token
// endpoint (JWT bearer grant, RFC 7523) so the real firebase and x/oauth2
// libraries run unmodified against it. It serves HTTP/2 over TLS with a
// certificate issued for 127.0.0.1 at start.
type FCM struct {
	Faults   *Faults
	Recorder *Recorder

	opts     FCMOptions
	srv      *http.Server
	ln       net.Listener
	url      string
	pool     *x509.CertPool
	certPEM  []byte
	saKey    *rsa.PrivateKey
	saEmail  string
	tokensMu sync.RWMutex
	tokens   map[string]struct{}
	seq      atomic.Uint64
	sends    atomic.Int64
	grants   atomic.Int64
	wg       sync.WaitGroup
}

// fcmMaxPayload is FCM's 4096-byte limit on a message's notification+data.
const fcmMaxPayload = 4096

// fcmStatusFor maps FCM's errorCode to the HTTP status and canonical status FCM answers with.
func fcmStatusFor(code string) (int, string) {
	switch code {
	case "UNREGISTERED":
		return http.StatusNotFound, "NOT_FOUND"
	case "INVALID_ARGUMENT":
		return http.StatusBadRequest, "INVALID_ARGUMENT"
	case "SENDER_ID_MISMATCH":
		return http.StatusForbidden, "PERMISSION_DENIED"
	case "QUOTA_EXCEEDED":
		return http.StatusTooManyRequests, "RESOURCE_EXHAUSTED"
	case "UNAVAILABLE":
		return http.StatusServiceUnavailable, "UNAVAILABLE"
	case "THIRD_PARTY_AUTH_ERROR":
		return http.StatusUnauthorized, "UNAUTHENTICATED"
	}
	return http.StatusInternalServerError, "INTERNAL"
}

// NewFCM starts the fake on 127.0.0.1 on a free port.
func NewFCM(opts FCMOptions) (*FCM, error) {
	if opts.ProjectID == "" {
		opts.ProjectID = "sandbox-project"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	cert, pool, certPEM, err := loopbackCert()
	if err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate service account key: %w", err)
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	f := &FCM{
		certPEM:  certPEM,
		Faults:   &Faults{},
		Recorder: &Recorder{Limit: opts.RecordLimit},
		opts:     opts,
		ln:       ln,
		url:      "https://" + ln.Addr().String(),
		pool:     pool,
		saKey:    key,
		saEmail:  "notifyd@" + opts.ProjectID + ".iam.gserviceaccount.com",
		tokens:   map[string]struct{}{},
	}
	if opts.AccessToken != "" {
		f.tokens[opts.AccessToken] = struct{}{}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.serveToken)
	mux.HandleFunc("POST /v1/projects/{rest...}", f.serveSend)
	f.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		_ = f.srv.ServeTLS(ln, "", "")
	}()
	return f, nil
}

// URL is the fake's base URL (https://127.0.0.1:port).
func (f *FCM) URL() string { return f.url }

// Endpoint is the messaging endpoint to configure in place of https://fcm.googleapis.com/v1.
func (f *FCM) Endpoint() string { return f.url + "/v1" }

// Addr is the listening address.
func (f *FCM) Addr() string { return f.ln.Addr().String() }

// CertPool trusts the fake's certificate.
func (f *FCM) CertPool() *x509.CertPool { return f.pool }

// ProjectID is the project the fake serves.
func (f *FCM) ProjectID() string { return f.opts.ProjectID }

// Sends counts messages:send requests, whatever their outcome.
func (f *FCM) Sends() int64 { return f.sends.Load() }

// TokenGrants counts access tokens issued by the OAuth2 endpoint.
func (f *FCM) TokenGrants() int64 { return f.grants.Load() }

// ServiceAccountJSON is a Google service-account key file whose token_uri
// points at this fake, so the caller's credentials flow is exercised end to end.
func (f *FCM) ServiceAccountJSON() []byte {
	der := x509.MarshalPKCS1PrivateKey(f.saKey)
	b, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     f.opts.ProjectID,
		"private_key_id": "sandbox-key-1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der})),
		"client_email":   f.saEmail,
		"client_id":      "100000000000000000001",
		"token_uri":      f.url + "/token",
	})
	return b
}

// Close stops the fake and waits for its server goroutine.
func (f *FCM) Close() error {
	err := f.srv.Close()
	f.wg.Wait()
	return err
}

// serveToken implements the JWT-bearer grant: it verifies the assertion's
// RS256 signature against the service account it handed out, and its claims.
func (f *FCM) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		fcmOAuthError(w, "invalid_request", "malformed form")
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fcmOAuthError(w, "unsupported_grant_type", "grant_type must be jwt-bearer")
		return
	}
	if err := f.verifyAssertion(r.PostForm.Get("assertion")); err != nil {
		fcmOAuthError(w, "invalid_grant", err.Error())
		return
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	tok := "ya29.sandbox-" + hex.EncodeToString(raw[:])
	f.tokensMu.Lock()
	f.tokens[tok] = struct{}{}
	f.tokensMu.Unlock()
	f.grants.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3599}`, tok)
}

func fcmOAuthError(w http.ResponseWriter, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": desc})
	_, _ = w.Write(b)
}

func (f *FCM) verifyAssertion(jwt string) error {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return errors.New("assertion is not a JWT")
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := fcmDecodeSegment(parts[0], &hdr); err != nil || hdr.Alg != "RS256" {
		return errors.New("assertion header must be RS256")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return errors.New("assertion signature is not base64url")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&f.saKey.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return errors.New("invalid JWT signature")
	}
	var claims struct {
		Iss   string `json:"iss"`
		Scope string `json:"scope"`
		Aud   string `json:"aud"`
		Exp   int64  `json:"exp"`
		Iat   int64  `json:"iat"`
	}
	if err := fcmDecodeSegment(parts[1], &claims); err != nil {
		return errors.New("assertion claims are not JSON")
	}
	now := f.opts.Now().Unix()
	switch {
	case claims.Iss != f.saEmail:
		return errors.New("unknown service account")
	case claims.Aud != f.url+"/token":
		return errors.New("invalid audience")
	case !strings.Contains(claims.Scope, "https://www.googleapis.com/auth/firebase.messaging") &&
		!strings.Contains(claims.Scope, "https://www.googleapis.com/auth/cloud-platform"):
		return errors.New("scope does not grant firebase.messaging")
	case claims.Exp < now || claims.Iat > now+300 || claims.Exp-claims.Iat > 3600:
		return errors.New("invalid JWT expiry")
	}
	return nil
}

func fcmDecodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// fcmWire is the part of an FCM v1 message the fake validates.
type fcmWire struct {
	ValidateOnly bool `json:"validate_only"`
	Message      *struct {
		Token        string            `json:"token"`
		Topic        string            `json:"topic"`
		Condition    string            `json:"condition"`
		Data         map[string]string `json:"data"`
		Notification json.RawMessage   `json:"notification"`
		Android      *struct {
			Priority string `json:"priority"`
			TTL      string `json:"ttl"`
		} `json:"android"`
	} `json:"message"`
}

func (f *FCM) serveSend(w http.ResponseWriter, r *http.Request) {
	f.sends.Add(1)
	rest := r.PathValue("rest")
	project, ok := strings.CutSuffix(rest, "/messages:send")
	if !ok {
		fcmError(w, http.StatusNotFound, "NOT_FOUND", "", "method not found")
		return
	}
	if project != f.opts.ProjectID {
		fcmError(w, http.StatusNotFound, "NOT_FOUND", "", "Requested entity was not found.")
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.tokensMu.RLock()
	_, authed := f.tokens[tok]
	f.tokensMu.RUnlock()
	if !authed {
		fcmError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "",
			"Request had invalid authentication credentials. Expected OAuth 2 access token.")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	var req fcmWire
	if err := json.Unmarshal(body, &req); err != nil || req.Message == nil {
		fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "", "Invalid JSON payload received.")
		return
	}
	m := req.Message
	addr := m.Token
	rec := Received{Provider: "fcm", Address: addr, Body: body, At: f.opts.Now(), Headers: map[string]string{
		"X-Goog-Api-Format-Version": r.Header.Get("X-Goog-Api-Format-Version"),
		"X-Firebase-Client":         r.Header.Get("X-Firebase-Client"),
	}}
	status := f.answer(w, r, m.Token, m.Topic, m.Condition, m.Data, m.Notification, m.Android, req.ValidateOnly)
	if status == 0 {
		return
	}
	rec.Status = status
	f.Recorder.Add(rec)
}

// answer validates like FCM does and writes the reply; it returns the status
// written, or 0 when the connection was dropped.
func (f *FCM) answer(w http.ResponseWriter, r *http.Request, token, topic, condition string, data map[string]string,
	notification json.RawMessage, android *struct {
		Priority string `json:"priority"`
		TTL      string `json:"ttl"`
	}, validateOnly bool) int {
	targets := 0
	for _, s := range []string{token, topic, condition} {
		if s != "" {
			targets++
		}
	}
	if targets != 1 {
		return fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Exactly one of token, topic or condition must be specified.")
	}
	for k := range data {
		if k == "from" || k == "notification" || k == "message_type" || strings.HasPrefix(k, "google.") || strings.HasPrefix(k, "gcm.") {
			return fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid data payload key: "+k)
		}
	}
	size := len(notification)
	for k, v := range data {
		size += len(k) + len(v)
	}
	if size > fcmMaxPayload {
		return fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Message is too big")
	}
	if android != nil {
		if android.Priority != "" && android.Priority != "normal" && android.Priority != "high" {
			return fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid value at 'message.android.priority'")
		}
		if android.TTL != "" {
			secs, ok := strings.CutSuffix(android.TTL, "s")
			if v, err := strconv.ParseFloat(secs, 64); !ok || err != nil || v < 0 || v > 28*24*3600 {
				return fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'")
			}
		}
	}
	if ft := f.Faults.Match(token); ft != nil {
		if ft.Latency > 0 {
			select {
			case <-time.After(ft.Latency):
			case <-r.Context().Done():
				return 0
			}
		}
		if ft.Drop {
			// Over HTTP/2 this resets the stream; over HTTP/1.1 it closes the connection.
			panic(http.ErrAbortHandler)
		}
		if ft.Status != 0 || ft.Reason != "" {
			code := ft.Reason
			httpStatus, status := fcmStatusFor(code)
			if ft.Status != 0 {
				httpStatus = ft.Status
			}
			if ft.RetryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int((ft.RetryAfter+time.Second-1)/time.Second)))
			}
			msg := "Requested entity was not found."
			switch code {
			case "INVALID_ARGUMENT":
				msg = "The registration token is not a valid FCM registration token"
			case "QUOTA_EXCEEDED":
				msg = "Quota exceeded for quota metric 'Send requests'"
			case "UNAVAILABLE":
				msg = "The service is currently unavailable."
			case "INTERNAL":
				msg = "Internal error encountered."
			case "SENDER_ID_MISMATCH":
				msg = "SenderId mismatch"
			case "THIRD_PARTY_AUTH_ERROR":
				msg = "Auth error from APNS or Web Push Service"
			}
			return fcmError(w, httpStatus, status, code, msg)
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(http.StatusOK)
	name := "projects/" + f.opts.ProjectID + "/messages/"
	if validateOnly {
		name += "fake_message_id"
	} else {
		name += "0:" + strconv.FormatUint(f.seq.Add(1), 10) + "%sandbox"
	}
	_, _ = w.Write([]byte(`{"name":"` + name + `"}`))
	return http.StatusOK
}

// fcmError writes Google's error envelope; an empty fcmCode leaves out the FcmError detail.
func fcmError(w http.ResponseWriter, httpStatus int, status, fcmCode, msg string) int {
	type detail struct {
		Type      string `json:"@type"`
		ErrorCode string `json:"errorCode"`
	}
	var env struct {
		Error struct {
			Code    int      `json:"code"`
			Message string   `json:"message"`
			Status  string   `json:"status"`
			Details []detail `json:"details,omitempty"`
		} `json:"error"`
	}
	env.Error.Code, env.Error.Message, env.Error.Status = httpStatus, msg, status
	if fcmCode != "" {
		env.Error.Details = []detail{{Type: "type.googleapis.com/google.firebase.fcm.v1.FcmError", ErrorCode: fcmCode}}
	}
	b, _ := json.Marshal(env)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(b)
	return httpStatus
}

// CertPEM is the fake's certificate in PEM, for other processes to trust.
func (f *FCM) CertPEM() []byte { return f.certPEM }
