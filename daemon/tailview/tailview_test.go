package tailview

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/notifyd/notifyd/daemon"
)

func TestReadEvents(t *testing.T) {
	tests := []struct {
		name, in string
		want     []Event
	}{
		{"snapshot", "id: 1\nevent: snapshot\ndata: {}\n\n", []Event{{Type: "snapshot", ID: "1", Data: "{}"}}},
		{"CRLF and CR line ends", "event: a\r\ndata: x\r\n\r\nevent: b\rdata: y\r\r", []Event{{Type: "a", Data: "x"}, {Type: "b", Data: "y"}}},
		{"multi-line data joined", "data: a\ndata: b\ndata\n\n", []Event{{Type: "message", Data: "a\nb\n"}}},
		{"comments and unknown fields ignored", ": heartbeat\n\nfoo: bar\ndata:x\n\n", []Event{{Type: "message", Data: "x"}}},
		{"retry hint alone is dispatched", "retry: 2000\n\n", []Event{{Type: "message", Retry: 2000}}},
		{"bad retry ignored", "retry: soon\ndata: x\n\n", []Event{{Type: "message", Data: "x"}}},
		{"last id persists", "id: 7\ndata: a\n\ndata: b\n\n", []Event{{Type: "message", ID: "7", Data: "a"}, {Type: "message", ID: "7", Data: "b"}}},
		{"an unterminated event is not dispatched", "data: a\n\ndata: partial", []Event{{Type: "message", Data: "a"}}},
		{"empty stream", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []Event
			if err := ReadEvents(strings.NewReader(tc.in), func(e Event) error { got = append(got, e); return nil }); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	t.Run("callback error stops the stream", func(t *testing.T) {
		stop := errors.New("stop")
		n := 0
		err := ReadEvents(strings.NewReader("data: a\n\ndata: b\n\n"), func(Event) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Fatalf("err %v after %d events", err, n)
		}
	})
	t.Run("an endless line is an error, not a memory blow-up", func(t *testing.T) {
		r := strings.NewReader("data: " + strings.Repeat("x", MaxLineBytes+1))
		if err := ReadEvents(r, func(Event) error { return nil }); err == nil || !strings.Contains(err.Error(), "line over") {
			t.Fatalf("err %v", err)
		}
	})
}

func FuzzReadEvents(f *testing.F) {
	for _, s := range []string{"id: 1\nevent: snapshot\ndata: {}\n\n", "retry: 5\r\r", ":\n\ndata\n", "data: a\rdata: b\r\n\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		_ = ReadEvents(strings.NewReader(in), func(e Event) error {
			if e.Type == "" {
				t.Fatal("dispatched an event without a type")
			}
			if strings.ContainsAny(e.Type+e.ID, "\r\n") {
				t.Fatalf("a line end leaked into a field: %+v", e)
			}
			return nil
		})
	})
}

