package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/notifyd/notifyd/daemon"
	"github.com/notifyd/notifyd/daemon/bench"
)

const benchUsage = "usage: notifyd bench fanout [--members N] [--redis URL | --redis-cluster HOST:PORT,... [--compare [--rounds N]]] [--delivery-log | --caps]\n       notifyd bench dryrun [--members N] [--rounds N] [--sample N]\n       notifyd bench fleet [--shards 1,2,4] [--members N] [--redis URL]\n       notifyd bench trigger [--rate N] [--duration D] [--shards N] [--redis URL | --redis-cluster HOST:PORT,...]\n       notifyd bench email|webhook [--members N] [--rounds N] [--reference auto|tool|builtin]\n       notifyd bench email --postfix [--members N] [--rounds N]\n       notifyd bench apns [--messages N] [--latency D] [--workers N --batch N]\n\n`notifyd bench SCENARIO --help` lists a scenario's flags."

// runBench runs the end-to-end benchmarks; each prints a machine-readable last line.
func runBench(args []string, stdout, stderr io.Writer) int {
	// The scenarios measure the daemon as `serve` runs it: its collector
	// settings (runtime.* defaults; GOGC and GOMEMLIMIT still win).
	if _, err := daemon.ApplyRuntime(daemon.RuntimeConfig{}, os.Getenv, daemon.CgroupMemoryMax); err != nil {
		fmt.Fprintf(stderr, "notifyd bench: %v\n", err)
		return 1
	}
	if len(args) > 0 && args[0] == "trigger" {
		return runBenchTrigger(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "dryrun" {
		return runBenchDryRun(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "fleet" {
		return runBenchFleet(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "apns" {
		return runBenchAPNs(args[1:], stdout, stderr)
	}
	if len(args) > 0 && (args[0] == "email" || args[0] == "webhook") {
		return runBenchProvider(args[0], args[1:], stdout, stderr)
	}
	if len(args) > 0 && isHelpArg(args[0]) {
		fmt.Fprintln(stdout, benchUsage)
		return 0
	}
	if len(args) == 0 || args[0] != "fanout" {
		fmt.Fprintln(stderr, benchUsage)
		return 2
	}
	fs := newCommandFlags("bench fanout", "bench fanout [flags]\n\nOne campaign over a generated segment and every channel's fake; compares the pipeline with bare pipelined SET NX on the same Redis.", stderr)
	members := fs.Int("members", 1_000_000, "segment size")
	redisURL := fs.String("redis", os.Getenv("REDIS_URL"), "Redis URL (default $REDIS_URL)")
	cluster := fs.String("redis-cluster", "", "Redis Cluster seed nodes, host:port,... (instead of --redis)")
	compare := fs.Bool("compare", false, "with --redis-cluster: run on the single node (--redis, default $REDIS_URL) and on the cluster, alternating, and print the cluster/node ratio")
	rounds := fs.Int("rounds", 3, "with --compare: node-then-cluster rounds (medians are reported)")
	cache := fs.String("cache", "", "directory keeping generated shards (default $TMPDIR/notifyd-bench)")
	stall := fs.Duration("stall", 30*time.Second, "fail when no message gets through for this long")
	withLog := fs.Bool("delivery-log", false, "run with the delivery log off and on, alternating --rounds times, and print the on/off ratio, log and Parquet bytes per message")
	caps := fs.Bool("caps", false, "also run with a frequency cap (3 per user per day, all channels) checked on every message, and print the ratio to the run without")
	if err := fs.Parse(args[1:]); err != nil {
		return exitCode(err)
	}
	var clusterAddrs []string
	if *cluster != "" {
		clusterAddrs = strings.Split(*cluster, ",")
	}
	explicitURL := false
	fs.Visit(func(f *flag.Flag) { explicitURL = explicitURL || f.Name == "redis" })
	switch {
	case *compare && (clusterAddrs == nil || *redisURL == ""):
		fmt.Fprintln(stderr, "notifyd bench fanout: --compare needs --redis-cluster and a single node (--redis or $REDIS_URL)")
		return 2
	case !*compare && clusterAddrs != nil && explicitURL:
		fmt.Fprintln(stderr, "notifyd bench fanout: --redis and --redis-cluster are exclusive (or add --compare)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts := bench.FanoutOptions{Members: *members, Stall: *stall, CacheDir: *cache, Out: stderr}
	if *compare {
		return compareFanout(ctx, opts, *redisURL, clusterAddrs, max(*rounds, 1), stdout, stderr)
	}
	if clusterAddrs != nil {
		opts.RedisClusterAddrs = clusterAddrs
	} else {
		opts.RedisURL = *redisURL
	}
	if *withLog {
		return compareDeliveryLog(ctx, opts, max(*rounds, 1), stdout, stderr)
	}
	if *caps {
		return capsFanout(ctx, opts, max(*rounds, 1), stdout, stderr)
	}
	res, err := bench.Fanout(ctx, opts)
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
	fmt.Fprintf(stdout, "state on the %s; bare pipelined SET NX grouped per node: %s\n", res.Backend, res.SetNX)
	fmt.Fprintf(stdout, "pipeline %.0f msgs/s; bare pipelined SET NX %.0f/s on the same Redis; ratio %.2f; peak heap %.1f MiB\n",
		res.MsgsPerSec, res.SetNXPerSec, res.Ratio, res.HeapMiB)
	fmt.Fprintf(stdout, "redis memory: peak %d bytes in the campaign's keys while sending = %.4f bytes per message (no per-message key: a cursor, and per open batch a record with the ledger's bitmaps)\n",
		res.RedisPeakBytes, res.RedisBytesPerMsg)
	fmt.Fprintf(stdout, "ledger: %.3f bytes per in-flight message (peak over a window of %d messages), %.5f bytes per completed message (%d bytes left after completion)\n",
		res.RedisBytesPerInFlight, res.InFlight, res.RedisBytesPerDone, res.RedisFinalBytes)
	fmt.Fprintf(stdout, "msgs_per_s=%.0f redis_setnx_per_s=%.0f ratio=%.2f heap_mib=%.1f\n", res.MsgsPerSec, res.SetNXPerSec, res.Ratio, res.HeapMiB)
	return 0
}

// compareFanout runs the fan-out on the single node and on the cluster in
// alternation, so that both see the same machine (2 shared cores make any
// single pair noise), and reports medians and the cluster/node ratio.
func compareFanout(ctx context.Context, opts bench.FanoutOptions, url string, cluster []string, rounds int, stdout, stderr io.Writer) int {
	var node, clus, ratios, clusterVsSetNX []float64
	for r := 1; r <= rounds; r++ {
		no, co := opts, opts
		no.RedisURL, co.RedisClusterAddrs = url, cluster
		rn, err := bench.Fanout(ctx, no)
		if err != nil {
			fmt.Fprintf(stderr, "notifyd bench fanout: round %d, single node: %v\n", r, err)
			return 1
		}
		rc, err := bench.Fanout(ctx, co)
		if err != nil {
			fmt.Fprintf(stderr, "notifyd bench fanout: round %d, cluster: %v\n", r, err)
			return 1
		}
		fmt.Fprintf(stdout, "round %d: node %.0f msgs/s (SET NX %.0f/s), %s %.0f msgs/s (SET NX %.0f/s grouped per node: %s); cluster/node %.2f\n",
			r, rn.MsgsPerSec, rn.SetNXPerSec, rc.Backend, rc.MsgsPerSec, rc.SetNXPerSec, rc.SetNX, rc.MsgsPerSec/rn.MsgsPerSec)
		node, clus = append(node, rn.MsgsPerSec), append(clus, rc.MsgsPerSec)
		ratios = append(ratios, rc.MsgsPerSec/rn.MsgsPerSec)
		clusterVsSetNX = append(clusterVsSetNX, rc.Ratio)
	}
	fmt.Fprintf(stdout, "medians over %d rounds: node %.0f msgs/s, cluster %.0f msgs/s, cluster/node %.2f, cluster/its SET NX %.2f\n",
		rounds, median(node), median(clus), median(ratios), median(clusterVsSetNX))
	fmt.Fprintf(stdout, "node_msgs_per_s=%.0f cluster_msgs_per_s=%.0f cluster_vs_node=%.2f cluster_vs_setnx=%.2f\n",
		median(node), median(clus), median(ratios), median(clusterVsSetNX))
	return 0
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func runBenchTrigger(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("bench trigger", "bench trigger [flags]\n\nFires flow triggers at a steady rate and reports latency from arrival to the provider request.", stderr)
	rate := fs.Int("rate", 10_000, "triggers per second")
	dur := fs.Duration("duration", 10*time.Second, "how long to sustain the rate")
	members := fs.Int("members", 100_000, "shard size (with --shards: the population over all shards)")
	shards := fs.Int("shards", 1, "daemons of a fleet in this process; every trigger is fired at shard 0's, which forwards the others' through Redis (needs --redis or --redis-cluster)")
	provider := fs.String("provider", "webhook", "webhook (real sender, in-process sandbox) or noop (notifyd's own share)")
	redisURL := fs.String("redis", os.Getenv("REDIS_URL"), "Redis URL for dedup (default $REDIS_URL; empty: in memory)")
	cluster := fs.String("redis-cluster", "", "Redis Cluster seed nodes for dedup, host:port,... (instead of --redis)")
	cache := fs.String("cache", "", "directory keeping generated shards (default $TMPDIR/notifyd-bench)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	memprofile := fs.String("memprofile", "", "write a heap profile (allocations since start) of the run to this file")
	traceFile := fs.String("trace", "", "write an execution trace of the run to this file (go tool trace; -pprof=sched shows where goroutines waited for a core)")
	if err := fs.Parse(args); err != nil {
		return exitCode(err)
	}
	stopTrace, err := startTrace(*traceFile)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench trigger: %v\n", err)
		return 1
	}
	defer stopTrace()
	var clusterAddrs []string
	if *cluster != "" {
		clusterAddrs, *redisURL = strings.Split(*cluster, ","), ""
	}
	stopProfile, err := startCPUProfile(*cpuprofile)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench trigger: %v\n", err)
		return 1
	}
	defer stopProfile()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := bench.Trigger(ctx, bench.TriggerOptions{Rate: *rate, Duration: *dur, Members: *members, RedisURL: *redisURL, RedisCluster: clusterAddrs, Shards: *shards, Provider: *provider, CacheDir: *cache, Out: stderr})
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench trigger: %v\n", err)
		return 1
	}
	if err := writeHeapProfile(*memprofile); err != nil {
		fmt.Fprintf(stderr, "notifyd bench trigger: %v\n", err)
		return 1
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	fmt.Fprintf(stdout, "trigger: %d fired in %s (%d accepted, %d reached the provider: %s), dedup in %s\n", res.Fired, res.Elapsed.Round(time.Millisecond), res.Accepted, res.Sent, res.Provider, res.Dedup)
	fmt.Fprintf(stdout, "latency from arrival to provider request: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms\n", ms(res.P50), ms(res.P99), ms(res.P999), ms(res.Max))
	if res.Shards > 1 {
		fmt.Fprintf(stdout, "fleet of %d: %d of %d triggers forwarded to their shard's daemon through Redis\n", res.Shards, res.Forwarded, res.Fired)
		fmt.Fprintf(stdout, "  local  (user on the daemon fired at): p50 %.2f ms, p99 %.2f ms\n", ms(res.Local.P50), ms(res.Local.P99))
		fmt.Fprintf(stdout, "  routed (via the shard's stream):      p50 %.2f ms, p99 %.2f ms (routing adds %+.2f ms at p99)\n", ms(res.Routed.P50), ms(res.Routed.P99), ms(res.Routed.P99-res.Local.P99))
	}
	if res.RedisDuring.P99 > 0 {
		fmt.Fprintf(stdout, "Redis during the run (one small pipeline per 5 ms tick, beside the daemons): p50 %.2f ms, p99 %.2f ms\n", ms(res.RedisDuring.P50), ms(res.RedisDuring.P99))
	}
	fmt.Fprintf(stdout, "heap: %.0f allocations (%.0f B) per trigger, %d collections during the run (GC percent %d)\n", res.AllocsPerTrigger, res.BytesPerTrigger, res.GCs, res.GCPercent)
	if res.Redis.P99 > 0 {
		fmt.Fprintf(stdout, "Redis alone at this cadence (one pipelined SET NX per 5 ms tick, before the run): p50 %.2f ms, p99 %.2f ms; notifyd's p99 is %.1f× it\n",
			ms(res.Redis.P50), ms(res.Redis.P99), float64(res.P99)/float64(res.Redis.P99))
	}
	fmt.Fprintf(stdout, "rate_per_s=%.0f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f", res.RatePerSec, ms(res.P50), ms(res.P99), ms(res.P999))
	if res.Shards > 1 {
		fmt.Fprintf(stdout, " local_p99_ms=%.2f routed_p99_ms=%.2f", ms(res.Local.P99), ms(res.Routed.P99))
	}
	if res.Redis.P99 > 0 {
		fmt.Fprintf(stdout, " redis_p99_ms=%.2f p99_over_redis=%.2f", ms(res.Redis.P99), float64(res.P99)/float64(res.Redis.P99))
	}
	if res.RedisDuring.P99 > 0 {
		fmt.Fprintf(stdout, " redis_during_p99_ms=%.2f p99_over_redis_during=%.2f", ms(res.RedisDuring.P99), float64(res.P99)/float64(res.RedisDuring.P99))
	}
	fmt.Fprintf(stdout, " allocs_per_trigger=%.0f gcs=%d", res.AllocsPerTrigger, res.GCs)
	fmt.Fprintln(stdout)
	return 0
}

// runBenchFleet runs one campaign over N shards' daemons (one process) for
// each N and prints throughput and CPU per message, the latter relative to
// the first N: flat CPU per message is what makes the fleet linear.
func runBenchFleet(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("bench fleet", "bench fleet [flags]\n\nOne campaign over N shards' daemons for each N: throughput and CPU per message relative to the first size.", stderr)
	members := fs.Int("members", 300_000, "population over all shards")
	shardList := fs.String("shards", "1,2,4", "fleet sizes to run, comma-separated")
	redisURL := fs.String("redis", os.Getenv("REDIS_URL"), "Redis URL (default $REDIS_URL)")
	cache := fs.String("cache", "", "directory keeping generated shards (default $TMPDIR/notifyd-bench)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the runs to this file")
	rounds := fs.Int("rounds", 1, "run the sizes this many times, in reverse order every other round, and report each size's median run: in one round the first size always runs first")
	if err := fs.Parse(args); err != nil {
		return exitCode(err)
	}
	if *rounds < 1 {
		fmt.Fprintf(stderr, "notifyd bench fleet: --rounds %d: want at least 1\n", *rounds)
		return 2
	}
	stopProfile, err := startCPUProfile(*cpuprofile)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench fleet: %v\n", err)
		return 1
	}
	defer stopProfile()
	var sizes []int
	for _, f := range strings.Split(*shardList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "notifyd bench fleet: --shards %q: want positive integers separated by commas\n", *shardList)
			return 2
		}
		sizes = append(sizes, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	bySize := map[int][]bench.FleetRun{}
	for r := range *rounds {
		order := sizes
		if r%2 == 1 {
			order = slices.Clone(sizes)
			slices.Reverse(order)
		}
		runs, err := bench.Fleet(ctx, bench.FleetOptions{Members: *members, Shards: order, RedisURL: *redisURL, CacheDir: *cache, Out: stderr})
		if err != nil {
			fmt.Fprintf(stderr, "notifyd bench fleet: %v\n", err)
			return 1
		}
		for _, run := range runs {
			bySize[run.Shards] = append(bySize[run.Shards], run)
		}
	}
	fmt.Fprintf(stdout, "%-7s %10s %12s %14s %16s  %s\n", "shards", "messages", "msgs/s", "cpu_us/msg", "vs first size", "per shard msgs/s")
	median := func(n int) bench.FleetRun {
		runs := slices.Clone(bySize[n])
		slices.SortFunc(runs, func(a, b bench.FleetRun) int { return cmp.Compare(a.CPUPerMsg, b.CPUPerMsg) })
		return runs[len(runs)/2]
	}
	base := median(sizes[0]).CPUPerMsg
	for _, n := range sizes {
		r := median(n)
		per := make([]string, len(r.PerShard))
		for i, v := range r.PerShard {
			per[i] = fmt.Sprintf("%.0f", v)
		}
		fmt.Fprintf(stdout, "%-7d %10d %12.0f %14.2f %16.2f  %s\n", r.Shards, r.Messages, r.MsgsPerSec,
			float64(r.CPUPerMsg.Nanoseconds())/1000, float64(r.CPUPerMsg)/float64(base), strings.Join(per, " "))
	}
	if *rounds > 1 {
		for _, n := range sizes {
			each := make([]string, len(bySize[n]))
			for i, r := range bySize[n] {
				each[i] = fmt.Sprintf("%.2f", float64(r.CPUPerMsg.Nanoseconds())/1000)
			}
			fmt.Fprintf(stdout, "rounds, %d shards: cpu_us/msg %s (the median above)\n", n, strings.Join(each, " / "))
		}
	}
	return 0
}

// runBenchProvider runs `notifyd bench email` or `notifyd bench webhook`.
func runBenchProvider(which string, args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("bench "+which, "bench "+which+" [flags]\n\nnotifyd's "+which+" sender against a local sink, and a reference client against the same sink, in alternating rounds.", stderr)
	var opts bench.ProviderOptions
	fs.IntVar(&opts.Members, "members", 0, "segment size (default 25,000 for email, 50,000 for webhook)")
	fs.IntVar(&opts.Rounds, "rounds", 3, "rounds, each notifyd and the reference back to back (medians are reported)")
	fs.StringVar(&opts.Reference, "reference", "auto", "auto (smtp-source/h2load when installed, else the built-in raw client), tool, or builtin")
	fs.StringVar(&opts.Sink, "sink", "auto", "email: auto (Postfix's smtp-sink when installed) or go (notifyd's Go SMTP sink)")
	fs.IntVar(&opts.Concurrency, "concurrency", 0, "the reference's sessions/connections (default 8 for email, 64 for webhook)")
	fs.StringVar(&opts.CPUProfile, "cpuprofile", "", "write a CPU profile of notifyd's rounds to this file")
	memprofile := fs.String("memprofile", "", "write a heap profile (allocations since start: the shard's generation, the warm-up and every round) to this file")
	if which == "email" {
		fs.BoolVar(&opts.Postfix, "postfix", false, "deliver through a private loopback-only Postfix to a Maildir on tmpfs (needs root and the postfix package), timing notifyd and smtp-source until delivered")
		fs.StringVar(&opts.ReferenceWorkload, "reference-workload", "", "with --postfix, what smtp-source sends as the reference: campaign (the default: -F a message notifyd rendered, -N a recipient of its own per message, as a campaign's; filler runs beside it and is reported as context) or filler (-l, its own text of the same size, all to one recipient)")
	}
	fs.StringVar(&opts.CacheDir, "cache", "", "directory keeping generated shards (default $TMPDIR/notifyd-bench)")
	if err := fs.Parse(args); err != nil {
		return exitCode(err)
	}
	opts.Out = stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	run := bench.Email
	if which == "webhook" {
		run = bench.Webhook
	}
	res, err := run(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench %s: %v\n", which, err)
		return 1
	}
	if err := writeHeapProfile(*memprofile); err != nil {
		fmt.Fprintf(stderr, "notifyd bench %s: %v\n", which, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %d rounds, %d messages each (payload ~%d bytes)\n", which, len(res.Rounds), res.Rounds[0].Messages, res.MessageBytes)
	fmt.Fprintf(stdout, "sink:      %s\nreference: %s\n", res.Sink, res.Reference)
	if res.Note != "" {
		fmt.Fprintf(stdout, "note:      %s\n", res.Note)
	}
	if f := res.Filler; f != nil {
		fmt.Fprintf(stdout, "filler:    %s: %.0f msgs/s, %.1f µs CPU/msg; notifyd at %.2f of it (medians; context, not the reference: Postfix's rate for one recipient and filler text)\n",
			f.Command, f.PerSec, f.CPUPerMsg, f.Ratio)
	}
	fmt.Fprintf(stdout, "notifyd %.0f msgs/s, %.1f µs CPU/msg, %.2f read+write syscalls/msg, %.2f context switches/msg, %.1f allocs/msg; reference %.0f msgs/s, %.1f µs CPU/msg (medians)\n",
		res.MsgsPerSec, res.CPUMicrosPerMsg, res.SyscallsPerMsg, res.CtxSwitchesPerMsg, res.AllocsPerMsg, res.RefPerSec, res.RefCPUPerMsg)
	fmt.Fprintf(stdout, "msgs_per_s=%.0f ref_per_s=%.0f ratio=%.2f cpu_us_per_msg=%.1f ref_cpu_us_per_msg=%.1f cpu_ratio=%.2f\n",
		res.MsgsPerSec, res.RefPerSec, res.Ratio, res.CPUMicrosPerMsg, res.RefCPUPerMsg, res.CPURatio)
	return 0
}

// startCPUProfile profiles the process into path until stop is called; an
// empty path profiles nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// writeHeapProfile writes the heap profile, whose alloc_space and
// alloc_objects views show where a run allocated, to path ("" skips it).
func writeHeapProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create heap profile: %w", err)
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return fmt.Errorf("write heap profile: %w", err)
	}
	return f.Close()
}

// startTrace starts an execution trace into path ("" skips it).
func startTrace(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create trace: %w", err)
	}
	if err := trace.Start(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start trace: %w", err)
	}
	return func() {
		trace.Stop()
		_ = f.Close()
	}, nil
}
