package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// versionLine is the module version, the VCS commit the binary was built
// from (with "+dirty" for uncommitted changes) and the Go version.
func versionLine() string {
	version, commit := "(devel)", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty {
			commit += "+dirty"
		}
	}
	return fmt.Sprintf("notifyd %s (commit %s, %s)", version, commit, runtime.Version())
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("version", "version", stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitCode(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "notifyd version: unexpected arguments %q\n", pos)
		return 2
	}
	fmt.Fprintln(stdout, versionLine())
	return 0
}
