package main

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// The sandbox's fixed fake credentials: the fakes check them, nothing else does.
const (
	sandboxAPNsKeyID  = "SANDBOXK01"
	sandboxAPNsTeamID = "SANDBOXT01"
	sandboxAPNsTopic  = "com.example.notifyd-sandbox"
	sandboxProject    = "notifyd-sandbox"
	sandboxSMTPUser   = "sandbox"
	sandboxSMSFrom    = "+15005550006"
	// sandboxFragment is the config fragment's file name inside --dir.
	sandboxFragment = "notifyd-sandbox.yaml"
	// sandboxShard is the generated shard file's name inside --dir.
	sandboxShard = "shard.bin"
	// sandboxRecordLimit is how many requests each fake keeps for GET
	// /received; the counts in /stats cover every request.
	sandboxRecordLimit = 2000
)

// sandboxFakes are the fakes' names in port order (--port-base N gives the
// first N, the next N+1, ...): the daemon's channel names, plus the web push
// fake's plain-HTTP port.
var sandboxFakes = []string{"apns", "fcm", "sms", "email", "webpush", "webpush-plain", "webhook", "control"}

// sandboxOptions configure `notifyd sandbox`.
type sandboxOptions struct {
	Addr string
	// Ports per fake name (sandboxFakes); 0 is a random free port.
	Ports map[string]int
	Dir   string
	// Profiles is the size of the generated shard (DIR/shard.bin) whose
	// addresses reach the fakes; 0 writes none.
	Profiles int
	// Faults are installed at start.
	Faults []faultSpec
}

// faultSpec is one --fault / --latency flag or one POST /faults entry.
type faultSpec struct {
	// Channel is a daemon channel name or "all".
	Channel string `json:"channel"`
	// Stage "data" puts an email fault on the reply after DATA instead of RCPT TO.
	Stage      string `json:"stage,omitempty"`
	Match      string `json:"match,omitempty"`
	Status     int    `json:"status,omitempty"`
	Reason     string `json:"reason,omitempty"`
	RetryAfter string `json:"retry_after,omitempty"`
	Latency    string `json:"latency,omitempty"`
	Drop       bool   `json:"drop,omitempty"`
	Times      int    `json:"times,omitempty"`
}

// fault converts the spec to the sandbox package's Fault.
func (f faultSpec) fault() (sandbox.Fault, error) {
	out := sandbox.Fault{Match: f.Match, Status: f.Status, Reason: f.Reason, Drop: f.Drop, Times: f.Times}
	var err error
	if f.RetryAfter != "" {
		if out.RetryAfter, err = time.ParseDuration(f.RetryAfter); err != nil {
			return out, fmt.Errorf("parse retry_after %q: %w", f.RetryAfter, err)
		}
	}
	if f.Latency != "" {
		if out.Latency, err = time.ParseDuration(f.Latency); err != nil {
			return out, fmt.Errorf("parse latency %q: %w", f.Latency, err)
		}
	}
	if f.Times < 0 || f.Status < 0 || out.Latency < 0 || out.RetryAfter < 0 {
		return out, errors.New("times, status, latency and retry_after must not be negative")
	}
	if f.Status == 0 && out.Latency == 0 && !f.Drop {
		return out, errors.New("a fault needs status, latency or drop")
	}
	return out, nil
}

// parseFaultFlag reads "channel=sms,match=+1555*,status=500,times=3" (also
// reason, retry_after, latency, drop, stage). latencyFlag is --latency,
// where d= is the delay ("channel=webhook,d=2ms").
func parseFaultFlag(s string, latencyFlag bool) (faultSpec, error) {
	var f faultSpec
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return f, fmt.Errorf("parse fault %q: %q is not key=value", s, kv)
		}
		var err error
		switch k {
		case "channel":
			f.Channel = v
		case "match":
			f.Match = v
		case "status":
			f.Status, err = strconv.Atoi(v)
		case "reason":
			f.Reason = v
		case "retry_after":
			f.RetryAfter = v
		case "latency", "d":
			f.Latency = v
		case "drop":
			f.Drop, err = strconv.ParseBool(v)
		case "times":
			f.Times, err = strconv.Atoi(v)
		case "stage":
			f.Stage = v
		default:
			return f, fmt.Errorf("parse fault %q: unknown key %q", s, k)
		}
		if err != nil {
			return f, fmt.Errorf("parse fault %q: %s: %w", s, k, err)
		}
	}
	if latencyFlag && f.Latency == "" {
		return f, fmt.Errorf("parse latency %q: needs d=DURATION", s)
	}
	if f.Channel == "" {
		return f, fmt.Errorf("parse fault %q: needs channel= (apns, fcm, email, sms, webpush, webhook or all)", s)
	}
	if _, err := f.fault(); err != nil {
		return f, fmt.Errorf("parse fault %q: %w", s, err)
	}
	return f, nil
}

