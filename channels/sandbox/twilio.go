package sandbox

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // Twilio's X-Twilio-Signature is HMAC-SHA1 by specification
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// TwilioOptions configures the Twilio fake. Either credential pair authenticates.
type TwilioOptions struct {
	// Addr to listen on; default "127.0.0.1:0".
	Addr string
	// AccountSID is the account the fake serves. Default AC00000000000000000000000000000001.
	AccountSID string
	// AuthToken is the account's auth token (basic-auth password for AccountSID).
	AuthToken string
	// APIKeySID and APIKeySecret are an API key pair (basic auth as SK.../secret).
	APIKeySID    string
	APIKeySecret string
	// StatusCallbacks makes the fake POST "sent" then "delivered" to a message's
	// StatusCallback URL, signed with X-Twilio-Signature. Only loopback URLs
	// are called.
	StatusCallbacks bool
	// FinalStatus picks the last callback's MessageStatus and ErrorCode for
	// a recipient ("undelivered", "30003"); nil or "" means "delivered".
	FinalStatus func(to string) (status, errorCode string)
	// RecordLimit is passed to the Recorder (negative: count only, for benchmarks).
	RecordLimit int
	// Now is the fake's clock. Default time.Now.
	Now func() time.Time
}

// Twilio is a local Twilio Programmable Messaging API: POST
// /2010-04-01/Accounts/{sid}/Messages.json, form-encoded, basic auth,
// answering 201 with a message resource or Twilio's error envelope. It
// serves HTTPS with a certificate issued for 127.0.0.1 at start, so the real
// twilio-go client runs against it once its base URL is redirected.
type Twilio struct {
	Faults   *Faults
	Recorder *Recorder

	opts TwilioOptions
	srv  *http.Server
	ln   net.Listener
	url  string
	pool *x509.CertPool
	// certPEM is the generated certificate, for other processes to trust.
	certPEM []byte

	cbCtx    context.Context
	cbCancel context.CancelFunc
	cbClient *http.Client
	cbWG     sync.WaitGroup
	srvWG    sync.WaitGroup
	requests atomic.Int64
}

