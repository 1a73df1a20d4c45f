package shard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"
)

func TestWarm(t *testing.T) {
	const n = 200 // 16-row blocks: 13 of keys, rows and push each
	clean := smallShard(t, n)
	tests := []struct {
		name    string
		damage  func(b []byte)
		ctx     func() context.Context
		wantBad int
		wantErr error
		// lookups of every id afterwards
		wantFailed, wantFound int
	}{
		{name: "every block verified", wantFound: n},
		{name: "a corrupt rows block is counted and contained", damage: func(b []byte) {
			e := sectionOf(t, b, kindRows)
			d := b[e.offset+e.aux:]
			b[e.offset+binary.LittleEndian.Uint64(d)+100] ^= 1
		}, wantBad: 1, wantFailed: 16, wantFound: n - 16},
		{name: "a cancelled warm-up stops at once", ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, wantErr: context.Canceled, wantFound: n},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), clean...)
			if tc.damage != nil {
				tc.damage(b)
			}
			r, err := Open(writeTemp(t, b))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Release()
			cold := r.ColdBlocks()
			if cold < 39 {
				t.Fatalf("%d cold blocks after Open, want at least 39: verification is no longer lazy?", cold)
			}
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			rep, err := r.Warm(ctx)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Warm error %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				if rep.Blocks != 1 || r.ColdBlocks() < cold-3 {
					t.Fatalf("a stopped warm-up visited %d blocks (%d cold left of %d)", rep.Blocks, r.ColdBlocks(), cold)
				}
			} else {
				if rep.Bad != tc.wantBad {
					t.Fatalf("%d bad blocks, want %d", rep.Bad, tc.wantBad)
				}
				if left := r.ColdBlocks(); left != 0 {
					t.Fatalf("%d blocks still cold after Warm (%d visited)", left, rep.Blocks)
				}
			}
			failed, found := 0, 0
			for i := range n {
				row, ok, err := r.Find(fmt.Sprintf("u-%d", i))
				switch {
				case err != nil:
					failed++
				case ok && row.ID() == fmt.Sprintf("u-%d", i):
					found++
				}
			}
			if failed != tc.wantFailed || found != tc.wantFound {
				t.Fatalf("%d lookups failed and %d found, want %d and %d", failed, found, tc.wantFailed, tc.wantFound)
			}
		})
	}
}

// A file truncated under the reader: with a read lease the mapping was
// copied and warms whole; without one (a writer held the file open) the
// warm-up stops with ErrTruncated within 64 blocks.
func TestWarmOfATruncatedFile(t *testing.T) {
	for _, withLease := range []bool{true, false} {
		t.Run(fmt.Sprintf("lease=%v", withLease), func(t *testing.T) {
			b := smallShard(t, 2000)
			path := writeTemp(t, b)
			w, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if withLease {
				w.Close() // no writer: the reader gets its lease
			}
			r, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Release()
			if r.Leased() != withLease {
				t.Skipf("lease %v, want %v: this file system decides otherwise", r.Leased(), withLease)
			}
			if err := os.Truncate(path, int64(len(b)/2)); err != nil {
				t.Fatal(err)
			}
			rep, err := r.Warm(context.Background())
			if withLease {
				if err != nil || rep.Bad != 0 || r.ColdBlocks() != 0 {
					t.Fatalf("leased mapping: Warm = %+v, %v with %d blocks cold; want every block verified", rep, err, r.ColdBlocks())
				}
				return
			}
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("Warm of a truncated file: %v, want ErrTruncated", err)
			}
			if rep.Blocks > 64 {
				t.Fatalf("went on for %d blocks after the truncation", rep.Blocks)
			}
		})
	}
}
