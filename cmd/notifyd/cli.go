package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// errHelp is returned by parseArgs after --help printed the usage: the
// command exits 0.
var errHelp = flag.ErrHelp

// parseArgs parses flags wherever they appear, before or after positional
// arguments (`campaign get ID --addr X`); "--" ends the flags. It returns
// the positional arguments in order.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops at the first non-flag, or consumes a lone "--".
		consumedDashes := len(args) > len(rest) && args[len(args)-len(rest)-1] == "--"
		if consumedDashes {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// exitCode maps a parse error to the exit status: 0 after --help, 2 for a
// usage error (the flag package has already printed it).
func exitCode(err error) int {
	if errors.Is(err, errHelp) {
		return 0
	}
	return 2
}

// newCommandFlags is a FlagSet that prints its usage (summary, then only its own
// flags) to stderr and returns errors instead of exiting.
func newCommandFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: notifyd %s\n", synopsis)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(w, "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// countFlag is an integer flag that refuses negative numbers (and zero
// unless allowed), so `demo --profiles -5` is a usage error, not a surprise.
type countFlag struct {
	n         *int
	allowZero bool
}

func newCountFlag(fs *flag.FlagSet, name string, def int, allowZero bool, usage string) *int {
	n := def
	fs.Var(countFlag{n: &n, allowZero: allowZero}, name, usage)
	return &n
}

func (c countFlag) String() string {
	if c.n == nil {
		return "0"
	}
	return strconv.Itoa(*c.n)
}

func (c countFlag) Set(s string) error {
	v, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	if v < 0 || (v == 0 && !c.allowZero) {
		if c.allowZero {
			return fmt.Errorf("%d: must not be negative", v)
		}
		return fmt.Errorf("%d: must be at least 1", v)
	}
	*c.n = v
	return nil
}

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = append(*l, s)
	return nil
}
