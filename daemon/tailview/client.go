package tailview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/notifyd/notifyd/daemon"
)

// Backoff defaults: the daemon's retry hint (2s) is the floor once known.
const (
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
)

// Client follows a daemon's GET /v1/events.
type Client struct {
	// Base is the admin API's base URL, e.g. http://127.0.0.1:8080.
	Base string
	// Token is the bearer token (never printed).
	Token string
	// HTTP must not have a Timeout: the stream is endless (default: a client without one).
	HTTP *http.Client
	// MinBackoff and MaxBackoff bound the reconnection delay, doubled per
	// failed attempt and reset by a received snapshot.
	MinBackoff, MaxBackoff time.Duration
	// Wait waits d or until ctx ends (tests inject one that does not sleep).
	Wait func(ctx context.Context, d time.Duration) error
}

// Follow streams snapshots to onSnapshot until ctx ends, reconnecting with
// backoff; onStatus hears about each disconnection ("" once connected
// again). It returns ctx's error, onSnapshot's error, or a permanent
// failure (a refused token, an unknown campaign).
func (c *Client) Follow(ctx context.Context, campaign string, onSnapshot func(*daemon.Snapshot) error, onStatus func(string)) error {
	minB, maxB := c.MinBackoff, c.MaxBackoff
	if minB <= 0 {
		minB = DefaultMinBackoff
	}
	if maxB < minB {
		maxB = max(DefaultMaxBackoff, minB)
	}
	wait := c.Wait
	if wait == nil {
		wait = sleepCtx
	}
	backoff := minB
	for {
		got, hint, err := c.stream(ctx, campaign, onSnapshot, onStatus)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			return perm.err
		}
		if got {
			backoff = minB
		}
		backoff = max(backoff, hint)
		msg := "stream ended"
		if err != nil {
			msg = err.Error()
		}
		onStatus(fmt.Sprintf("disconnected (%s): reconnecting in %v", msg, backoff.Round(time.Millisecond)))
		if err := wait(ctx, backoff); err != nil {
			return err
		}
		backoff = min(backoff*2, maxB)
	}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

// stream runs one connection. got reports whether a snapshot arrived; hint
// is the server's retry hint.
func (c *Client) stream(ctx context.Context, campaign string, onSnapshot func(*daemon.Snapshot) error, onStatus func(string)) (got bool, hint time.Duration, err error) {
	u := strings.TrimRight(c.Base, "/") + "/v1/events"
	if campaign != "" {
		u += "?campaign=" + url.QueryEscape(campaign)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, 0, &permanentError{fmt.Errorf("build request: %w", err)}
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, 0, fmt.Errorf("connect: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		// Retrying will not help; say where the token comes from, never what it is.
		return false, 0, &permanentError{errors.New("open event stream: the admin API refused the token (401): set NOTIFYD_ADMIN_TOKEN or --token-file")}
	case resp.StatusCode == http.StatusNotFound:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return false, 0, &permanentError{fmt.Errorf("open event stream: 404: %s", strings.TrimSpace(string(body)))}
	case resp.StatusCode != http.StatusOK:
		return false, 0, fmt.Errorf("open event stream: %s", resp.Status)
	}
	connected := false
	err = ReadEvents(resp.Body, func(ev Event) error {
		if ev.Retry > 0 {
			hint = time.Duration(ev.Retry) * time.Millisecond
		}
		if ev.Type != daemon.EventSnapshot {
			return nil
		}
		var s daemon.Snapshot
		if err := json.Unmarshal([]byte(ev.Data), &s); err != nil {
			return fmt.Errorf("decode snapshot %s: %w", ev.ID, err)
		}
		if !connected {
			connected = true
			onStatus("")
		}
		got = true
		if err := onSnapshot(&s); err != nil {
			return &permanentError{err}
		}
		return nil
	})
	return got, hint, err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
