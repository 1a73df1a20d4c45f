package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/redisstate"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// countingChannel accepts everything and counts: the API tests are about the
// daemon, the channel tests drive the real providers.
type countingChannel struct {
	name string
	n    atomic.Int64
}

func (c *countingChannel) Name() string { return c.name }
func (c *countingChannel) Send(_ context.Context, batch []*channels.Message) []channels.Result {
	c.n.Add(int64(len(batch)))
	return make([]channels.Result, len(batch))
}

func writeTestShard(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.shard")
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	g := shardgen.New(3)
	var p shard.Profile
	for i := range uint64(n) {
		g.Profile(i, &p)
		if err := w.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return path
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const testToken = "test-token-0123456789abcdef"

type testDaemon struct {
	base string
	sms  *countingChannel
	log  *syncBuffer
	stop func() error
}

func startDaemon(t *testing.T, extraYAML ...string) *testDaemon {
	t.Helper()
	return startDaemonShard(t, "", extraYAML...)
}

// startDaemonShard is startDaemon with more keys of the shard section
// (indented lines).
func startDaemonShard(t *testing.T, shardYAML string, extraYAML ...string) *testDaemon {
	t.Helper()
	cfg, err := ParseConfig([]byte("shard:\n  path: " + writeTestShard(t, 300) + "\n" + shardYAML + "admin:\n  token: " + testToken + "\n" + strings.Join(extraYAML, "")))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	td := &testDaemon{base: "http://" + ln.Addr().String(), sms: &countingChannel{name: channels.SMS}, log: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(td.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := New(context.Background(), cfg, Deps{
		Channels: map[string]ChannelSpec{channels.SMS: {Channel: td.sms, Pool: PoolConfig{Workers: 1, BatchSize: 50}}},
		Logger:   logger, Listener: ln,
	})
	if err != nil {
		t.Fatal(err)
	}
	td.stop = runDaemon(t, d)
	return td
}

// runDaemon runs d until the returned stop is called (or the test ends);
// stop waits up to 40s for Run to return and gives its error.
func runDaemon(t *testing.T, d *Daemon) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	var stopErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(40 * time.Second):
				stopErr = context.DeadlineExceeded
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func (td *testDaemon) do(t *testing.T, method, path, token, contentType string, body []byte) (int, map[string]any) {
	t.Helper()
	status, out, _ := td.doHeader(t, method, path, token, contentType, body)
	return status, out
}

// doHeader is do that also returns the response headers.
func (td *testDaemon) doHeader(t *testing.T, method, path, token, contentType string, body []byte) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, td.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if out == nil {
		out = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, out, resp.Header
}

const smsCampaign = `{"id":"api-test","segment":"all","channels":["sms"],"content":{"sms":{"body":"Hi {{ profile.first_name | default: 'there' }}"}}}`

func errField(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	f, _ := e["field"].(string)
	return f
}

func TestAdminAPI(t *testing.T) {
	t.Run("memory state", func(t *testing.T) { testAdminAPI(t, startDaemon(t)) })
	t.Run("redis state", func(t *testing.T) {
		url := os.Getenv("REDIS_URL")
		if url == "" {
			t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it)")
		}
		testAdminAPI(t, startDaemon(t, fmt.Sprintf("redis:\n  url: %s\n  prefix: %q\n", url, redisPrefix(t, url))))
	})
	t.Run("redis cluster state", func(t *testing.T) {
		addrs := os.Getenv("REDIS_CLUSTER_ADDRS")
		if addrs == "" {
			t.Skip("REDIS_CLUSTER_ADDRS not set (.ci/run starts a Redis Cluster and sets it)")
		}
		list := strings.Split(addrs, ",")
		testAdminAPI(t, startDaemon(t, fmt.Sprintf("redis:\n  cluster_addrs: [%s]\n  prefix: %q\n", strings.Join(list, ", "), redisClusterPrefix(t, list))))
	})
}

// redisClusterPrefix returns a fresh key prefix whose keys are deleted from
// every master of the cluster when the test ends.
func redisClusterPrefix(t *testing.T, addrs []string) string {
	t.Helper()
	prefix := uniquePrefix()
	t.Cleanup(func() {
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		defer rdb.Close()
		_ = rdb.ForEachMaster(context.Background(), func(ctx context.Context, n *redis.Client) error {
			iter := n.Scan(ctx, 0, prefix+"*", 500).Iterator()
			for iter.Next(ctx) {
				n.Del(ctx, iter.Val())
			}
			return nil
		})
	})
	return prefix
}

func uniquePrefix() string { return fmt.Sprintf("notifyd-test:%d:", time.Now().UnixNano()) }

// redisPrefix returns a fresh key prefix whose keys are deleted when the test ends.
func redisPrefix(t *testing.T, url string) string {
	t.Helper()
	prefix := uniquePrefix()
	t.Cleanup(func() {
		opt, err := redis.ParseURL(url)
		if err != nil {
			return
		}
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
	return prefix
}

func testAdminAPI(t *testing.T, td *testDaemon) {
	big := bytes.Repeat([]byte(" "), MaxBodyBytes+10)
	tests := []struct {
		name, method, path, token, ctype string
		body                             []byte
		status                           int
		field                            string
	}{
		{"healthz needs no token", "GET", "/healthz", "", "", nil, 200, ""},
		{"readyz", "GET", "/readyz", "", "", nil, 200, ""},
		{"no token", "GET", "/v1/campaigns", "", "", nil, 401, ""},
		{"wrong token", "GET", "/v1/campaigns", "nope-nope-nope-nope", "", nil, 401, ""},
		{"metrics need the token", "GET", "/metrics", "", "", nil, 401, ""},
		{"metrics", "GET", "/metrics", testToken, "", nil, 200, ""},
		{"malformed JSON", "POST", "/v1/campaigns", testToken, "application/json", []byte(`{"id":`), 400, "body"},
		{"unknown field", "POST", "/v1/campaigns", testToken, "application/json", []byte(`{"id":"x","segment":"all","channels":["sms"],"content":{"sms":{"body":"a"}},"bogus":1}`), 400, "bogus"},
		{"missing segment", "POST", "/v1/campaigns", testToken, "application/json", []byte(`{"id":"x","channels":["sms"],"content":{"sms":{"body":"a"}}}`), 400, "segment"},
		{"unknown segment", "POST", "/v1/campaigns", testToken, "application/json", []byte(`{"id":"x","segment":"nope","channels":["sms"],"content":{"sms":{"body":"a"}}}`), 400, "segment"},
		{"unknown channel", "POST", "/v1/campaigns", testToken, "application/json", []byte(`{"id":"x","segment":"all","channels":["fax"],"content":{}}`), 400, "channels[0]"},
		{"channel not configured", "POST", "/v1/campaigns", testToken, "application/json", []byte(`{"id":"x","segment":"all","channels":["email"],"content":{"email":{"subject":"s","text":"t"}}}`), 400, "channels[0]"},
		{"broken template", "POST", "/v1/campaigns", testToken, "application/json", []byte(`{"id":"x","segment":"all","channels":["sms"],"content":{"sms":{"body":"{{ profile.x | nosuchfilter }}"}}}`), 400, "content.sms.body"},
		{"template over the work budget", "POST", "/v1/campaigns", testToken, "application/json", []byte(`{"id":"x","segment":"all","channels":["sms"],"content":{"sms":{"body":"{{ (1..100000000000) | reverse | first }}"}}}`), 400, "content.sms.body"},
		{"limits above the ceiling", "POST", "/v1/campaigns", testToken, "application/json", []byte(`{"id":"x","segment":"all","channels":["sms"],"content":{"limits":{"max_steps":20000000},"sms":{"body":"a"}}}`), 400, "content.limits.max_steps"},
		{"wrong content type", "POST", "/v1/campaigns", testToken, "text/plain", []byte(smsCampaign), 415, ""},
		{"body too large", "POST", "/v1/campaigns", testToken, "application/json", big, 413, "body"},
		{"unknown campaign", "GET", "/v1/campaigns/nope", testToken, "", nil, 404, "id"},
		{"bad limit", "GET", "/v1/campaigns?limit=0", testToken, "", nil, 400, "limit"},
		{"unknown action", "POST", "/v1/campaigns/x/explode", testToken, "", nil, 404, "action"},
		{"no such endpoint", "GET", "/v2/anything", testToken, "", nil, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := td.do(t, tc.method, tc.path, tc.token, tc.ctype, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, body)
			}
			if tc.field != "" && errField(body) != tc.field {
				t.Fatalf("error field %q, want %q: %v", errField(body), tc.field, body)
			}
		})
	}

	t.Run("create, idempotent create, conflict, completion", func(t *testing.T) {
		status, body := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(smsCampaign))
		if status != 201 {
			t.Fatalf("create: %d %v", status, body)
		}
		if status, _ := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(smsCampaign)); status != 200 {
			t.Fatalf("repeat create: %d", status)
		}
		other := strings.Replace(smsCampaign, "Hi", "Hello", 1)
		if status, body := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(other)); status != 409 {
			t.Fatalf("conflicting create: %d %v", status, body)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, body = td.do(t, "GET", "/v1/campaigns/api-test", testToken, "", nil)
			if body["status"] == "completed" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("never completed: %v", body)
			}
			time.Sleep(20 * time.Millisecond) // polling the API, not waiting for a result blindly
		}
		counts := body["counts"].(map[string]any)["sms"].(map[string]any)
		var total float64
		for _, n := range counts {
			total += n.(float64)
		}
		if total != 300 {
			t.Fatalf("sms counts %v add up to %v, want 300", counts, total)
		}
		if sent := counts["sent"].(float64); int64(sent) != td.sms.n.Load() {
			t.Fatalf("counted %v sent, channel saw %d", sent, td.sms.n.Load())
		}
		if status, body := td.do(t, "POST", "/v1/campaigns/api-test/pause", testToken, "", nil); status != 409 {
			t.Fatalf("pausing a completed campaign: %d %v", status, body)
		}
		status, body = td.do(t, "GET", "/v1/campaigns?limit=10", testToken, "", nil)
		if status != 200 || len(body["campaigns"].([]any)) != 1 {
			t.Fatalf("list: %d %v", status, body)
		}
		_, metrics := td.do(t, "GET", "/metrics", testToken, "", nil)
		if !strings.Contains(metrics["raw"].(string), `notifyd_channel_messages_total{channel="sms"`) {
			t.Fatalf("metrics lack channel counters")
		}
	})

	if err := td.stop(); err != nil {
		t.Fatalf("graceful shutdown: %v", err)
	}
	if strings.Contains(td.log.String(), testToken) {
		t.Fatal("the admin token appears in the log")
	}
}

