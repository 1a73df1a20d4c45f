package shard_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// seedShard is the valid shard of FuzzOpen's seed corpus: the first 30
// generated profiles (every field kind, push addresses, all attribute types)
// that shard 1 of a 3-shard ring (version 4) owns, in blocks of 8 rows,
// generation 9. A ring of more than one shard leads the fuzzer into the
// per-block ownership check too.
func seedShard(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seed.shard")
	ring := shard.RingInfo{Version: 4, Shard: 1, Shards: 3, Scheme: shard.RingJump}
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: 9, BlockRows: 8, Ring: &ring})
	if err != nil {
		t.Fatal(err)
	}
	g := shardgen.New(9)
	var p shard.Profile
	for i := uint64(0); w.Rows() < 30; i++ {
		g.Profile(i, &p)
		if !ring.Owns(shard.Key(p.ID)) {
			continue
		}
		if err := w.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFuzzSeedsAreCurrent keeps FuzzOpen's seed corpus in the current format
// version: seeds of an older version stop at the version check and no
// longer lead the fuzzer into the sections. Regenerate them with
// NOTIFYD_UPDATE_FUZZ_SEEDS=1 go test -run TestFuzzSeedsAreCurrent ./store/shard/
func TestFuzzSeedsAreCurrent(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	if os.Getenv("NOTIFYD_UPDATE_FUZZ_SEEDS") != "" {
		good := seedShard(t)
		table := 64 + 48*int(binary.LittleEndian.Uint32(good[36:]))
		seeds := map[string][]byte{
			"seed-valid":       good,
			"seed-header-only": good[:64],
			"seed-no-sections": good[:table],
			"seed-truncated":   good[:len(good)/2],
			"seed-v2":          shard.DowngradeToV2(good),
		}
		for name, b := range seeds {
			corpus := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, name), []byte(corpus), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name    string
		wantErr bool
	}{
		{"seed-valid", false},
		{"seed-header-only", true},
		{"seed-no-sections", true},
		{"seed-truncated", true},
		{"seed-v2", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			var lit string
			if _, err := fmt.Sscanf(string(raw), "go test fuzz v1\n[]byte(%q)", &lit); err != nil {
				t.Fatalf("parse corpus file: %v", err)
			}
			b := []byte(lit)
			if v := binary.LittleEndian.Uint32(b[8:]); len(b) < 12 || v != shard.FormatVersion && !(tc.name == "seed-v2" && v == 2) {
				t.Fatalf("seed is not format version %d: regenerate the seeds (see the test's comment)", shard.FormatVersion)
			}
			path := filepath.Join(t.TempDir(), "seed.shard")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := shard.Open(path)
			if tc.wantErr {
				if err == nil {
					r.Release()
					t.Fatal("a damaged seed opened")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Release()
			if rep := r.Verify(context.Background()); !rep.OK() || r.Rows() != 30 {
				t.Fatalf("valid seed: %d rows, problems %v", r.Rows(), rep.Problems)
			}
			want := shard.RingInfo{Version: 4, Shard: 1, Shards: 3, Scheme: shard.RingJump}
			if tc.name == "seed-v2" {
				want = shard.RingInfo{Shards: 1, Scheme: shard.RingJump}
			}
			if r.Ring() != want {
				t.Fatalf("ring %v, want %v", r.Ring(), want)
			}
		})
	}
}
