package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
)

// cuttableProxy forwards TCP to Redis until cut: then it drops every
// connection and refuses new ones until restored — Redis "unavailable for a while".
type cuttableProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	down   bool
	frozen bool // bytes are held, connections stay open: Redis under SIGSTOP
	thaw   *sync.Cond
	conns  map[net.Conn]struct{}
}

func newCuttableProxy(t *testing.T, target string) *cuttableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttableProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.thaw = sync.NewCond(&p.mu)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.unfreeze(); p.cut() })
	return p
}

// pipe copies src to dst, holding bytes while the proxy is frozen.
func (p *cuttableProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.frozen {
				p.thaw.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *cuttableProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
}

func (p *cuttableProxy) unfreeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = false
	p.thaw.Broadcast()
}

func (p *cuttableProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

func (p *cuttableProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *cuttableProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// recordingChannel notes which users it was asked to send to.
type recordingChannel struct {
	name  string
	mu    sync.Mutex
	users map[string]int
	sends int
}

func (c *recordingChannel) Name() string { return c.name }
func (c *recordingChannel) Send(_ context.Context, batch []*channels.Message) []channels.Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range batch {
		c.users[m.UserID]++
		c.sends++
	}
	return make([]channels.Result, len(batch))
}

func (c *recordingChannel) distinct() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.users), c.sends
}

// proxiedDaemon is a running daemon whose Redis is behind a cuttable proxy,
// sending one webhook campaign over members at rate messages/s.
type proxiedDaemon struct {
	td    *testDaemon
	hook  *recordingChannel
	proxy *cuttableProxy
}

func startProxiedDaemon(t *testing.T, members int, rate float64, campaignID string) *proxiedDaemon {
	t.Helper()
	raw := os.Getenv("REDIS_URL")
	if raw == "" {
		t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCuttableProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	// lease_ttl 2s: the outages below outlast the lease.
	cfg, err := ParseConfig([]byte(fmt.Sprintf("shard:\n  path: %s\nadmin:\n  token: %s\nredis:\n  url: %s\n  prefix: %q\nengine:\n  lease_ttl: 2s\n  batch_size: 100\n",
		writeTestShard(t, members), testToken, u.String(), redisPrefix(t, raw))))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hook := &recordingChannel{name: channels.Webhook, users: map[string]int{}}
	log := &syncBuffer{}
	d, err := New(context.Background(), cfg, Deps{
		// Rate-limited so the campaign lasts long enough to lose Redis in the middle.
		Channels: map[string]ChannelSpec{channels.Webhook: {Channel: hook, Pool: PoolConfig{Workers: 2, BatchSize: 20, RatePerSecond: rate, Burst: 20}}},
		Logger:   newTestLogger(log), Listener: ln,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		proxy.unfreeze()
		cancel()
		<-done
	})
	pd := &proxiedDaemon{td: &testDaemon{base: "http://" + ln.Addr().String(), log: log}, hook: hook, proxy: proxy}
	body := fmt.Sprintf(`{"id":%q,"segment":"all","channels":["webhook"],"content":{"webhook":{"url":"https://hooks.example.test/in","body":{"u":"{{ profile.id }}"}}}}`, campaignID)
	if status, resp := pd.td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(body)); status != 201 {
		t.Fatalf("create: %d %v", status, resp)
	}
	waitFor(t, 20*time.Second, func() bool { n, _ := hook.distinct(); return n >= members/4 }, "campaign never got going")
	return pd
}