// faultFlags collects a repeatable flag.
type faultFlags struct {
	specs   *[]faultSpec
	latency bool
}

func (ff faultFlags) String() string { return "" }

func (ff faultFlags) Set(s string) error {
	f, err := parseFaultFlag(s, ff.latency)
	if err != nil {
		return err
	}
	*ff.specs = append(*ff.specs, f)
	return nil
}

// sandboxServer is the six fakes, their tally and the control endpoint.
type sandboxServer struct {
	apns    *sandbox.APNs
	fcm     *sandbox.FCM
	twilio  *sandbox.Twilio
	smtp    *sandbox.SMTP
	webpush *sandbox.WebPush
	webhook *sandbox.Webhook
	tally   *sandbox.Tally

	control   *http.Server
	controlLn net.Listener
	dir       string
	fragment  string
	started   time.Time

	mu    sync.Mutex
	since time.Time
	// faultLog is what POST /faults and the flags installed since the last
	// clear, per channel (the sandbox Faults type cannot list itself).
	faultLog map[string][]faultSpec

	closers []func() error
}

// startSandbox starts every fake, writes the CA files, credentials and the
// config fragment into opts.Dir, and serves the control endpoint.
func startSandbox(opts sandboxOptions) (_ *sandboxServer, err error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1"
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("make sandbox directory: %w", err)
	}
	s := &sandboxServer{tally: sandbox.NewTally(), dir: opts.Dir, started: time.Now(), faultLog: map[string][]faultSpec{}}
	s.since = s.started
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	listen := func(name string) string { return net.JoinHostPort(opts.Addr, strconv.Itoa(opts.Ports[name])) }
	files := map[string][]byte{}

	apnsKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate APNs key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(apnsKey)
	if err != nil {
		return nil, fmt.Errorf("encode APNs key: %w", err)
	}
	files["apns-key.p8"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if s.apns, err = sandbox.NewAPNs(sandbox.APNsOptions{Addr: listen("apns"), TokenKey: &apnsKey.PublicKey, KeyID: sandboxAPNsKeyID,
		TeamID: sandboxAPNsTeamID, Topics: []string{sandboxAPNsTopic}, RecordLimit: sandboxRecordLimit}); err != nil {
		return nil, fmt.Errorf("start APNs fake: %w", err)
	}
	s.closers = append(s.closers, s.apns.Close)
	files["apns-ca.pem"] = s.apns.CertPEM()

	if s.fcm, err = sandbox.NewFCM(sandbox.FCMOptions{Addr: listen("fcm"), ProjectID: sandboxProject, RecordLimit: sandboxRecordLimit}); err != nil {
		return nil, fmt.Errorf("start FCM fake: %w", err)
	}
	s.closers = append(s.closers, s.fcm.Close)
	files["fcm-ca.pem"] = s.fcm.CertPEM()
	files["fcm-service-account.json"] = s.fcm.ServiceAccountJSON()

	twilioToken := randomHex(16)
	if s.twilio, err = sandbox.NewTwilio(sandbox.TwilioOptions{Addr: listen("sms"), AccountSID: "AC" + randomHex(16), AuthToken: twilioToken,
		RecordLimit: sandboxRecordLimit}); err != nil {
		return nil, fmt.Errorf("start Twilio fake: %w", err)
	}
	s.closers = append(s.closers, s.twilio.Close)
	files["twilio-ca.pem"] = s.twilio.CertPEM()
	files["twilio-auth-token"] = []byte(twilioToken)

	smtpPassword := randomHex(16)
	if s.smtp, err = sandbox.NewSMTP(sandbox.SMTPOptions{Addr: listen("email"), Username: sandboxSMTPUser, Password: smtpPassword,
		RecorderLimit: sandboxRecordLimit}); err != nil {
		return nil, fmt.Errorf("start SMTP fake: %w", err)
	}
	s.closers = append(s.closers, s.smtp.Close)
	files["smtp-ca.pem"] = s.smtp.CertPEM()
	files["smtp-password"] = []byte(smtpPassword)

	vapid, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate VAPID key: %w", err)
	}
	b64 := base64.RawURLEncoding
	vapidPublic := b64.EncodeToString(vapid.PublicKey().Bytes())
	if s.webpush, err = sandbox.NewWebPush(sandbox.WebPushOptions{Addr: listen("webpush"), PlainAddr: listen("webpush-plain"),
		ApplicationServerKey: vapidPublic}); err != nil {
		return nil, fmt.Errorf("start web push fake: %w", err)
	}
	s.closers = append(s.closers, s.webpush.Close)
	s.webpush.Recorder.Limit = sandboxRecordLimit // no option for it; set before any subscription exists
	files["webpush-ca.pem"] = s.webpush.CertPEM()
	files["vapid-private-key"] = []byte(b64.EncodeToString(vapid.Bytes()))

	webhookSecret := randomHex(16)
	if s.webhook, err = sandbox.NewWebhook(sandbox.WebhookOptions{Addr: listen("webhook"), Secret: webhookSecret,
		RecorderLimit: sandboxRecordLimit}); err != nil {
		return nil, fmt.Errorf("start webhook fake: %w", err)
	}
	s.closers = append(s.closers, s.webhook.Close)
	files["webhook-secret"] = []byte(webhookSecret)
	// The admin token of the daemon the fragment configures: generated, so
	// a local stack has no secret to invent or to commit.
	files["admin-token"] = []byte(randomHex(24))

	for name, r := range s.recorders() {
		r.SetObserver(s.tally.Observer(name))
	}
	for _, f := range opts.Faults {
		if err := s.addFault(f); err != nil {
			return nil, err
		}
	}

	for name, b := range files {
		if err := os.WriteFile(filepath.Join(opts.Dir, name), b, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", name, err)
		}
	}
	shardPath := ""
	if opts.Profiles > 0 {
		shardPath = filepath.Join(opts.Dir, sandboxShard)
		if err := writeSandboxShard(shardPath, opts.Profiles, s.webpush); err != nil {
			return nil, err
		}
	}
	s.fragment = filepath.Join(opts.Dir, sandboxFragment)
	if err := os.WriteFile(s.fragment, []byte(s.configFragment(opts.Addr, vapidPublic, shardPath)), 0o600); err != nil {
		return nil, fmt.Errorf("write config fragment: %w", err)
	}

	if s.controlLn, err = net.Listen("tcp", listen("control")); err != nil {
		return nil, fmt.Errorf("listen for sandbox control: %w", err)
	}
	s.control = &http.Server{Handler: s.controlHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.control.Serve(s.controlLn) }()
	s.closers = append(s.closers, s.control.Close)
	return s, nil
}

