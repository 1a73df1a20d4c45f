package shard_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/store/shard"
)

func publish(t *testing.T, path string, gen uint64, ids ...string) {
	t.Helper()
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: gen})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		p := shard.Profile{ID: id, Email: id + "@example.com", Segments: []string{"all"}}
		if err := w.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestStoreGenerations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pub.shard")
	publish(t, path, 1, "a", "b")
	logger, logs := channelstest.NewLogger()
	s, err := shard.OpenStore(path, shard.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	pinned, err := s.Acquire() // a running campaign pins generation 1
	if err != nil {
		t.Fatal(err)
	}
	row, _ := pinned.Lookup("a")
	email := row.Email() // zero-copy into generation 1's mapping

	steps := []struct {
		name      string
		publish   func()
		swapped   bool
		wantGen   uint64
		wantError bool
	}{
		{"unchanged file", func() {}, false, 1, false},
		{"new generation", func() { publish(t, path, 2, "a", "b", "c") }, true, 2, false},
		{"corrupt publication keeps current", func() {
			tmp := path + ".bad"
			if err := os.WriteFile(tmp, []byte("NTFYSHRD garbage"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}, false, 2, true},
		{"recovery", func() { publish(t, path, 3, "z") }, true, 3, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.publish()
			swapped, err := s.Refresh(ctx)
			if (err != nil) != st.wantError || swapped != st.swapped {
				t.Fatalf("Refresh = %v, %v; want swapped=%v error=%v", swapped, err, st.swapped, st.wantError)
			}
			cur, err := s.Acquire()
			if err != nil {
				t.Fatal(err)
			}
			defer cur.Release()
			if cur.Generation() != st.wantGen {
				t.Fatalf("generation %d, want %d", cur.Generation(), st.wantGen)
			}
		})
	}
	// Generation 1 is still mapped for its campaign.
	if email != "a@example.com" || pinned.Generation() != 1 {
		t.Fatalf("pinned generation changed under the campaign: %q gen %d", email, pinned.Generation())
	}
	if err := pinned.Release(); err != nil {
		t.Fatalf("release of the last reference: %v", err)
	}
	if pinned.Acquire() {
		t.Fatal("Acquire after the last release succeeded")
	}
	if err := pinned.Release(); err == nil {
		t.Fatal("extra Release: no error")
	}
	if got := logs.String(); !contains(got, "shard generation swapped") {
		t.Fatalf("no swap logged: %s", got)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestStoreRunPolls(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pub.shard")
	publish(t, path, 1, "a")
	tick := make(chan time.Time)
	s, err := shard.OpenStore(path, shard.WithAfter(func(time.Duration) <-chan time.Time { return tick }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, time.Hour) }()

	publish(t, path, 2, "a", "b")
	tick <- time.Time{} // one poll
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := s.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		gen := r.Generation()
		r.Release()
		if gen == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("store did not pick up generation 2")
		}
		select {
		case tick <- time.Time{}:
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	s.Close()
	if _, err := s.Acquire(); err == nil {
		t.Fatal("Acquire after Close succeeded")
	}
}

// TestOpenRefusesNonRegularFiles is issue 12 item 6: a FIFO (or any file
// that is not a regular file) at the shard path is refused at once; opening
// it used to block forever, in Open and in the store's refresher.
func TestOpenRefusesNonRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.shard")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	tests := []struct {
		name string
		path string
	}{
		{name: "fifo", path: fifo},
		{name: "directory", path: dir},
		{name: "character device", path: "/dev/null"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				r, err := shard.Open(tc.path)
				if err == nil {
					r.Release()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "not a regular file") {
					t.Fatalf("Open(%s) = %v, want a refusal naming a non-regular file", tc.name, err)
				}
			case <-time.After(5 * time.Second):
				// Unblock the stuck open so the test binary can exit.
				if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
				t.Fatalf("Open(%s) blocked", tc.name)
			}
		})
	}
}

// TestRefreshSurvivesAFIFO: a FIFO published over the shard path must not
// wedge the refresher; the next valid generation is still picked up.
func TestRefreshSurvivesAFIFO(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.shard")
	publish(t, path, 1, "a")
	s, err := shard.OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if err := os.Rename(fifo, path); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := s.Refresh(context.Background()); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Refresh accepted a FIFO")
		}
	case <-time.After(5 * time.Second):
		if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		t.Fatal("Refresh blocked on a FIFO")
	}
	publish(t, path, 2, "a", "b")
	if swapped, err := s.Refresh(context.Background()); err != nil || !swapped {
		t.Fatalf("Refresh after a valid publication = %t, %v; want a swap", swapped, err)
	}
}

// TestStoreWarmUp: with WithWarmUp the generation found at open is verified
// in the background, and a new one before it is swapped in, so no lookup of
// the generation in service meets a cold block; without it verification
// stays lazy. Close during a warm-up ends it.
func TestStoreWarmUp(t *testing.T) {
	ctx := context.Background()
	for _, warm := range []bool{true, false} {
		t.Run(fmt.Sprintf("warm=%v", warm), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pub.shard")
			bigShard(t, path, 20000)
			logger, logs := channelstest.NewLogger()
			opts := []shard.StoreOption{shard.WithLogger(logger)}
			if warm {
				opts = append(opts, shard.WithWarmUp())
			}
			s, err := shard.OpenStore(path, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			rep, err := s.WaitWarm(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cold := func() int {
				r, err := s.Acquire()
				if err != nil {
					t.Fatal(err)
				}
				defer r.Release()
				return r.ColdBlocks()
			}
			if got := cold(); warm != (got == 0) || warm != (rep.Blocks > 0) || rep.Bad != 0 {
				t.Fatalf("after open: %d cold blocks, report %+v", got, rep)
			}
			if w, ok := s.Warmed(); ok != warm || w.Blocks != rep.Blocks {
				t.Fatalf("Warmed() = %+v, %v after open; want the open's report %+v", w, ok, rep)
			}
			publish(t, path, 2, "a", "b", "c")
			if swapped, err := s.Refresh(ctx); err != nil || !swapped {
				t.Fatalf("Refresh = %v, %v", swapped, err)
			}
			if got := cold(); warm != (got == 0) {
				t.Fatalf("generation 2 serves with %d cold blocks (warm-up %v)", got, warm)
			}
			if w, ok := s.Warmed(); ok != warm || warm && (w.Blocks == 0 || w.Blocks >= rep.Blocks) {
				t.Fatalf("Warmed() = %+v, %v after the swap; want generation 2's (3 rows, fewer blocks than %d)", w, ok, rep.Blocks)
			}
			if n := strings.Count(logs.String(), "shard generation warmed"); warm && n != 2 || !warm && n != 0 {
				t.Fatalf("%d warm-ups logged: %s", n, logs.String())
			}
		})
	}
	t.Run("close during the warm-up", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "pub.shard")
		bigShard(t, path, 200000)
		s, err := shard.OpenStore(path, shard.WithWarmUp())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := s.WaitWarm(wctx); err != nil {
			t.Fatalf("the warm-up did not end after Close: %v", err)
		}
	})
}
