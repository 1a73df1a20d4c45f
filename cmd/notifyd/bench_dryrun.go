package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/notifyd/notifyd/daemon/bench"
)

// runBenchDryRun is `notifyd bench dryrun`: the time a dry run of the
// fan-out campaign takes over a generated shard (counts and previews).
func runBenchDryRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench dryrun", flag.ContinueOnError)
	fs.SetOutput(stderr)
	members := fs.Int("members", 1_000_000, "segment size")
	rounds := fs.Int("rounds", 3, "dry runs in a row")
	sample := fs.Int("sample", 3, "previews per dry run")
	cache := fs.String("cache", "", "directory keeping generated shards (default $TMPDIR/notifyd-bench)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the runs to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(stderr, "notifyd bench dryrun: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "notifyd bench dryrun: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
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