// Close stops every fake and the control endpoint.
func (s *sandboxServer) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// ControlURL is the control endpoint's base URL.
func (s *sandboxServer) ControlURL() string { return "http://" + s.controlLn.Addr().String() }

func (s *sandboxServer) recorders() map[string]*sandbox.Recorder {
	return map[string]*sandbox.Recorder{
		"apns": s.apns.Recorder, "fcm": s.fcm.Recorder, "email": s.smtp.Recorder,
		"sms": s.twilio.Recorder, "webpush": s.webpush.Recorder, "webhook": s.webhook.Recorder,
	}
}

// endpoints are what `notifyd serve` talks to, per channel.
func (s *sandboxServer) endpoints() map[string]string {
	return map[string]string{
		"apns": s.apns.URL(), "fcm": s.fcm.Endpoint(), "email": "smtp://" + s.smtp.Addr() + " (STARTTLS)",
		"sms": s.twilio.URL(), "webpush": s.webpush.URL() + "/push/{id} (POST /webpush/subscriptions mints ids)",
		"webhook": s.webhook.URL() + "/hooks/notifyd", "control": s.ControlURL(),
	}
}

// configFragment is the part of a daemon config that sends to the fakes:
// the shard (when one was generated), the admin token and the channels.
// Secrets are files next to it, so the fragment never holds one. It is
// meant to be loaded after a base config (notifyd serve --config
// examples/local.yaml --config DIR/notifyd-sandbox.yaml).
func (s *sandboxServer) configFragment(addr, vapidPublic, shardPath string) string {
	f := func(name string) string { return strconv.Quote(filepath.Join(s.dir, name)) }
	// The web push and webhook guards refuse loopback and private
	// destinations unless listed: list the fakes' own address.
	allow := `["127.0.0.0/8", "::1/128"]`
	if ip := net.ParseIP(addr); ip != nil && !ip.IsLoopback() {
		allow = fmt.Sprintf("[%q]", addr+"/32")
		if ip.To4() == nil {
			allow = fmt.Sprintf("[%q]", addr+"/128")
		}
	}
	head := ""
	if shardPath != "" {
		head = fmt.Sprintf("shard:\n  path: %s\n", strconv.Quote(shardPath))
	}
	head += fmt.Sprintf("admin:\n  token: {file: %s}\n", f("admin-token"))
	return fmt.Sprintf(`# Written by notifyd sandbox at %s: the part of a notifyd config that sends
# to the local fakes. Credentials are generated per run.
%schannels:
  apns:
    topic: %s
    host: %s
    key_id: %s
    team_id: %s
    key: {file: %s}
    tls: {ca_file: %s}
  fcm:
    project_id: %s
    credentials: {file: %s}
    endpoint: %s
    tls: {ca_file: %s}
  email:
    host: %s
    port: %d
    tls_mode: starttls
    auth: plain
    username: %s
    password: {file: %s}
    from: "notifyd sandbox <sandbox@notifyd.test>"
    message_id_domain: notifyd.test
    tls: {ca_file: %s}
  sms:
    account_sid: %s
    auth_token: {file: %s}
    from: %q
    base_url: %s
    tls: {ca_file: %s}
  webpush:
    vapid_public_key: %s
    vapid_private_key: {file: %s}
    subscriber: mailto:sandbox@notifyd.test
    allow_networks: %s
    tls: {ca_file: %s}
  webhook:
    url: %s
    secret: {file: %s}
    allow_networks: %s
`, s.started.UTC().Format(time.RFC3339), head,
		sandboxAPNsTopic, s.apns.URL(), sandboxAPNsKeyID, sandboxAPNsTeamID, f("apns-key.p8"), f("apns-ca.pem"),
		sandboxProject, f("fcm-service-account.json"), s.fcm.Endpoint(), f("fcm-ca.pem"),
		s.smtp.Host(), s.smtp.Port(), sandboxSMTPUser, f("smtp-password"), f("smtp-ca.pem"),
		s.twilio.AccountSID(), f("twilio-auth-token"), sandboxSMSFrom, s.twilio.URL(), f("twilio-ca.pem"),
		vapidPublic, f("vapid-private-key"), allow, f("webpush-ca.pem"),
		s.webhook.URL()+"/hooks/notifyd", f("webhook-secret"), allow)
}

