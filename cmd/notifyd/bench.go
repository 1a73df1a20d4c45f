package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"time"

	"github.com/notifyd/notifyd/daemon/bench"
)

// runBench runs the end-to-end benchmarks; each prints a machine-readable last line.
func runBench(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "trigger" {
		return runBenchTrigger(args[1:], stdout, stderr)
	}
	if len(args) > 0 && (args[0] == "email" || args[0] == "webhook") {
		return runBenchProvider(args[0], args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "fanout" {
		fmt.Fprintln(stderr, "usage: notifyd bench fanout [--members N] [--redis URL]\n       notifyd bench trigger [--rate N] [--duration D] [--redis URL]\n       notifyd bench email|webhook [--members N] [--rounds N] [--reference auto|tool|builtin]")
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
	fmt.Fprintf(stdout, "redis memory: peak %d bytes in the campaign's keys while sending = %.4f bytes per message (no per-message key: a cursor, and per open batch a record with the ledger's bitmaps)\n",
		res.RedisPeakBytes, res.RedisBytesPerMsg)
	fmt.Fprintf(stdout, "ledger: %.3f bytes per in-flight message (peak over a window of %d messages), %.5f bytes per completed message (%d bytes left after completion)\n",
		res.RedisBytesPerInFlight, res.InFlight, res.RedisBytesPerDone, res.RedisFinalBytes)
	fmt.Fprintf(stdout, "msgs_per_s=%.0f redis_setnx_per_s=%.0f ratio=%.2f heap_mib=%.1f\n", res.MsgsPerSec, res.SetNXPerSec, res.Ratio, res.HeapMiB)
	return 0
}

func runBenchTrigger(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench trigger", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rate := fs.Int("rate", 10_000, "triggers per second")
	dur := fs.Duration("duration", 10*time.Second, "how long to sustain the rate")
	members := fs.Int("members", 100_000, "shard size")
	provider := fs.String("provider", "webhook", "webhook (real sender, in-process sandbox) or noop (notifyd's own share)")
	redisURL := fs.String("redis", os.Getenv("REDIS_URL"), "Redis URL for dedup (default $REDIS_URL; empty: in memory)")
	cache := fs.String("cache", "", "directory keeping generated shards (default $TMPDIR/notifyd-bench)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(stderr, "notifyd bench trigger: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "notifyd bench trigger: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := bench.Trigger(ctx, bench.TriggerOptions{Rate: *rate, Duration: *dur, Members: *members, RedisURL: *redisURL, Provider: *provider, CacheDir: *cache, Out: stderr})
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench trigger: %v\n", err)
		return 1
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	fmt.Fprintf(stdout, "trigger: %d fired in %s (%d accepted, %d reached the provider: %s), dedup in %s\n", res.Fired, res.Elapsed.Round(time.Millisecond), res.Accepted, res.Sent, res.Provider, res.Dedup)
	fmt.Fprintf(stdout, "latency from arrival to provider request: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms\n", ms(res.P50), ms(res.P99), ms(res.P999), ms(res.Max))
	fmt.Fprintf(stdout, "rate_per_s=%.0f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f\n", res.RatePerSec, ms(res.P50), ms(res.P99), ms(res.P999))
	return 0
}

// runBenchProvider runs `notifyd bench email` or `notifyd bench webhook`.
func runBenchProvider(which string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench "+which, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts bench.ProviderOptions
	fs.IntVar(&opts.Members, "members", 0, "segment size (default 25,000 for email, 50,000 for webhook)")
	fs.IntVar(&opts.Rounds, "rounds", 3, "rounds, each notifyd and the reference back to back (medians are reported)")
	fs.StringVar(&opts.Reference, "reference", "auto", "auto (smtp-source/h2load when installed, else the built-in raw client), tool, or builtin")
	fs.StringVar(&opts.Sink, "sink", "auto", "email: auto (Postfix's smtp-sink when installed) or go (notifyd's Go SMTP sink)")
	fs.IntVar(&opts.Concurrency, "concurrency", 0, "the reference's sessions/connections (default 8 for email, 64 for webhook)")
	fs.StringVar(&opts.CPUProfile, "cpuprofile", "", "write a CPU profile of notifyd's rounds to this file")
	fs.StringVar(&opts.CacheDir, "cache", "", "directory keeping generated shards (default $TMPDIR/notifyd-bench)")
	if err := fs.Parse(args); err != nil {
		return 2
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
	fmt.Fprintf(stdout, "%s: %d rounds, %d messages each (payload ~%d bytes)\n", which, len(res.Rounds), res.Rounds[0].Messages, res.MessageBytes)
	fmt.Fprintf(stdout, "sink:      %s\nreference: %s\n", res.Sink, res.Reference)
	if res.Note != "" {
		fmt.Fprintf(stdout, "note:      %s\n", res.Note)
	}
	fmt.Fprintf(stdout, "notifyd %.0f msgs/s, %.1f µs CPU/msg; reference %.0f msgs/s, %.1f µs CPU/msg (medians)\n",
		res.MsgsPerSec, res.CPUMicrosPerMsg, res.RefPerSec, res.RefCPUPerMsg)
	fmt.Fprintf(stdout, "msgs_per_s=%.0f ref_per_s=%.0f ratio=%.2f cpu_us_per_msg=%.1f ref_cpu_us_per_msg=%.1f\n",
		res.MsgsPerSec, res.RefPerSec, res.Ratio, res.CPUMicrosPerMsg, res.RefCPUPerMsg)
	return 0
}
