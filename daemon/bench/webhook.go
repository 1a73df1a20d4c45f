package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchHookBody is the reference's request body: the size of what the
// campaign's template renders (a user id and a tier).
const benchHookBody = `{"user":"u-00000000000012345","tier":"gold","campaign":"autumn"}`

// Webhook runs `notifyd bench webhook`: the daemon as `notifyd serve` wires
// it (YAML config with defaults, in-memory state, the real webhook sender)
// sends a campaign over a generated shard to a net/http receiver in another
// process that answers 200, and in the same run, interleaved, the reference
// sends as many requests of the same size to the same receiver: h2load
// (--h1, HTTP/1.1 keep-alive, as notifyd uses against a plain-HTTP
// receiver) when installed, else a built-in raw net/http client loop.
func Webhook(ctx context.Context, opts ProviderOptions) (*ProviderResult, error) {
	opts.defaults(50_000, 64)
	res := &ProviderResult{Channel: "webhook", MessageBytes: len(benchHookBody)}
	if opts.Sink != "auto" && opts.Sink != "go" {
		return nil, fmt.Errorf("unknown sink %q: webhooks use the Go receiver (auto or go)", opts.Sink)
	}
	sink, err := startGoSink(opts.SinkCommand, "http")
	if err != nil {
		return nil, err
	}
	defer sink.close()
	res.Sink = sink.what + " answering 200"
	url := "http://" + sink.addr + "/in"

	var ref referenceFunc
	h2load, have := lookTool("h2load")
	switch {
	case opts.Reference == "builtin" || opts.Reference == "auto" && !have:
		if opts.Reference == "auto" {
			res.Note = "h2load not found (Debian: apt-get install nghttp2-client): the reference is notifyd's built-in raw net/http client"
			fmt.Fprintln(opts.Out, res.Note)
		}
		res.Reference = fmt.Sprintf("built-in raw net/http client: %d goroutines, keep-alive, one pre-built %d-byte body", opts.Concurrency, len(benchHookBody))
		ref = func(ctx context.Context, n int64) (time.Duration, time.Duration, error) {
			return rawHTTP(ctx, url, opts.Concurrency, n)
		}
	case opts.Reference == "tool" || opts.Reference == "auto":
		if !have {
			return nil, errors.New("h2load not found: apt-get install nghttp2-client (Debian), or --reference builtin")
		}
		dir, err := os.MkdirTemp("", "notifyd-bench-webhook")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		bodyFile := filepath.Join(dir, "body.json")
		if err := os.WriteFile(bodyFile, []byte(benchHookBody), 0o600); err != nil {
			return nil, err
		}
		args := func(n int64) []string {
			return []string{"--h1", "-c", strconv.Itoa(opts.Concurrency), "-n", strconv.FormatInt(n, 10), "-d", bodyFile,
				"-H", "Content-Type: application/json", url}
		}
		res.Reference = strings.Replace(h2load+" "+strings.Join(args(0), " "), " -n 0 ", " -n <messages> ", 1)
		ref = func(ctx context.Context, n int64) (time.Duration, time.Duration, error) {
			wall, cpu, out, err := runTool(ctx, h2load, args(n)...)
			if err != nil {
				return 0, 0, err
			}
			if ok, err := h2loadSucceeded(out, n); !ok {
				return 0, 0, err
			}
			return wall, cpu, nil
		}
	default:
		return nil, fmt.Errorf("unknown reference %q: want auto, tool or builtin", opts.Reference)
	}

	path, err := cachedShard(opts.CacheDir, opts.Members, opts.Out)
	if err != nil {
		return nil, err
	}
	// The default config but for the receiver's address, which is loopback
	// and so must be allowed explicitly.
	chYAML := "  webhook:\n    url: " + url + "\n    allow_networks: [127.0.0.0/8]\n"
	d, err := startDaemon(ctx, path, chYAML, opts.Log)
	if err != nil {
		return nil, err
	}
	defer d.stop()
	content := map[string]any{
		"url":  url,
		"body": map[string]any{"user": "{{ profile.id }}", "tier": "{{ profile.tier | default: 'none' }}", "campaign": "autumn"},
	}
	fmt.Fprintf(opts.Out, "sink: %s\nreference: %s\n", res.Sink, res.Reference)
	if err := runRounds(ctx, res, opts, d, content, ref, nil); err != nil {
		return nil, err
	}
	return res, nil
}

var h2loadRequests = regexp.MustCompile(`requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded`)

// h2loadSucceeded checks h2load's summary: it exits 0 even when requests fail.
func h2loadSucceeded(out []byte, n int64) (bool, error) {
	m := h2loadRequests.FindSubmatch(out)
	if m == nil {
		return false, fmt.Errorf("h2load: no summary in its output: %s", tail(string(out), 400))
	}
	if ok, _ := strconv.ParseInt(string(m[2]), 10, 64); ok != n {
		return false, fmt.Errorf("h2load: %s of %d requests succeeded: %s", m[2], n, tail(string(out), 400))
	}
	return true, nil
}

// rawHTTP is the built-in reference: conc goroutines POSTing one pre-built
// body over keep-alive connections with a plain net/http client.
func rawHTTP(ctx context.Context, url string, conc int, n int64) (time.Duration, time.Duration, error) {
	tr := &http.Transport{MaxIdleConns: conc, MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	body := []byte(benchHookBody)
	start, cpu0 := time.Now(), processCPU()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= n {
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				if err == nil {
					req.Header.Set("Content-Type", "application/json")
					var resp *http.Response
					if resp, err = client.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						_ = resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("raw client: status %d", resp.StatusCode)
						}
					}
				}
				if err != nil {
					mu.Lock()
					first = cmp(first, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), processCPU() - cpu0, first
}
