package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"time"

	"github.com/notifyd/notifyd/daemon/bench"
)

// runBenchDryRun is `notifyd bench dryrun`: the time a dry run of the
// fan-out campaign takes over a generated shard (counts and previews).
func runBenchDryRun(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("bench dryrun", "bench dryrun [flags]\n\nTimes a dry run (counts and previews, nothing sent) of the fan-out campaign over a generated shard.", stderr)
	members := fs.Int("members", 1_000_000, "segment size")
	rounds := fs.Int("rounds", 3, "dry runs in a row")
	sample := fs.Int("sample", 3, "previews per dry run")
	cache := fs.String("cache", "", "directory keeping generated shards (default $TMPDIR/notifyd-bench)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the runs to this file")
	if err := fs.Parse(args); err != nil {
		return exitCode(err)
	}
	stopProfile, err := startCPUProfile(*cpuprofile)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench dryrun: %v\n", err)
		return 1
	}
	defer stopProfile()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := bench.DryRun(ctx, bench.DryRunOptions{Members: *members, Rounds: *rounds, Sample: *sample, CacheDir: *cache, Out: stdout})
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench dryrun: %v\n", err)
		return 1
	}
	sorted := slices.Clone(res.Elapsed)
	slices.Sort(sorted)
	fmt.Fprintf(stdout, "dryrun: members=%d messages=%d procs=%d best=%s median=%s worst=%s\n", res.Members, res.Messages, res.Procs,
		sorted[0].Round(time.Millisecond), sorted[len(sorted)/2].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond))
	return 0
}

// capsFanout runs the fan-out without and with frequency caps, alternating
// for rounds, and prints the medians and the caps/no-caps ratio.
func capsFanout(ctx context.Context, opts bench.FanoutOptions, rounds int, stdout, stderr io.Writer) int {
	var plain, capped, plainCPU, cappedCPU []float64
	var last *bench.FanoutResult
	for r := range rounds {
		for _, on := range []bool{false, true} {
			o := opts
			o.Caps = on
			res, err := bench.Fanout(ctx, o)
			if err != nil {
				fmt.Fprintf(stderr, "notifyd bench fanout --caps: round %d (caps %v): %v\n", r, on, err)
				return 1
			}
			cpuPerMsg := float64(res.RedisCPU) / float64(time.Microsecond) / float64(max(res.Messages, 1))
			fmt.Fprintf(stdout, "round %d caps=%v: %d messages in %s = %.0f msgs/s (redis SET NX %.0f/s; redis cpu %s = %.2f µs/msg)\n",
				r, on, res.Messages, res.Elapsed.Round(time.Millisecond), res.MsgsPerSec, res.SetNXPerSec, res.RedisCPU.Round(time.Millisecond), cpuPerMsg)
			if on {
				capped = append(capped, res.MsgsPerSec)
				cappedCPU = append(cappedCPU, cpuPerMsg)
				last = res
			} else {
				plain = append(plain, res.MsgsPerSec)
				plainCPU = append(plainCPU, cpuPerMsg)
			}
		}
	}
	median := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	perUser := 0.0
	if last.CapUsers > 0 {
		perUser = float64(last.CapBytes) / float64(last.CapUsers)
	}
	fmt.Fprintf(stdout, "caps: %d users hold cap records, %d bytes in Redis = %.1f bytes per user per window (3 messages recorded: a capped user's state)\n", last.CapUsers, last.CapBytes, perUser)
	// The redis cpu is the whole server's: with other clients on it, it is not the run's alone.
	fmt.Fprintf(stdout, "redis cpu per message: %.2f µs without caps, %.2f µs with (medians): the caps cost Redis %.2f µs per capped message\n",
		median(plainCPU), median(cappedCPU), median(cappedCPU)-median(plainCPU))
	fmt.Fprintf(stdout, "fanout_caps: nocaps_msgs_per_s=%.0f caps_msgs_per_s=%.0f ratio=%.2f cap_bytes_per_user=%.1f redis_cpu_us_per_capped_msg=%.2f\n",
		median(plain), median(capped), median(capped)/median(plain), perUser, median(cappedCPU)-median(plainCPU))
	return 0
}
