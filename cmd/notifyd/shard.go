package main

import (
	"fmt"
	"io"
)

// runShard is filled in by the shard store work (issue 2).
func runShard(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "notifyd shard: not built yet")
	return 2
}
