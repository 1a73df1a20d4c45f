package shard_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// specWriter extracts the Python writer from docs/shard-format.md's
// appendix, so that the code a reader of the spec copies is the code tested.
func specWriter(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "shard-format.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, appendix, ok := strings.Cut(string(doc), "## Appendix: a Python writer")
	if !ok {
		t.Fatal("docs/shard-format.md has no Python writer appendix")
	}
	_, code, ok := strings.Cut(appendix, "```python\n")
	if !ok {
		t.Fatal("the appendix has no python code block")
	}
	code, _, ok = strings.Cut(code, "\n```")
	if !ok {
		t.Fatal("the appendix's python code block is not closed")
	}
	path := filepath.Join(t.TempDir(), "writer.py")
	if err := os.WriteFile(path, []byte(code+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSpecPythonWriter proves the spec rather than trusting it: the
// appendix's Python writer, run on JSON Lines input, must give a file that
// the Go reader opens, fully verifies and reads exactly as it reads the file
// `notifyd shard build` (the Go writer) makes from the same input.
func TestSpecPythonWriter(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not on PATH")
	}
	writer := specWriter(t)
	generated := func() string {
		g := shardgen.New(3)
		var p shard.Profile
		var b []byte
		for i := range uint64(1500) {
			g.Profile(i, &p)
			b = append(shard.AppendJSON(b, &p), '\n')
		}
		path := filepath.Join(t.TempDir(), "generated.jsonl")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tests := []struct {
		name      string
		input     func() string
		blockRows int
		ring      *shard.RingInfo
	}{
		{"testdata profiles, 16-row blocks", func() string { return filepath.Join("..", "..", "testdata", "profiles.jsonl") }, 16, nil},
		{"generated profiles, 256-row blocks", generated, 256, nil},
		{"generated profiles, shard 1 of 3, 64-row blocks", generated, 64, &shard.RingInfo{Version: 5, Shard: 1, Shards: 3, Scheme: shard.RingJump}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			input := tc.input()
			pyPath := filepath.Join(t.TempDir(), "py.shard")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			args := []string{writer, input, pyPath, fmt.Sprint(tc.blockRows)}
			if tc.ring != nil {
				args = append(args, fmt.Sprint(tc.ring.Shard), fmt.Sprint(tc.ring.Shards), fmt.Sprint(tc.ring.Version))
			}
			out, err := exec.CommandContext(ctx, python, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("python writer: %v\n%s", err, out)
			}
			py := openVerified(t, pyPath)
			goShard := openVerified(t, buildFromJSONL(t, input, tc.blockRows, tc.ring))
			if py.Ring() != goShard.Ring() {
				t.Fatalf("python shard is %v, Go shard %v", py.Ring(), goShard.Ring())
			}
			if tc.ring != nil && py.Ring() != *tc.ring {
				t.Fatalf("python shard is %v, want %v", py.Ring(), *tc.ring)
			}
			if py.Rows() != goShard.Rows() || py.BlockRows() != uint64(tc.blockRows) || py.Rows() == 0 {
				t.Fatalf("python shard: %d rows in blocks of %d; Go shard: %d rows", py.Rows(), py.BlockRows(), goShard.Rows())
			}
			var want, got shard.Profile
			for i := range uint32(py.Rows()) {
				rw, err := goShard.Row(i)
				if err != nil {
					t.Fatal(err)
				}
				rg, err := py.Row(i)
				if err != nil {
					t.Fatal(err)
				}
				rw.Profile(&want)
				rg.Profile(&got)
				if rw.Key() != rg.Key() || !sameProfile(&want, &got) {
					t.Fatalf("row %d differs:\n go     %+v\n python %+v", i, want, got)
				}
			}
			if a, b := segmentMembers(t, goShard), segmentMembers(t, py); !reflect.DeepEqual(a, b) {
				t.Fatalf("segments differ:\n go     %v\n python %v", a, b)
			}
		})
	}
}

func openVerified(t *testing.T, path string) *shard.Reader {
	t.Helper()
	r, err := shard.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Release() })
	if rep := r.Verify(context.Background()); !rep.OK() {
		t.Fatalf("%s does not verify: %v", path, rep.Problems)
	}
	return r
}

func buildFromJSONL(t *testing.T, input string, blockRows int, ring *shard.RingInfo) string {
	t.Helper()
	b, err := os.ReadFile(input)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "go.shard")
	w, err := shard.NewWriter(path, shard.WriterOptions{BlockRows: blockRows, Ring: ring})
	if err != nil {
		t.Fatal(err)
	}
	add := func(_ int, p *shard.Profile) error {
		if ring != nil && !ring.Owns(shard.Key(p.ID)) {
			return nil
		}
		return w.Add(p)
	}
	if err := shard.ReadProfiles(bytes.NewReader(b), shard.FormatJSONL, add); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return path
}

// sameProfile compares two rows read back; attribute ids (and so their
// order) depend on the order a writer met the names, so attributes compare
// as sets.
func sameProfile(a, b *shard.Profile) bool {
	attrs := func(p *shard.Profile) map[string]shard.Value {
		m := map[string]shard.Value{}
		for _, at := range p.Attributes {
			m[at.Name] = at.Value
		}
		return m
	}
	return a.ID == b.ID && a.Email == b.Email && a.Phone == b.Phone && a.Locale == b.Locale &&
		a.TimeZone == b.TimeZone && a.Consent == b.Consent && slices.Equal(a.APNs, b.APNs) &&
		slices.Equal(a.FCM, b.FCM) && slices.Equal(a.WebPush, b.WebPush) && maps.Equal(attrs(a), attrs(b))
}

func segmentMembers(t *testing.T, r *shard.Reader) map[string][]uint32 {
	t.Helper()
	out := map[string][]uint32{}
	buf := make([]uint32, 256)
	for _, s := range r.Segments() {
		seg, err := r.Segment(s.Name)
		if err != nil {
			t.Fatal(err)
		}
		for it := seg.Iter(); ; {
			n := it.Next(buf)
			if n == 0 {
				break
			}
			out[s.Name] = append(out[s.Name], buf[:n]...)
		}
	}
	return out
}
