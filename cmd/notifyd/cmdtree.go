package main

import (
	"bytes"
	"sort"
	"strings"
)

// The command tree — commands, their subcommands and each one's flags —
// for the help walk, the golden help texts and shell completion. Flags are
// read from each command's own --help output, so the tree cannot drift from
// the FlagSets that parse them.

// isHelpArg reports whether arg asks for help the way the flag package
// understands it (-h, -help, --help).
func isHelpArg(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// wantsHelp reports whether a command's arguments ask for help before "--":
// the help text then goes to stdout (it was asked for, so it is the
// command's output, fit for a pager) and the command exits 0.
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if isHelpArg(a) {
			return true
		}
	}
	return false
}

// benchScenarios are bench's subcommands.
var benchScenarios = []string{"fanout", "dryrun", "fleet", "trigger", "email", "webhook", "apns"}

// subcommands lists the words a command dispatches on (nil: none).
func subcommands(name string) []string {
	switch name {
	case "campaign":
		return campaignOrder
	case "flow":
		return flowOrder
	case "trigger":
		return []string{"send"}
	case "shard":
		return []string{"build", "inspect", "generate"}
	case "bench":
		return benchScenarios
	case "config":
		return []string{"check"}
	case "log":
		return []string{"export", "grep"}
	case "completion":
		return completionShells
	}
	return nil
}

// commandPaths is every command and subcommand, sorted: ["bench"],
// ["bench", "email"], ...
func commandPaths() [][]string {
	var names []string
	for n := range commands() {
		names = append(names, n)
	}
	sort.Strings(names)
	var paths [][]string
	for _, n := range names {
		paths = append(paths, []string{n})
		for _, sub := range subcommands(n) {
			paths = append(paths, []string{n, sub})
		}
	}
	return paths
}

// flagInfo is one flag as --help lists it.
type flagInfo struct {
	name  string
	value bool   // takes a value (its help names a type)
	usage string // first line of its usage
}

// dashed is the flag as people type it: -f, --addr.
func (f flagInfo) dashed() string {
	if len(f.name) == 1 {
		return "-" + f.name
	}
	return "--" + f.name
}

// helpOf runs `notifyd PATH... --help` and returns its output and exit status.
func helpOf(path []string) (string, int) {
	var out bytes.Buffer
	code := run(append(append([]string(nil), path...), "--help"), &out, &out)
	return out.String(), code
}

// flagsOf is the flags that `notifyd PATH... --help` lists, read from
// flag.PrintDefaults' layout: "  -name[ type]" then "    \tusage", or
// "  -x\tusage" for a short name without a type.
func flagsOf(path []string) []flagInfo {
	help, _ := helpOf(path)
	var flags []flagInfo
	lines := strings.Split(help, "\n")
	for i, line := range lines {
		rest, ok := strings.CutPrefix(line, "  -")
		if !ok || rest == "" || rest[0] == '-' || rest[0] == ' ' {
			continue
		}
		head, usage, tabbed := strings.Cut(rest, "\t")
		name, typ, _ := strings.Cut(head, " ")
		if !tabbed && i+1 < len(lines) {
			usage, _ = strings.CutPrefix(lines[i+1], "    \t")
		}
		flags = append(flags, flagInfo{name: name, value: typ != "", usage: strings.TrimSpace(usage)})
	}
	return flags
}
