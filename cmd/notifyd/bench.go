package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"

	"github.com/notifyd/notifyd/daemon/bench"
)

// runBench runs the end-to-end benchmarks; each prints a machine-readable last line.
func runBench(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "fanout" {
		fmt.Fprintln(stderr, "usage: notifyd bench fanout [--members N] [--redis URL]")
		return 2
	}
	fs := flag.NewFlagSet("bench fanout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	members := fs.Int("members", 1_000_000, "segment size")
	redisURL := fs.String("redis", os.Getenv("REDIS_URL"), "Redis URL (default $REDIS_URL)")
	cache := fs.String("cache", "", "directory keeping generated shards (default $TMPDIR/notifyd-bench)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := bench.Fanout(ctx, bench.FanoutOptions{Members: *members, RedisURL: *redisURL, CacheDir: *cache, Out: stderr})
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench fanout: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "fanout: %d members, %d messages in %s\n", res.ShardMembers, res.Messages, res.Elapsed.Round(1e6))
	chs := make([]string, 0, len(res.Counts))
	for ch := range res.Counts {
		chs = append(chs, ch)
	}
	sort.Strings(chs)
	for _, ch := range chs {
		fmt.Fprintf(stdout, "  %-8s %v\n", ch, res.Counts[ch])
	}
	fmt.Fprintf(stdout, "pipeline %.0f msgs/s; bare pipelined SET NX %.0f/s on the same Redis; ratio %.2f; peak heap %.1f MiB\n",
		res.MsgsPerSec, res.SetNXPerSec, res.Ratio, res.HeapMiB)
	fmt.Fprintf(stdout, "msgs_per_s=%.0f redis_setnx_per_s=%.0f ratio=%.2f heap_mib=%.1f\n", res.MsgsPerSec, res.SetNXPerSec, res.Ratio, res.HeapMiB)
	return 0
}
