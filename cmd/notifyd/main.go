// Command notifyd is the notification delivery daemon and its tools.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/notifyd/notifyd/daemon/bench"
)

// command is one subcommand: it parses its own flags and returns an exit status.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"shard":      {"build, generate and inspect shard files", runShard},
		"bench":      {"end-to-end benchmarks, as ratios against the machine's own limits", runBench},
		"demo":       {"run a campaign over every channel against local sandboxes (no network, Redis or credentials)", runDemo},
		"health":     {"check a running daemon's /healthz (container health check)", runHealth},
		"serve":      {"run the daemon (admin API, campaign engine, channel workers)", runServe},
		"campaign":   {"create, inspect and control campaigns through the admin API", runCampaign},
		"sandbox":    {"serve local fakes of every provider, with fault injection, stats and a ready config fragment", runSandbox},
		"config":     {"check config files without starting anything: every problem at once, with file, line and key", runConfig},
		"flow":       {"create, inspect and control segment/event-triggered flows through the admin API", runFlow},
		"trigger":    {"fire flow triggers through the admin API (trigger send -f FILE)", runTrigger},
		"version":    {"print the module version, VCS commit and Go version", runVersion},
		"completion": {"print a shell completion script (bash, zsh or fish)", runCompletion},
		"log":        {"export the delivery log to Parquet, or look a user's messages up in it (log export|grep)", runLog},
		"tail":       {"live view of a running daemon: rate, failures by reason, latency, queues, campaign progress", runTail},
	}
}

func main() {
	// A benchmark's sink is this binary re-executed (its CPU must not count
	// as notifyd's); it serves and exits here.
	bench.ServeSinkIfAsked()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 {
		usage(stderr, cmds)
		return 2
	}
	if isHelpArg(args[0]) || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" { // notifyd help CMD [SUB]
			return run(append(args[1:], "--help"), stdout, stderr)
		}
		usage(stdout, cmds)
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		return runVersion(nil, stdout, stderr)
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "notifyd: unknown command %q\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	if wantsHelp(args[1:]) {
		stderr = stdout
	}
	return c.run(args[1:], stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: notifyd <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\n`notifyd COMMAND --help` (or `notifyd help COMMAND`) lists a command's flags.")
}
