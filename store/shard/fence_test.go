package shard_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/store/shard"
)

// bigShard publishes n rows: far more pages than the few bytes a truncation leaves.
func bigShard(t *testing.T, path string, n int) {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("user-%06d", i)
	}
	publish(t, path, 1, ids...)
}

// TestTruncatedUnderLeasedMapping truncates the published file, and then
// copies garbage over it, while a running campaign holds the generation: the
// lease turns the mapping into a private copy first, so every row still
// reads as published (the email string taken before the truncation too) and
// the refresher reports the damaged publication instead of the process
// dying of SIGBUS.
func TestTruncatedUnderLeasedMapping(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(path string) error
	}{
		{"truncate", func(path string) error { return os.Truncate(path, 100) }},
		{"cp over it", func(path string) error { return os.WriteFile(path, []byte("not a shard"), 0o644) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pub.shard")
			const n = 20000
			bigShard(t, path, n)
			logger, logs := channelstest.NewLogger()
			s, err := shard.OpenStore(path, shard.WithLogger(logger))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			r, err := s.Acquire()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Release()
			row, _ := r.Lookup("user-000000")
			email := row.Email()

			if err := tc.damage(path); err != nil {
				t.Fatal(err)
			}

			for i := range n {
				id := fmt.Sprintf("user-%06d", i)
				row, ok, err := r.Find(id)
				if err != nil || !ok || row.Email() != id+"@example.com" {
					t.Fatalf("row %s after the file changed: ok=%v err=%v", id, ok, err)
				}
			}
			if email != "user-000000@example.com" {
				t.Fatalf("email taken before the truncation reads %q", email)
			}
			if err := r.Check(); err != nil {
				t.Fatalf("Check of the private copy: %v", err)
			}
			if _, err := s.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "refresh shard") {
				t.Fatalf("Refresh after the damage: %v, want the damaged publication reported", err)
			}
			r2, err := s.Acquire()
			if err != nil {
				t.Fatalf("Acquire keeps the intact copy in service: %v", err)
			}
			r2.Release()
			if strings.Contains(logs.String(), "no read lease") {
				t.Fatalf("warned about a lease it holds: %s", logs.String())
			}
		})
	}
}

// TestTruncatedWithoutLease is the fallback when no lease can be taken (here
// because the file is open for writing, as a store that does not own the
// daemon's uid also defeats it): the truncation is found at the first read of
// a block past the new end, or by Check, and reported as ErrTruncated; the
// generation is refused and nothing faults afterwards.
func TestTruncatedWithoutLease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pub.shard")
	const n = 20000
	bigShard(t, path, n)
	w, err := os.OpenFile(path, os.O_RDWR, 0) // no read lease while a writer holds the file
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	logger, logs := channelstest.NewLogger()
	s, err := shard.OpenStore(path, shard.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()

	if err := w.Truncate(100); err != nil { // ftruncate on an open descriptor
		t.Fatal(err)
	}
	// The first read past the end faults inside block verification.
	_, _, err = r.Find("user-019999")
	if !errors.Is(err, shard.ErrTruncated) {
		t.Fatalf("read after the truncation: %v, want ErrTruncated", err)
	}
	// Every later read is an error for its rows, never a fault.
	for i := 0; i < n; i += 97 {
		if _, _, err := r.Find(fmt.Sprintf("user-%06d", i)); err == nil {
			t.Fatalf("row %d reads without error from a truncated file", i)
		}
	}
	if err := r.Check(); !errors.Is(err, shard.ErrTruncated) {
		t.Fatalf("Check: %v, want ErrTruncated", err)
	}
	if _, err := s.Acquire(); !errors.Is(err, shard.ErrTruncated) || !strings.Contains(err.Error(), "publish by rename") {
		t.Fatalf("Acquire of the truncated generation: %v, want ErrTruncated", err)
	}
	s.Refresh(context.Background())
	if !strings.Contains(logs.String(), "no read lease") {
		t.Fatalf("OpenStore did not warn that it holds no lease: %s", logs.String())
	}
	if !strings.Contains(logs.String(), "truncated") {
		t.Fatalf("refresher did not log the truncation: %s", logs.String())
	}
}
