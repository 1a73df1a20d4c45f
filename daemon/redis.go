package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// newRedisClient builds the client the configuration names: a
// *redis.Client for redis.url, a *redis.ClusterClient for
// redis.cluster_addrs. Both honour callers' deadlines (the API's bound on
// state calls, the ledger's retries) instead of only the read timeout.
func newRedisClient(c RedisConfig) (redis.UniversalClient, error) {
	if len(c.ClusterAddrs) > 0 {
		opt := &redis.ClusterOptions{
			Addrs:                 c.ClusterAddrs,
			Username:              c.Username,
			Password:              c.Password.Value(),
			ContextTimeoutEnabled: true,
		}
		if c.TLS {
			opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		return redis.NewClusterClient(opt), nil
	}
	opt, err := redis.ParseURL(c.URL.Value())
	if err != nil {
		// The URL may carry a password: never echo it.
		return nil, errors.New("parse redis.url: not a valid redis:// or rediss:// URL")
	}
	opt.ContextTimeoutEnabled = true
	return redis.NewClient(opt), nil
}

// pingRedis checks every node the daemon writes to: the one node, or every
// master of a cluster (a campaign's keys live on one master, a user's dedup
// keys on any). A cluster whose slot map cannot be loaded fails here too.
func pingRedis(ctx context.Context, c redis.UniversalClient) error {
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		return c.Ping(ctx).Err()
	}
	// ForEachMaster reloads nothing by itself: a node that left the slot
	// map is found by the state commands' MOVED handling, not here.
	return cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		if err := n.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("cluster node %s: %w", n.Options().Addr, err)
		}
		return nil
	})
}