// recorded reads the snapshots of the recorded stream (see
// daemon.TestLiveViewEndToEnd for how it was recorded).
func recorded(t testing.TB) []*daemon.Snapshot {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "events.sse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []*daemon.Snapshot
	err = ReadEvents(f, func(ev Event) error {
		if ev.Type != daemon.EventSnapshot {
			return nil
		}
		var s daemon.Snapshot
		if err := json.Unmarshal([]byte(ev.Data), &s); err != nil {
			return err
		}
		out = append(out, &s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 3 {
		t.Fatalf("the recording holds %d snapshots", len(out))
	}
	return out
}

// golden compares got with testdata/name; NOTIFYD_UPDATE_GOLDEN=1 rewrites it.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv("NOTIFYD_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs (NOTIFYD_UPDATE_GOLDEN=1 rewrites it)\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

func TestRenderRecordedStream(t *testing.T) {
	snaps := recorded(t)
	t.Run("plain: one line per snapshot", func(t *testing.T) {
		var out bytes.Buffer
		v := NewView(&out, false, nil)
		for _, s := range snaps {
			if err := v.Snapshot(s); err != nil {
				t.Fatal(err)
			}
		}
		v.Status("disconnected (stream ended): reconnecting in 2s")
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		if lines := strings.Count(out.String(), "\n"); lines != len(snaps)+1 {
			t.Fatalf("%d lines for %d snapshots and one status", lines, len(snaps))
		}
		if strings.Contains(out.String(), "\x1b") {
			t.Fatal("escape sequences in plain output")
		}
		golden(t, "plain.golden", out.Bytes())
	})
	t.Run("terminal: redrawn in place", func(t *testing.T) {
		var out bytes.Buffer
		v := NewView(&out, true, func() int { return 100 })
		for i, s := range snaps {
			if i == 1 {
				v.Status("disconnected (connect: connection refused): reconnecting in 2s")
				v.Status("")
			}
			if err := v.Snapshot(s); err != nil {
				t.Fatal(err)
			}
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		got := out.String()
		if !strings.HasPrefix(got, enterScreen) || strings.Count(got, enterScreen) != 1 {
			t.Fatal("the alternate screen is not entered exactly once")
		}
		if !strings.Contains(got, leaveScreen+Line(snaps[len(snaps)-1])+"\n") {
			t.Fatal("closing does not restore the screen and leave the last line")
		}
		golden(t, "terminal.golden", out.Bytes())
	})
	t.Run("screen lines fit the width", func(t *testing.T) {
		for _, width := range []int{40, 80, 100} {
			for _, l := range Screen(snaps[len(snaps)-1], width, "a long status message that goes on and on and on and on") {
				if n := utf8.RuneCountInString(l); n > width {
					t.Fatalf("width %d: line of %d cells: %q", width, n, l)
				}
			}
		}
	})
	t.Run("completed campaign shows a full bar and its reasons", func(t *testing.T) {
		screen := strings.Join(Screen(snaps[len(snaps)-1], 0, ""), "\n")
		for _, want := range []string{"black-friday", "completed", "100.0%", "provider_rejected", "no_consent", "webhook failed: rejected"} {
			if !strings.Contains(screen, want) {
				t.Fatalf("screen lacks %q:\n%s", want, screen)
			}
		}
	})
}

func TestCount(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{{0, "0"}, {999, "999"}, {1000, "1,000"}, {1234567, "1,234,567"}, {-1234, "-1,234"}}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := count(tc.n); got != tc.want {
				t.Fatalf("got %q", got)
			}
		})
	}
}

// fixtureFrames returns the recorded stream's events, split per event.
func fixtureFrames(t *testing.T) (retry string, frames []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "events.sse"))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitAfter(string(b), "\n\n")
	for _, p := range parts {
		switch {
		case strings.HasPrefix(p, "retry:"):
			retry = p
		case strings.TrimSpace(p) != "":
			frames = append(frames, p)
		}
	}
	return retry, frames
}

func TestClientReconnects(t *testing.T) {
	_, frames := fixtureFrames(t)
	var mu sync.Mutex
	conns := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer sekrit-token" || r.URL.Path != "/v1/events" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		conns++
		n := conns
		mu.Unlock()
		switch n {
		case 1: // a daemon that goes away after two frames
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "retry: 50\n\n"+frames[0]+frames[1])
		case 2: // restarting
			http.Error(w, "starting", http.StatusServiceUnavailable)
		default:
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, frames[2])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var waits []time.Duration
	var statuses []string
	var seqs []uint64
	c := &Client{Base: srv.URL + "/", Token: "sekrit-token", MinBackoff: 10 * time.Millisecond, MaxBackoff: time.Second,
		Wait: func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return ctx.Err() }}
	err := c.Follow(ctx, "", func(s *daemon.Snapshot) error {
		seqs = append(seqs, s.Seq)
		if len(seqs) == 3 {
			cancel()
		}
		return nil
	}, func(s string) { statuses = append(statuses, s) })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow returned %v", err)
	}
	tests := []struct {
		name      string
		got, want string
	}{
		{"every snapshot once, in order", fmt.Sprint(seqs), "[1 2 3]"},
		{"backoff: the retry hint, then doubled", fmt.Sprint(waits), "[50ms 100ms]"},
		{"connections", fmt.Sprint(conns), "3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %s, want %s", tc.got, tc.want)
			}
		})
	}
	t.Run("statuses", func(t *testing.T) {
		joined := strings.Join(statuses, "|")
		if !strings.Contains(joined, "stream ended") || !strings.Contains(joined, "503") || !strings.HasSuffix(joined, "|") {
			t.Fatalf("statuses %q", statuses)
		}
	})
}

func TestClientPermanentFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer right" {
			http.Error(w, `{"error":{"message":"missing or wrong bearer token"}}`, http.StatusUnauthorized)
			return
		}
		http.Error(w, `{"error":{"field":"campaign","message":"campaign not found"}}`, http.StatusNotFound)
	}))
	defer srv.Close()
	tests := []struct {
		name, token, campaign, want string
	}{
		{"refused token", "wrong-secret-value", "", "refused the token"},
		{"unknown campaign", "right", "nope", "campaign not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{Base: srv.URL, Token: tc.token, Wait: func(context.Context, time.Duration) error {
				t.Fatal("a permanent failure was retried")
				return nil
			}}
			err := c.Follow(context.Background(), tc.campaign, func(*daemon.Snapshot) error { return nil }, func(string) {})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), tc.token) {
				t.Fatal("the error carries the token")
			}
		})
	}
}

func BenchmarkScreen(b *testing.B) {
	s := recorded(b)[2]
	b.ReportAllocs()
	for range b.N {
		_ = WriteScreen(io.Discard, Screen(s, 120, ""))
	}
}

// A narrow terminal drops whole columns: a number cut to fit reads as
// another number ("1,234,5…"), so no number may end in "…".
func TestScreenDropsColumnsNotDigits(t *testing.T) {
	snaps := recorded(t)
	last := snaps[len(snaps)-1]
	for _, width := range []int{40, 60, 80, 100, 120} {
		t.Run(fmt.Sprint(width), func(t *testing.T) {
			lines := Screen(last, width, "")
			for _, l := range lines {
				if n := utf8.RuneCountInString(l); n > width {
					t.Fatalf("line of %d cells: %q", n, l)
				}
				r := []rune(l)
				for i := 1; i < len(r); i++ {
					if r[i] == '…' && (r[i-1] >= '0' && r[i-1] <= '9' || r[i-1] == ',' || r[i-1] == '.') {
						t.Fatalf("a number was cut: %q", l)
					}
				}
			}
			if width < 80 {
				return
			}
			screen := strings.Join(lines, "\n")
			for _, want := range []string{"MSG/S", "SENT", "FAILED", "P99 ms", "DONE", "100.0%", "447.9", "416", "provider_rejected 32"} {
				if !strings.Contains(screen, want) {
					t.Errorf("80+ columns must keep %q:\n%s", want, screen)
				}
			}
		})
	}
}

func TestWatchKeys(t *testing.T) {
	tests := []struct {
		name, in string
		quits    bool
	}{
		{"q after other keys", "x 1q", true},
		{"capital Q", "Q", true},
		{"Ctrl-C in raw mode", "\x03", true},
		{"Esc", "\x1b", true},
		{"input ends without a quit key", "abc", false},
		{"nothing", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			got := WatchKeys(strings.NewReader(tc.in), func() { calls++ })
			if got != tc.quits || calls != map[bool]int{true: 1, false: 0}[tc.quits] {
				t.Fatalf("WatchKeys = %v with %d quit calls, want %v", got, calls, tc.quits)
			}
		})
	}
}
