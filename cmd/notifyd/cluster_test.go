//go:build unix

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/channels/sandbox"
)

// startCluster starts three redis-server masters of a cluster of their own
// (AOF on, so a killed master restarts with its data and its slots).
func startCluster(t *testing.T, dir string) []*redisProc {
	t.Helper()
	var nodes []*redisProc
	var addrs []string
	for i := range 3 {
		d := filepath.Join(dir, fmt.Sprintf("node-%d", i))
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		r := &redisProc{dir: d, addr: freeAddr(t), logPath: d + ".log",
			extra: []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(d, "nodes.conf"), "--cluster-node-timeout", "5000"}}
		r.start(t)
		nodes = append(nodes, r)
		addrs = append(addrs, r.addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range nodes {
		rdb := redis.NewClient(&redis.Options{Addr: n.addr})
		poll(t, "cluster_state:ok on "+n.addr, 20*time.Second, 50*time.Millisecond, n.proc, func() (bool, string) {
			info, err := rdb.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok"), info
		})
		_ = rdb.Close()
	}
	return nodes
}

// TestClusterMasterKilledMidCampaign: the daemon runs on a 3-master Redis
// Cluster; the master that holds the campaign's keys is SIGKILLed mid-campaign
// and restarted from its AOF. The daemon never dies: it waits, retries and
// goes on, and every member is reached exactly once.
func TestClusterMasterKilledMidCampaign(t *testing.T) {
	if os.Getenv("REDIS_URL") == "" {
		t.Skip("REDIS_URL not set: runs with the other Redis end-to-end tests (it starts a cluster of its own)")
	}
	if testing.Short() {
		t.Skip("-short: skipping the cluster end-to-end test")
	}
	for _, tool := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not on PATH", tool)
		}
	}
	dir := t.TempDir()
	nodes := startCluster(t, filepath.Join(dir, "cluster"))
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.addr)
	}
	bin := buildNotifyd(t, dir)
	shardPath := filepath.Join(dir, "members.shard")
	runBin(t, bin, "shard", "generate", "--profiles", fmt.Sprint(e2eMembers), "--seed", "7", "--out", shardPath, "--format", "shard")

	secret := "cluster-webhook-secret-" + fmt.Sprint(time.Now().UnixNano())
	token := "cluster-admin-token-" + fmt.Sprint(time.Now().UnixNano())
	wh, err := sandbox.NewWebhook(sandbox.WebhookOptions{Secret: secret, RecorderLimit: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wh.Close() })
	wh.Faults.Add(sandbox.Fault{Match: "/hooks/*", Latency: e2eLatency})
	tally := &fleetTally{seen: map[string]int{}}
	wh.Recorder.SetObserver(tally.add)

	prefix := "notifyd-cluster-e2e:"
	cfgPath, addr := writeE2EConfig(t, dir, shardPath, prefix, "cluster-node", token, secret, wh.URL()+"/hooks/notifyd")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfgPath, strings.Replace(string(b), "  url: {env: NOTIFYD_E2E_REDIS_URL}\n",
		fmt.Sprintf("  cluster_addrs: [%s]\n", strings.Join(addrs, ", ")), 1))
	api := &e2eAPI{base: "http://" + addr, token: token, http: &http.Client{Timeout: 5 * time.Second}}
	d := startDaemon(t, bin, cfgPath, os.Environ(), filepath.Join(dir, "daemon.log"))
	api.waitReady(t, d)

	campaign := fmt.Sprintf(`{"id":"on-cluster","segment":"all","channels":["webhook"],`+
		`"content":{"webhook":{"url":%q,"body":{"user":"{{ profile.id }}","kind":"cluster"}}}}`, wh.URL()+"/hooks/notifyd")
	if status, body := api.do(t, http.MethodPost, "/v1/campaigns", []byte(campaign)); status != http.StatusCreated {
		t.Fatalf("create campaign: %d %s", status, body)
	}
	poll(t, "the campaign under way", 60*time.Second, 20*time.Millisecond, d, func() (bool, string) {
		n, _ := tally.count("cluster")
		return n > e2eMembers/4, fmt.Sprintf("%d delivered", n)
	})
	// The master serving the campaign's progress and ledger.
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	master, err := cc.MasterForKey(ctx, prefix+"c:{c:on-cluster}:prog")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	var victim *redisProc
	for _, n := range nodes {
		if n.addr == master.Options().Addr {
			victim = n
		}
	}
	if victim == nil {
		t.Fatalf("no node serves %s", master.Options().Addr)
	}
	victim.kill(t)
	killedAt, _ := tally.count("cluster")
	time.Sleep(3 * time.Second) // the outage itself, not a wait for a result
	victim.start(t)
	poll(t, "the campaign completes", 120*time.Second, 100*time.Millisecond, d, func() (bool, string) {
		status, body := api.do(t, http.MethodGet, "/v1/campaigns/on-cluster", nil)
		var st struct{ Status string }
		return status == http.StatusOK && json.Unmarshal(body, &st) == nil && st.Status == "completed", string(body)
	})
	distinct, copies := tally.count("cluster")
	t.Logf("master %s killed at %d deliveries and restarted from its AOF; %d of %d users reached with %d requests", victim.addr, killedAt, distinct, e2eMembers, copies)
	if distinct != e2eMembers || copies != e2eMembers {
		t.Fatalf("%d of %d users reached with %d requests: want each once (the daemon never died)", distinct, e2eMembers, copies)
	}
}
