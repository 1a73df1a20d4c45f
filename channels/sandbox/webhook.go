package sandbox

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WebhookOptions configures the webhook fake. The zero value accepts every
// request unsigned-or-not and records it.
type WebhookOptions struct {
	// Addr to listen on; default "127.0.0.1:0".
	Addr string
	// Secret, when set, makes the fake verify the signature header the way a
	// careful receiver would (HMAC-SHA256 over "<t>.<body>", timestamp within
	// Tolerance) and answer 401 otherwise.
	Secret string
	// SignatureHeader is the header to verify (X-Notifyd-Signature).
	SignatureHeader string
	// Tolerance bounds the signature timestamp's age (5 min).
	Tolerance time.Duration
	// MaxBodyBytes answers 413 above it (1 MiB).
	MaxBodyBytes int64
	// Now is the fake's clock for the tolerance check (time.Now).
	Now func() time.Time
	// RecorderLimit sets Recorder.Limit (negative: count only).
	RecorderLimit int
}

// Webhook is a plain-HTTP receiver on loopback that verifies signatures,
// records requests and injects faults by URL path pattern (Fault.Match is
// tested against the path, e.g. "/users/dead-*"). A fault's Status 3xx
// answers with a Location header, so redirect handling can be tested; Reason
// becomes the JSON error body.
type Webhook struct {
	Faults   *Faults
	Recorder *Recorder

	opts    WebhookOptions
	ln      net.Listener
	srv     *http.Server
	url     string
	macs    sync.Pool
	conns   atomic.Int64
	badSigs atomic.Int64
	closing chan struct{}
	once    sync.Once
}

// NewWebhook starts the fake on 127.0.0.1 and an ephemeral port.
func NewWebhook(opts WebhookOptions) (*Webhook, error) {
	if opts.SignatureHeader == "" {
		opts.SignatureHeader = "X-Notifyd-Signature"
	}
	if opts.Tolerance == 0 {
		opts.Tolerance = 5 * time.Minute
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for webhook sandbox: %w", err)
	}
	w := &Webhook{
		Faults:   &Faults{},
		Recorder: &Recorder{Limit: opts.RecorderLimit},
		opts:     opts,
		ln:       ln,
		url:      "http://" + ln.Addr().String(),
		closing:  make(chan struct{}),
	}
	key := []byte(opts.Secret)
	w.macs.New = func() any { return hmac.New(sha256.New, key) }
	w.srv = &http.Server{
		Handler:           http.HandlerFunc(w.serve),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				w.conns.Add(1)
			}
		},
	}
	go func() { _ = w.srv.Serve(ln) }()
	return w, nil
}

// URL is the base URL ("http://127.0.0.1:port"); append any path.
func (w *Webhook) URL() string { return w.url }

// Addr is the listening host:port.
func (w *Webhook) Addr() string { return w.ln.Addr().String() }

// Connections is how many TCP connections were accepted, so tests can assert
// keep-alive reuse.
func (w *Webhook) Connections() int64 { return w.conns.Load() }

// BadSignatures counts requests refused for their signature.
func (w *Webhook) BadSignatures() int64 { return w.badSigs.Load() }

// Close stops the server and drops open connections.
func (w *Webhook) Close() error {
	w.once.Do(func() { close(w.closing) })
	return w.srv.Close()
}

func (w *Webhook) serve(rw http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	f := w.Faults.Match(path)
	if f != nil && f.Latency > 0 && !w.wait(f.Latency, r) {
		return
	}
	if f != nil && f.Drop {
		w.drop(rw)
		return
	}
	body, err := w.readBody(r)
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, errWebhookTooLarge) {
			status = http.StatusRequestEntityTooLarge
		}
		w.answer(rw, r, path, nil, status, err.Error(), 0)
		return
	}
	if w.opts.Secret != "" {
		if err := w.verify(r.Header.Get(w.opts.SignatureHeader), body); err != nil {
			w.badSigs.Add(1)
			w.answer(rw, r, path, body, http.StatusUnauthorized, err.Error(), 0)
			return
		}
	}
	if f != nil && f.Status != 0 {
		w.answer(rw, r, path, body, f.Status, f.Reason, f.RetryAfter)
		return
	}
	w.answer(rw, r, path, body, http.StatusOK, "", 0)
}

var errWebhookTooLarge = errors.New("request body too large")

func (w *Webhook) readBody(r *http.Request) ([]byte, error) {
	if r.ContentLength > w.opts.MaxBodyBytes {
		return nil, errWebhookTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, w.opts.MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if int64(len(body)) > w.opts.MaxBodyBytes {
		return nil, errWebhookTooLarge
	}
	return body, nil
}

// verify checks the Stripe-style header independently of channels/webhook,
// so a bug in the sender's Sign cannot be hidden by the same bug here.
func (w *Webhook) verify(header string, body []byte) error {
	if header == "" {
		return errors.New("missing signature")
	}
	var ts string
	var sigs []string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return errors.New("malformed signature")
	}
	if age := w.opts.Now().Sub(time.Unix(sec, 0)); age > w.opts.Tolerance || age < -w.opts.Tolerance {
		return errors.New("signature timestamp outside tolerance")
	}
	mac := w.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	var sum [sha256.Size]byte
	want := mac.Sum(sum[:0])
	w.macs.Put(mac)
	for _, s := range sigs {
		var got [sha256.Size]byte
		if n, err := hex.Decode(got[:], []byte(s)); err == nil && n == sha256.Size && hmac.Equal(got[:], want) {
			return nil
		}
	}
	return errors.New("signature mismatch")
}

func (w *Webhook) answer(rw http.ResponseWriter, r *http.Request, path string, body []byte, status int, reason string, retryAfter time.Duration) {
	if w.Recorder.Limit >= 0 {
		hdr := make(map[string]string, len(r.Header)+1)
		for k, v := range r.Header {
			hdr[k] = strings.Join(v, ", ")
		}
		hdr[":method"] = r.Method
		w.Recorder.Add(Received{Provider: "webhook", Address: path, Headers: hdr, Body: body, Status: status, At: w.opts.Now()})
	} else {
		w.Recorder.Add(Received{})
	}
	h := rw.Header()
	if retryAfter > 0 {
		h["Retry-After"] = []string{strconv.FormatInt(int64((retryAfter+time.Second-1)/time.Second), 10)}
	}
	if status >= 300 && status < 400 {
		h["Location"] = []string{"/redirected" + path}
	}
	if status < 300 {
		rw.WriteHeader(status)
		return
	}
	h["Content-Type"] = []string{"application/json"}
	rw.WriteHeader(status)
	fmt.Fprintf(rw, "{\"error\":%q}\n", reason)
}

func (w *Webhook) wait(d time.Duration, r *http.Request) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	case <-w.closing:
		return false
	}
}

func (w *Webhook) drop(rw http.ResponseWriter) {
	hj, ok := rw.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}