// faultTargets are the Faults lists a spec's channel names.
func (s *sandboxServer) faultTargets(f faultSpec) ([]*sandbox.Faults, error) {
	byName := map[string]*sandbox.Faults{
		"apns": s.apns.Faults, "fcm": s.fcm.Faults, "sms": s.twilio.Faults,
		"email": s.smtp.Faults, "webpush": s.webpush.Faults, "webhook": s.webhook.Faults,
	}
	if f.Stage == "data" {
		if f.Channel != "email" {
			return nil, fmt.Errorf("fault stage=data applies to channel=email only, not %q", f.Channel)
		}
		return []*sandbox.Faults{s.smtp.DataFaults}, nil
	}
	if f.Stage != "" && f.Stage != "rcpt" {
		return nil, fmt.Errorf("unknown fault stage %q (rcpt or data)", f.Stage)
	}
	if f.Channel == "all" || f.Channel == "*" {
		out := make([]*sandbox.Faults, 0, len(byName))
		for _, fs := range byName {
			out = append(out, fs)
		}
		return out, nil
	}
	fs, ok := byName[f.Channel]
	if !ok {
		return nil, fmt.Errorf("unknown fault channel %q (apns, fcm, email, sms, webpush, webhook or all)", f.Channel)
	}
	return []*sandbox.Faults{fs}, nil
}

func (s *sandboxServer) addFault(f faultSpec) error {
	fault, err := f.fault()
	if err != nil {
		return fmt.Errorf("add fault: %w", err)
	}
	targets, err := s.faultTargets(f)
	if err != nil {
		return fmt.Errorf("add fault: %w", err)
	}
	for _, fs := range targets {
		fs.Add(fault)
	}
	s.mu.Lock()
	s.faultLog[f.Channel] = append(s.faultLog[f.Channel], f)
	s.mu.Unlock()
	return nil
}

