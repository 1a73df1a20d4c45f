package daemon

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestNewRedisClientKind(t *testing.T) {
	c, err := newRedisClient(RedisConfig{URL: NewSecret("redis://127.0.0.1:1/0")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*redis.Client); !ok {
		t.Fatalf("redis.url built %T, want *redis.Client", c)
	}
	cc, err := newRedisClient(RedisConfig{ClusterAddrs: []string{"127.0.0.1:1", "127.0.0.1:2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, ok := cc.(*redis.ClusterClient); !ok {
		t.Fatalf("redis.cluster_addrs built %T, want *redis.ClusterClient", cc)
	}
	if _, err := newRedisClient(RedisConfig{URL: NewSecret("http://:secret-pw@x")}); err == nil || strings.Contains(err.Error(), "secret-pw") {
		t.Fatalf("bad url: %v (must fail without echoing the password)", err)
	}
}

// TestPingRedisCluster: readiness on a cluster is every master answering;
// a cluster that cannot be reached is not ready.
func TestPingRedisCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dead := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, MaxRedirects: 1})
	defer dead.Close()
	if err := pingRedis(ctx, dead); err == nil {
		t.Fatal("an unreachable cluster pinged as ready")
	}
	addrs := os.Getenv("REDIS_CLUSTER_ADDRS")
	if addrs == "" {
		t.Skip("REDIS_CLUSTER_ADDRS not set (.ci/run starts a Redis Cluster and sets it)")
	}
	live, err := newRedisClient(RedisConfig{ClusterAddrs: strings.Split(addrs, ",")})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := pingRedis(ctx, live); err != nil {
		t.Fatalf("live cluster: %v", err)
	}
}
