package main

import (
	"fmt"
	"io"
	"net/http"
	"time"
)

// runHealth checks a running daemon's /healthz (the container's HEALTHCHECK:
// the final image has no shell or curl).
func runHealth(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("health", "health [flags]\n\nExits 0 when a running daemon answers 200 on /healthz (the container's HEALTHCHECK), 1 otherwise.", stderr)
	addr := fs.String("addr", envOr("NOTIFYD_ADDR", "http://127.0.0.1:8080"), "admin API base URL")
	path := fs.String("path", "/healthz", "endpoint to check (/healthz or /readyz)")
	if err := fs.Parse(args); err != nil {
		return exitCode(err)
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(*addr + *path)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd health: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "notifyd health: %s answered %s\n", *path, resp.Status)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}