// clearFaults removes the faults of one channel ("all": every channel).
func (s *sandboxServer) clearFaults(channel string) error {
	all := channel == "all" || channel == "*"
	targets, err := s.faultTargets(faultSpec{Channel: channel})
	if err != nil {
		return fmt.Errorf("clear faults: %w", err)
	}
	if channel == "email" || all {
		targets = append(targets, s.smtp.DataFaults)
	}
	for _, fs := range targets {
		fs.Clear()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if all {
		clear(s.faultLog)
		return nil
	}
	delete(s.faultLog, channel)
	// A fault added with channel=all is gone from this channel only; the
	// log cannot say so per channel, so it drops those entries too.
	delete(s.faultLog, "all")
	return nil
}

// statsView is GET /stats.
type statsView struct {
	Since    time.Time                       `json:"since"`
	Channels map[string]sandbox.ChannelStats `json:"channels"`
	Faults   map[string][]faultSpec          `json:"faults"`
}

// faultsRequest is POST /faults: clear first, then add.
type faultsRequest struct {
	Clear []string    `json:"clear"`
	Add   []faultSpec `json:"add"`
}

// receivedView is one entry of GET /received.
type receivedView struct {
	Address string    `json:"address"`
	Status  int       `json:"status"`
	Handle  string    `json:"handle"`
	At      time.Time `json:"at"`
}

func (s *sandboxServer) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		v := statsView{Since: s.since, Faults: make(map[string][]faultSpec, len(s.faultLog))}
		for k, fs := range s.faultLog {
			v.Faults[k] = append([]faultSpec(nil), fs...)
		}
		s.mu.Unlock()
		v.Channels = s.tally.Snapshot()
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /received", func(w http.ResponseWriter, r *http.Request) {
		ch := r.URL.Query().Get("channel")
		rec, ok := s.recorders()[ch]
		if !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "channel must be one of apns, fcm, email, sms, webpush, webhook"})
			return
		}
		limit := 100
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "limit must be a positive integer"})
				return
			}
			limit = n
		}
		all := rec.All()
		all = all[max(0, len(all)-limit):]
		out := make([]receivedView, len(all))
		for i, x := range all {
			out[i] = receivedView{Address: x.Address, Status: x.Status, Handle: sandbox.Handle(ch, x), At: x.At}
		}
		writeJSON(w, http.StatusOK, map[string]any{"channel": ch, "received": out})
	})
	mux.HandleFunc("POST /faults", func(w http.ResponseWriter, r *http.Request) {
		var req faultsRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "decode faults request: " + err.Error()})
			return
		}
		for _, ch := range req.Clear {
			if err := s.clearFaults(ch); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
		}
		for _, f := range req.Add {
			if err := s.addFault(f); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
		}
		s.mu.Lock()
		n := 0
		for _, fs := range s.faultLog {
			n += len(fs)
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]int{"faults": n})
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		s.tally.Reset()
		for _, rec := range s.recorders() {
			rec.Reset()
		}
		s.mu.Lock()
		s.since = time.Now()
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]bool{"reset": true})
	})
	// Web push subscriptions must be minted by the push service that will
	// decrypt them, as a browser's pushManager.subscribe() does.
	mux.HandleFunc("POST /webpush/subscriptions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Count int    `json:"count"`
			Name  string `json:"name"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil || req.Count <= 0 || req.Count > 100_000 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": `want {"count": 1..100000, "name": "optional-prefix"}`})
			return
		}
		type sub struct {
			Endpoint string `json:"endpoint"`
			P256dh   string `json:"p256dh"`
			Auth     string `json:"auth"`
		}
		out := make([]sub, 0, req.Count)
		for range req.Count {
			x, err := s.webpush.NewNamedSubscription(req.Name, false)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			out = append(out, sub{Endpoint: x.Endpoint, P256dh: x.P256dh, Auth: x.Auth})
		}
		writeJSON(w, http.StatusOK, map[string]any{"subscriptions": out})
	})
	mux.HandleFunc("GET /endpoints", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"endpoints": s.endpoints(), "fragment": s.fragment})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // handles are <id@domain>
	_ = enc.Encode(v)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// runSandbox serves the six provider fakes until SIGINT/SIGTERM.
func runSandbox(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: notifyd sandbox [flags]

Serves local fakes of APNs (HTTP/2+TLS), FCM v1, Twilio, SMTP (STARTTLS), web push
and a webhook receiver, writes their CA files, fake credentials and a config fragment
(DIR/notifyd-sandbox.yaml: the channels section for notifyd serve) into --dir, and
counts what they receive. Control endpoint: GET /stats, GET /received?channel=C,
POST /faults, POST /reset, POST /webpush/subscriptions, GET /endpoints.

flags:`)
		fs.PrintDefaults()
	}
	opts := sandboxOptions{Ports: map[string]int{}}
	fs.StringVar(&opts.Addr, "addr", "127.0.0.1", "address to listen on")
	portBase := fs.Int("port-base", 0, "first port: apns, fcm, sms, email, webpush, webpush-plain, webhook, control on consecutive ports (0: random ports)")
	ports := map[string]*int{}
	for _, name := range sandboxFakes {
		ports[name] = fs.Int(name+"-port", 0, "port of the "+name+" fake, overriding --port-base (0: from --port-base or random)")
	}
	fs.IntVar(&opts.Profiles, "profiles", 1000, "profiles in the generated shard DIR/shard.bin, whose addresses reach the fakes (0: no shard)")
	fs.StringVar(&opts.Dir, "dir", "", "directory for the CA files, credentials and config fragment (default: a new temporary directory)")
	fs.Var(faultFlags{specs: &opts.Faults}, "fault", "inject a fault, repeatable: channel=sms,match=+1555*,status=500,times=3 (also reason=, retry_after=, latency=, drop=true, stage=data for email)")
	fs.Var(faultFlags{specs: &opts.Faults, latency: true}, "latency", "delay answers, repeatable: channel=webhook,d=2ms[,match=GLOB] (channel=all for every fake)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "notifyd sandbox: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if opts.Profiles < 0 {
		fmt.Fprintf(stderr, "notifyd sandbox: --profiles %d: must not be negative\n", opts.Profiles)
		return 2
	}
	if *portBase < 0 || *portBase+len(sandboxFakes) > 65536 {
		fmt.Fprintf(stderr, "notifyd sandbox: --port-base %d out of range\n", *portBase)
		return 2
	}
	for i, name := range sandboxFakes {
		p := *ports[name]
		if p < 0 || p > 65535 {
			fmt.Fprintf(stderr, "notifyd sandbox: --%s-port %d out of range\n", name, p)
			return 2
		}
		if p == 0 && *portBase > 0 {
			p = *portBase + i
		}
		opts.Ports[name] = p
	}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "notifyd-sandbox-")
		if err != nil {
			fmt.Fprintf(stderr, "notifyd sandbox: make directory: %v\n", err)
			return 1
		}
		opts.Dir = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	s, err := startSandbox(opts)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd sandbox: %v\n", err)
		return 1
	}
	defer s.Close()
	eps := s.endpoints()
	names := make([]string, 0, len(eps))
	for n := range eps {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(stdout, "notifyd sandbox: serving")
	for _, n := range names {
		fmt.Fprintf(stdout, "  %-8s %s\n", n, eps[n])
	}
	fmt.Fprintf(stdout, "config fragment: %s\n", s.fragment)
	if opts.Profiles > 0 {
		fmt.Fprintf(stdout, "shard: %s (%d profiles)\n", filepath.Join(opts.Dir, sandboxShard), opts.Profiles)
	}
	fmt.Fprintf(stdout, "admin token: %s\n", filepath.Join(opts.Dir, "admin-token"))
	fmt.Fprintf(stdout, "stats: curl %s/stats\n", s.ControlURL())
	<-ctx.Done()
	fmt.Fprintln(stdout, "notifyd sandbox: stopping")
	return 0
}

// writeSandboxShard generates n profiles (store/shard/shardgen) whose web
// push subscriptions are minted, one per address, by the sandbox's own push
// service, so what it receives really decrypts and /stats counts each
// address once; the other addresses are accepted by their fakes as they are.
func writeSandboxShard(path string, n int, wp *sandbox.WebPush) error {
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: 1})
	if err != nil {
		return fmt.Errorf("create sandbox shard: %w", err)
	}
	g := shardgen.New(1)
	var p shard.Profile
	for i := range uint64(n) {
		g.Profile(i, &p)
		for j := range p.WebPush {
			x, err := wp.NewNamedSubscription("browser", false)
			if err != nil {
				_ = w.Abort()
				return fmt.Errorf("mint web push subscription: %w", err)
			}
			p.WebPush[j] = shard.WebPushSubscription{Endpoint: x.Endpoint, P256dh: x.P256dh, Auth: x.Auth}
		}
		if err := w.Add(&p); err != nil {
			_ = w.Abort()
			return fmt.Errorf("add sandbox profile %d: %w", i, err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		return fmt.Errorf("write sandbox shard: %w", err)
	}
	return nil
}