// TestIntakeStream: a campaign enqueued on the Redis intake stream is created
// and delivered; a malformed entry is acknowledged (and logged), not retried
// forever; nothing stays pending.
func TestIntakeStream(t *testing.T) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it)")
	}
	prefix := redisPrefix(t, url)
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	rs, err := redisstate.New(rdb, redisstate.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	// Enqueued before any daemon runs: the request must survive until one does.
	if _, err := rs.Enqueue(context.Background(), []byte(`{"id":"bad","segment":`)); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Enqueue(context.Background(), []byte(strings.Replace(smsCampaign, "api-test", "from-stream", 1))); err != nil {
		t.Fatal(err)
	}
	td := startDaemon(t, fmt.Sprintf("redis:\n  url: %s\n  prefix: %q\n", url, prefix))
	flow := `{"id":"stream-flow","trigger":{"event":"signup"},"channels":["sms"],"content":{"sms":{"body":"hi {{ event.plan }}"}}}`
	if status, body := td.do(t, "POST", "/v1/flows", testToken, "application/json", []byte(flow)); status != 201 {
		t.Fatalf("create flow: %d %v", status, body)
	}
	if _, err := rs.Enqueue(context.Background(), []byte(`{"trigger":{"event":"signup","user_id":"u-5","properties":{"plan":"pro"}}}`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body := td.do(t, "GET", "/v1/flows/stream-flow", testToken, "", nil)
		if body["triggers"] == 1.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the trigger on the stream never reached its flow: %v", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		status, body := td.do(t, "GET", "/v1/campaigns/from-stream", testToken, "", nil)
		if status == 200 && body["status"] == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("enqueued campaign never completed: %d %v", status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		n, err := rdb.XLen(context.Background(), prefix+"intake").Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d intake entries left unacknowledged", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A campaign started from the stream shows in the live view even though
	// no API call ever named it.
	if !eventsMention(t, td, "from-stream", 5*time.Second) {
		t.Fatal("the stream's campaign never appeared in /v1/events")
	}
	if !strings.Contains(td.log.String(), "intake entry rejected") {
		t.Fatalf("the malformed entry was not reported:\n%s", td.log.String())
	}
}

// eventsMention reads /v1/events until a snapshot mentions id or d passes.
func eventsMention(t *testing.T, td *testDaemon, id string, d time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", td.base+"/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") && strings.Contains(sc.Text(), `"`+id+`"`) {
			return true
		}
	}
	return false
}