// NewTwilio starts the fake on 127.0.0.1 on a free port.
func NewTwilio(opts TwilioOptions) (*Twilio, error) {
	if opts.AccountSID == "" {
		opts.AccountSID = "AC00000000000000000000000000000001"
	}
	if opts.AuthToken == "" && opts.APIKeySID == "" {
		return nil, fmt.Errorf("new twilio sandbox: set AuthToken or APIKeySID/APIKeySecret")
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
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Twilio{
		Faults:   &Faults{},
		Recorder: &Recorder{Limit: opts.RecordLimit},
		opts:     opts,
		ln:       ln,
		url:      "https://" + ln.Addr().String(),
		pool:     pool,
		certPEM:  certPEM,
		cbCtx:    ctx,
		cbCancel: cancel,
		cbClient: &http.Client{Timeout: 5 * time.Second},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2010-04-01/Accounts/{sid}/Messages.json", t.serveCreate)
	t.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	t.srvWG.Add(1)
	go func() {
		defer t.srvWG.Done()
		_ = t.srv.ServeTLS(ln, "", "")
	}()
	return t, nil
}

// URL is the base URL to use in place of https://api.twilio.com.
func (t *Twilio) URL() string { return t.url }

// Addr is the listening address.
func (t *Twilio) Addr() string { return t.ln.Addr().String() }

// CertPool trusts the fake's certificate.
func (t *Twilio) CertPool() *x509.CertPool { return t.pool }

// AccountSID is the account the fake serves.
func (t *Twilio) AccountSID() string { return t.opts.AccountSID }

// Close stops the fake and waits for pending status callbacks.
func (t *Twilio) Close() error {
	t.cbCancel()
	err := t.srv.Close()
	t.srvWG.Wait()
	t.cbWG.Wait()
	return err
}

func (t *Twilio) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	eq := func(a, b string) bool { return b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
	return (eq(user, t.opts.AccountSID) && eq(pass, t.opts.AuthToken)) ||
		(eq(user, t.opts.APIKeySID) && eq(pass, t.opts.APIKeySecret))
}

// Requests counts Messages.json requests received, answered or not yet.
func (t *Twilio) Requests() int64 { return t.requests.Load() }

func (t *Twilio) serveCreate(w http.ResponseWriter, r *http.Request) {
	t.requests.Add(1)
	if !t.authorized(r) {
		twilioError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	if sid := r.PathValue("sid"); sid != t.opts.AccountSID {
		twilioError(w, http.StatusNotFound, 20404, "The requested resource /2010-04-01/Accounts/"+sid+"/Messages.json was not found")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		twilioError(w, http.StatusBadRequest, 20001, "Content-Type must be application/x-www-form-urlencoded")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		twilioError(w, http.StatusBadRequest, 20001, "Malformed form body")
		return
	}
	to := form.Get("To")
	rec := Received{Provider: "twilio", Address: to, Body: body, At: t.opts.Now(), Headers: map[string]string{
		"User-Agent": r.Header.Get("User-Agent"),
	}}
	rec.Status = t.answer(w, r, form)
	if rec.Status != 0 {
		t.Recorder.Add(rec)
	}
}

// answer validates like Twilio does and writes the reply; it returns the
// status written, or 0 when the connection was dropped.
func (t *Twilio) answer(w http.ResponseWriter, r *http.Request, form url.Values) int {
	to, from, svc, msgBody := form.Get("To"), form.Get("From"), form.Get("MessagingServiceSid"), form.Get("Body")
	switch {
	case to == "":
		return twilioError(w, http.StatusBadRequest, 21604, "A 'To' phone number is required.")
	case !twilioE164(strings.TrimPrefix(to, "whatsapp:")):
		return twilioError(w, http.StatusBadRequest, 21211, "The 'To' number "+to+" is not a valid phone number.")
	case from == "" && svc == "":
		return twilioError(w, http.StatusBadRequest, 21603, "A 'From' phone number is required.")
	case svc != "" && (len(svc) != 34 || !strings.HasPrefix(svc, "MG")):
		return twilioError(w, http.StatusBadRequest, 21701, "The Messaging Service Sid "+svc+" is invalid.")
	case msgBody == "" && form.Get("MediaUrl") == "" && form.Get("ContentSid") == "":
		return twilioError(w, http.StatusBadRequest, 21602, "Message body is required.")
	case utf8.RuneCountInString(msgBody) > 1600:
		return twilioError(w, http.StatusBadRequest, 21617, "The concatenated message body exceeds the 1600 character limit.")
	}
	if cb := form.Get("StatusCallback"); cb != "" {
		if u, err := url.Parse(cb); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return twilioError(w, http.StatusBadRequest, 21609, "Invalid StatusCallback url")
		}
	}
	if vp := form.Get("ValidityPeriod"); vp != "" {
		if n, err := strconv.Atoi(vp); err != nil || n < 1 || n > 36000 {
			return twilioError(w, http.StatusBadRequest, 21623, "ValidityPeriod must be between 1 and 36000 seconds")
		}
	}
	if ft := t.Faults.Match(to); ft != nil {
		if ft.Latency > 0 {
			select {
			case <-time.After(ft.Latency):
			case <-r.Context().Done():
				return 0
			}
		}
		if ft.Drop {
			panic(http.ErrAbortHandler)
		}
		if ft.Status != 0 || ft.Reason != "" {
			code, _ := strconv.Atoi(ft.Reason)
			status := ft.Status
			if status == 0 {
				status = twilioStatusFor(code)
			}
			if ft.RetryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int((ft.RetryAfter+time.Second-1)/time.Second)))
			}
			return twilioError(w, status, code, twilioMessageFor(code, to))
		}
	}

	var raw [16]byte
	_, _ = rand.Read(raw[:])
	sid := "SM" + hex.EncodeToString(raw[:])
	encoding, segments := twilioSegments(msgBody)
	status := "queued"
	if svc != "" {
		status = "accepted"
	}
	now := t.opts.Now().UTC().Format(time.RFC1123Z)
	res := map[string]any{
		"sid": sid, "account_sid": t.opts.AccountSID, "to": to, "from": twilioNullable(from),
		"messaging_service_sid": twilioNullable(svc), "body": msgBody, "status": status,
		"num_segments": strconv.Itoa(segments), "num_media": "0", "direction": "outbound-api",
		"api_version": "2010-04-01", "price": nil, "price_unit": "USD", "error_code": nil, "error_message": nil,
		"date_created": now, "date_updated": now, "date_sent": nil,
		"uri":              "/2010-04-01/Accounts/" + t.opts.AccountSID + "/Messages/" + sid + ".json",
		"subresource_uris": map[string]string{"media": "/2010-04-01/Accounts/" + t.opts.AccountSID + "/Messages/" + sid + "/Media.json"},
	}
	b, _ := json.Marshal(res)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Twilio-Request-Id", "RQ"+hex.EncodeToString(raw[:]))
	w.Header().Set("X-Notifyd-Sandbox-Encoding", encoding)
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(b)
	if cb := form.Get("StatusCallback"); cb != "" && t.opts.StatusCallbacks {
		t.callback(cb, url.Values{"MessageSid": {sid}, "SmsSid": {sid}, "AccountSid": {t.opts.AccountSID},
			"From": {from}, "To": {to}, "ApiVersion": {"2010-04-01"}})
	}
	return http.StatusCreated
}

func twilioNullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// callback posts "sent" then the final status ("delivered" unless
// FinalStatus says otherwise) the way Twilio does, signed with the
// auth token (X-Twilio-Signature), to loopback URLs only.
func (t *Twilio) callback(cb string, params url.Values) {
	u, err := url.Parse(cb)
	if err != nil {
		return
	}
	if ip := net.ParseIP(u.Hostname()); (ip == nil || !ip.IsLoopback()) && u.Hostname() != "localhost" {
		return
	}
	t.cbWG.Add(1)
	go func() {
		defer t.cbWG.Done()
		final, code := "delivered", ""
		if t.opts.FinalStatus != nil {
			if s, c := t.opts.FinalStatus(params.Get("To")); s != "" {
				final, code = s, c
			}
		}
		for _, status := range []string{"sent", final} {
			form := url.Values{}
			for k, v := range params {
				form[k] = v
			}
			form.Set("MessageStatus", status)
			form.Set("SmsStatus", status)
			if status == final && code != "" {
				form.Set("ErrorCode", code)
			}
			req, err := http.NewRequestWithContext(t.cbCtx, http.MethodPost, cb, strings.NewReader(form.Encode()))
			if err != nil {
				return
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("X-Twilio-Signature", TwilioSignature(t.opts.AuthToken, cb, form))
			resp, err := t.cbClient.Do(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}()
}

// TwilioSignature computes X-Twilio-Signature: base64(HMAC-SHA1(authToken,
// URL + each POST parameter name and value, sorted by name)).
func TwilioSignature(authToken, fullURL string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	sb.WriteString(fullURL)
	for _, k := range keys {
		for _, v := range form[k] {
			sb.WriteString(k)
			sb.WriteString(v)
		}
	}
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(sb.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func twilioStatusFor(code int) int {
	switch {
	case code == 20003:
		return http.StatusUnauthorized
	case code == 20429:
		return http.StatusTooManyRequests
	case code == 20500 || code == 0:
		return http.StatusInternalServerError
	case code == 20503:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

func twilioMessageFor(code int, to string) string {
	switch code {
	case 21211:
		return "The 'To' number " + to + " is not a valid phone number."
	case 21614:
		return "'To' number is not a valid mobile number"
	case 21610:
		return "Attempt to send to unsubscribed recipient"
	case 21612:
		return "The 'To' phone number is not currently reachable via SMS"
	case 21408:
		return "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: " + to
	case 20429:
		return "Too Many Requests"
	case 20003:
		return "Authenticate"
	}
	return "Internal Server Error"
}

func twilioError(w http.ResponseWriter, status, code int, msg string) int {
	var more string
	if code != 0 {
		more = "https://www.twilio.com/docs/errors/" + strconv.Itoa(code)
	}
	b, _ := json.Marshal(map[string]any{"code": code, "message": msg, "more_info": more, "status": status})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return status
}

func twilioE164(s string) bool {
	if len(s) < 8 || len(s) > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9' {
		return false
	}
	for _, c := range s[2:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// twilioGSM7 is the GSM 03.38 basic character set; twilioGSM7Ext the
// extension table, whose characters take two septets.
const (
	twilioGSM7    = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
	twilioGSM7Ext = "^{}\\[~]|€\f"
)

// twilioSegments counts SMS parts the way carriers do: GSM-7 (160 septets,
// 153 per part when concatenated) or UCS-2 (70 UTF-16 units, 67 per part).
func twilioSegments(body string) (string, int) {
	septets, gsm := 0, true
	for _, r := range body {
		switch {
		case strings.ContainsRune(twilioGSM7, r):
			septets++
		case strings.ContainsRune(twilioGSM7Ext, r):
			septets += 2
		default:
			gsm = false
		}
	}
	if gsm {
		if septets <= 160 {
			return "GSM-7", 1
		}
		return "GSM-7", (septets + 152) / 153
	}
	units := len(utf16.Encode([]rune(body)))
	if units <= 70 {
		return "UCS-2", 1
	}
	return "UCS-2", (units + 66) / 67
}

// CertPEM is the fake's certificate in PEM, for other processes to trust.
func (t *Twilio) CertPEM() []byte { return t.certPEM }
