package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// runCampaign is the admin API client: notifyd campaign create|get|list|pause|resume|cancel.
func runCampaign(args []string, stdout, stderr io.Writer) int {
	usage := func() {
		fmt.Fprintln(stderr, `usage: notifyd campaign <create|get|list|pause|resume|cancel|retry-failed> [flags] [ID]
  create -f FILE     create a campaign from a JSON file ("-" for stdin); idempotent on its id
  get ID             show a campaign's status and counts
  list [--after ID] [--limit N]
  pause|resume|cancel|retry-failed ID
flags (every subcommand):
  --addr URL         admin API (default $NOTIFYD_ADDR or http://127.0.0.1:8080)
  --token-file PATH  bearer token file (default: $NOTIFYD_ADMIN_TOKEN)`)
	}
	if len(args) == 0 {
		usage()
		return 2
	}
	verb := args[0]
	fs := flag.NewFlagSet("campaign "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", envOr("NOTIFYD_ADDR", "http://127.0.0.1:8080"), "admin API base URL")
	tokenFile := fs.String("token-file", "", "file holding the bearer token")
	file := fs.String("f", "", "campaign JSON file (create)")
	after := fs.String("after", "", "list campaigns after this id")
	limit := fs.Int("limit", 100, "list at most this many")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	token := os.Getenv("NOTIFYD_ADMIN_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "notifyd campaign: read token file: %v\n", err)
			return 1
		}
		token = strings.TrimSpace(string(b))
	}
	c := &apiClient{base: strings.TrimRight(*addr, "/"), token: token, http: &http.Client{Timeout: 30 * time.Second}}
	id := fs.Arg(0)
	needID := func() bool {
		if id == "" {
			fmt.Fprintf(stderr, "notifyd campaign %s: missing campaign ID\n", verb)
			return false
		}
		return true
	}
	ctx := context.Background()
	var (
		out []byte
		err error
	)
	switch verb {
	case "create":
		var body []byte
		switch *file {
		case "":
			fmt.Fprintln(stderr, "notifyd campaign create: -f FILE is required")
			return 2
		case "-":
			body, err = io.ReadAll(os.Stdin)
		default:
			body, err = os.ReadFile(*file)
		}
		if err != nil {
			fmt.Fprintf(stderr, "notifyd campaign create: read campaign: %v\n", err)
			return 1
		}
		out, err = c.do(ctx, http.MethodPost, "/v1/campaigns", body)
	case "get":
		if !needID() {
			return 2
		}
		out, err = c.do(ctx, http.MethodGet, "/v1/campaigns/"+url.PathEscape(id), nil)
	case "list":
		q := url.Values{"limit": {fmt.Sprint(*limit)}}
		if *after != "" {
			q.Set("after", *after)
		}
		out, err = c.do(ctx, http.MethodGet, "/v1/campaigns?"+q.Encode(), nil)
	case "pause", "resume", "cancel", "retry-failed":
		if !needID() {
			return 2
		}
		out, err = c.do(ctx, http.MethodPost, "/v1/campaigns/"+url.PathEscape(id)+"/"+verb, nil)
	default:
		usage()
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "notifyd campaign %s: %v\n", verb, err)
		return 1
	}
	_, _ = stdout.Write(out)
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

type apiClient struct {
	base, token string
	http        *http.Client
}

// do sends one request and returns the body of a 2xx answer; any other
// answer becomes an error carrying the API's JSON error.
func (c *apiClient) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("call admin API: %w", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read admin API answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, errors.New(resp.Status + ": " + strings.TrimSpace(string(out)))
	}
	return out, nil
}