// TestRedisOutageMidCampaign: Redis goes away for a while in the middle of a
// campaign (longer than the lease); the run waits at its next ledger write,
// retrying it, and once Redis is back it goes on (taking back its lease) and
// completes with every member delivered once and counted once: the daemon
// never died, so nothing is sent twice.
func TestRedisOutageMidCampaign(t *testing.T) {
	const members = 3000
	pd := startProxiedDaemon(t, members, 2000, "outage")
	td, hook, proxy := pd.td, pd.hook, pd.proxy
	body := `{"id":"outage","segment":"all","channels":["webhook"],"content":{"webhook":{"url":"https://hooks.example.test/in","body":{"u":"{{ profile.id }}"}}}}`
	proxy.cut()
	cutAt, _ := hook.distinct()
	// While Redis is away the daemon keeps serving; the campaign cannot advance past what was claimed.
	time.Sleep(3 * time.Second) // the outage itself (longer than the lease), not a wait for a result
	if status, _ := td.do(t, "GET", "/healthz", "", "", nil); status != 200 {
		t.Fatalf("healthz during the outage: %d", status)
	}
	if status, _ := td.do(t, "GET", "/readyz", "", "", nil); status != 503 {
		t.Fatalf("readyz during the Redis outage: %d, want 503", status)
	}
	// A request that needs the state store is told to come back, not that it failed.
	other := strings.Replace(body, `"id":"outage"`, `"id":"during-outage"`, 1)
	if status, resp := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(other)); status != 503 {
		t.Fatalf("create during the Redis outage: %d %v, want 503", status, resp)
	}
	proxy.restore()

	var st map[string]any
	waitFor(t, 60*time.Second, func() bool {
		_, st = td.do(t, "GET", "/v1/campaigns/outage", testToken, "", nil)
		return st["status"] == "completed"
	}, "campaign never completed after Redis came back")
	distinct, sends := hook.distinct()
	if distinct != members {
		t.Fatalf("%d of %d members reached the channel", distinct, members)
	}
	counts := st["counts"].(map[string]any)["webhook"].(map[string]any)
	if counts["sent"] != float64(members) || len(counts) != 1 {
		t.Fatalf("counts %v, want sent=%d only", counts, members)
	}
	t.Logf("cut Redis at %d members; %d sends for %d members", cutAt, sends, members)
	if sends != members {
		t.Fatalf("%d sends for %d members: the daemon never died, yet re-sent %d", sends, members, sends-members)
	}
	// Where the outage hits (a batch report, a claim, a lease renewal)
	// depends on timing; it must be logged at warn or error level somewhere.
	if !strings.Contains(td.log.String(), "level=ERROR") && !strings.Contains(td.log.String(), "level=WARN") {
		t.Errorf("the outage left no trace in the log")
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestRedisStallAnswersPromptly: Redis is frozen (SIGSTOP: connections stay
// open, nothing answers). State calls of the admin API answer 503 with
// Retry-After within 2 s instead of hanging, and the campaign in progress
// waits and then completes with nothing sent twice.
func TestRedisStallAnswersPromptly(t *testing.T) {
	const members = 2000
	pd := startProxiedDaemon(t, members, 1000, "stall")
	td, hook, proxy := pd.td, pd.hook, pd.proxy
	body := `{"id":"stall","segment":"all","channels":["webhook"],"content":{"webhook":{"url":"https://hooks.example.test/in","body":{"u":"{{ profile.id }}"}}}}`
	proxy.freeze()
	for _, tc := range []struct{ name, method, path, body string }{
		{"get a campaign", "GET", "/v1/campaigns/stall", ""},
		{"list campaigns", "GET", "/v1/campaigns", ""},
		{"create a campaign", "POST", "/v1/campaigns", strings.Replace(body, `"id":"stall"`, `"id":"stall-2"`, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b []byte
			if tc.body != "" {
				b = []byte(tc.body)
			}
			start := time.Now()
			status, resp, hdr := td.doHeader(t, tc.method, tc.path, testToken, "application/json", b)
			took := time.Since(start)
			if status != 503 || hdr.Get("Retry-After") == "" {
				t.Fatalf("%s %s with Redis frozen: %d %v (Retry-After %q), want 503 with Retry-After", tc.method, tc.path, status, resp, hdr.Get("Retry-After"))
			}
			if took > 2*time.Second {
				t.Fatalf("%s %s took %v with Redis frozen, want ≤ 2s", tc.method, tc.path, took)
			}
		})
	}
	time.Sleep(3 * time.Second) // the stall itself (longer than the lease), not a wait for a result
	proxy.unfreeze()
	var st map[string]any
	waitFor(t, 60*time.Second, func() bool {
		_, st = td.do(t, "GET", "/v1/campaigns/stall", testToken, "", nil)
		return st["status"] == "completed"
	}, "campaign never completed after Redis thawed")
	distinct, sends := hook.distinct()
	if distinct != members || sends != members {
		t.Fatalf("%d members reached with %d sends, want %d once each", distinct, sends, members)
	}
}

// gatedChannel holds every Send until its gate opens: requests in flight
// while the daemon drains.
type gatedChannel struct {
	name string
	gate chan struct{}
	sent atomic.Int64
}

func (c *gatedChannel) Name() string { return c.name }
func (c *gatedChannel) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	select {
	case <-c.gate:
	case <-ctx.Done():
	}
	c.sent.Add(int64(len(batch)))
	return make([]channels.Result, len(batch))
}

// TestDrainKeepsAdminPortAnswering: during a SIGTERM drain the admin port
// still answers, /readyz with 503 (so a load balancer moves on), instead of
// refusing connections; once the in-flight requests end the daemon exits.
func TestDrainKeepsAdminPortAnswering(t *testing.T) {
	cfg, err := ParseConfig([]byte(fmt.Sprintf("shard:\n  path: %s\nadmin:\n  token: %s\nengine:\n  batch_size: 50\n  shutdown_timeout: 20s\n",
		writeTestShard(t, 500), testToken)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hook := &gatedChannel{name: channels.Webhook, gate: make(chan struct{})}
	log := &syncBuffer{}
	d, err := New(context.Background(), cfg, Deps{
		Channels: map[string]ChannelSpec{channels.Webhook: {Channel: hook, Pool: PoolConfig{Workers: 2, BatchSize: 10}}},
		Logger:   newTestLogger(log), Listener: ln,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	td := &testDaemon{base: "http://" + ln.Addr().String(), log: log}
	waitFor(t, 10*time.Second, func() bool { s, _ := td.do(t, "GET", "/readyz", "", "", nil); return s == 200 }, "never ready")
	body := `{"id":"drain","segment":"all","channels":["webhook"],"content":{"webhook":{"url":"https://hooks.example.test/in","body":{"u":"{{ profile.id }}"}}}}`
	if status, resp := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(body)); status != 201 {
		t.Fatalf("create: %d %v", status, resp)
	}
	waitFor(t, 10*time.Second, func() bool { return d.Pools()[channels.Webhook].Stats().IdleWorkers == 0 }, "no request in flight")
	cancel() // SIGTERM
	waitFor(t, 10*time.Second, func() bool { s, _ := td.do(t, "GET", "/readyz", "", "", nil); return s == 503 }, "readyz never said 503 while draining")
	if s, _ := td.do(t, "GET", "/healthz", "", "", nil); s != 200 {
		t.Fatalf("healthz while draining: %d", s)
	}
	select {
	case err := <-done:
		t.Fatalf("daemon exited with requests still in flight: %v", err)
	default:
	}
	close(hook.gate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not finish draining")
	}
	if _, err := http.Get(td.base + "/healthz"); err == nil {
		t.Fatal("admin port still open after the daemon exited")
	}
}
