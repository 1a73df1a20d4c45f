package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/store/shard"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

type inspectOut struct {
	Generation uint64 `json:"generation"`
	Ring       struct {
		Version uint64 `json:"version"`
		Shard   int    `json:"shard"`
		Shards  int    `json:"shards"`
		Scheme  string `json:"scheme"`
	} `json:"ring"`
	Rows     uint64            `json:"rows"`
	Segments map[string]uint64 `json:"segments"`
	OK       bool              `json:"ok"`
	Problems []string          `json:"problems"`
}

func inspectJSONOf(t *testing.T, path string) (int, inspectOut, string) {
	t.Helper()
	code, out, errOut := runCmd("shard", "inspect", path, "--json")
	var got inspectOut
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("inspect --json printed %q: %v", out, err)
	}
	return code, got, errOut
}

func TestShardBuildAndInspectSample(t *testing.T) {
	dir := t.TempDir()
	results := map[string]inspectOut{}
	for _, in := range []string{"profiles.jsonl", "profiles.csv"} {
		t.Run(in, func(t *testing.T) {
			out := filepath.Join(dir, in+".shard")
			code, stdout, stderr := runCmd("shard", "build", "--profiles", filepath.Join("..", "..", "testdata", in), "--out", out, "--generation", "42")
			if code != 0 || !strings.Contains(stdout, "200 rows") {
				t.Fatalf("build exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
			}
			code, got, stderr := inspectJSONOf(t, out)
			if code != 0 || !got.OK || got.Generation != 42 || got.Rows != 200 || got.Segments["all"] != 200 {
				t.Fatalf("inspect exit %d: %+v %s", code, got, stderr)
			}
			results[in] = got
			code, text, _ := runCmd("shard", "inspect", out, "--rows", "3")
			if code != 0 || !strings.Contains(text, "checksums") || !strings.Contains(text, "ok (") || strings.Count(text, "\nrow ") != 3 {
				t.Fatalf("inspect text exit %d: %s", code, text)
			}
		})
	}
	// The two bundled samples hold the same profiles.
	j, c := results["profiles.jsonl"], results["profiles.csv"]
	for name, n := range j.Segments {
		if c.Segments[name] != n {
			t.Errorf("segment %s: %d members from JSON Lines, %d from CSV", name, n, c.Segments[name])
		}
	}
	rj, err := shard.Open(filepath.Join(dir, "profiles.jsonl.shard"))
	if err != nil {
		t.Fatal(err)
	}
	defer rj.Release()
	rc, err := shard.Open(filepath.Join(dir, "profiles.csv.shard"))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Release()
	for i := range uint32(rj.Rows()) {
		a, _ := rj.Row(i)
		b, ok := rc.Lookup(a.ID())
		if !ok {
			t.Fatalf("%s missing from the CSV build", a.ID())
		}
		var pa, pb shard.Profile
		a.Profile(&pa)
		b.Profile(&pb)
		if pa.Email != pb.Email || pa.Phone != pb.Phone || pa.Consent != pb.Consent || len(pa.Attributes) != len(pb.Attributes) ||
			strings.Join(pa.FCM, ",") != strings.Join(pb.FCM, ",") || len(pa.WebPush) != len(pb.WebPush) {
			t.Fatalf("%s differs between JSON Lines and CSV:\n%+v\n%+v", a.ID(), pa, pb)
		}
	}
}

func TestShardBuildRejectsBadLine(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, file, body, want string
	}{
		{"json bad phone", "p.jsonl", "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\",\"phone\":\"12\"}\n", "line 3"},
		{"json not json", "p.jsonl", "{\"id\":\"a\"}\nnot json\n", "line 2"},
		{"csv bad consent", "p.csv", "id,consent_sms\na,true\nb,maybe\n", "line 3"},
		{"duplicate id", "p.jsonl", "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"a\"}\n", `duplicate id "a" on lines 1 and 3`},
		{"duplicate id csv", "p.csv", "id,email\nx,x@example.com\ny,\nx,\n", `duplicate id "x" on lines 2 and 4`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := filepath.Join(dir, tc.file)
			if err := os.WriteFile(in, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out.shard")
			code, _, stderr := runCmd("shard", "build", "--profiles", in, "--out", out)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr, tc.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatal("a failed build published a shard")
			}
		})
	}
}

// TestShardBuildEmptyInputSaysSo: an empty export builds a valid, empty
// shard (exit 0), with a warning on stderr rather than silence.
func TestShardBuildEmptyInputSaysSo(t *testing.T) {
	dir := t.TempDir()
	for _, file := range []string{"empty.jsonl", "header-only.csv"} {
		t.Run(file, func(t *testing.T) {
			in := filepath.Join(dir, file)
			body := ""
			if strings.HasSuffix(file, ".csv") {
				body = "id,email\n"
			}
			if err := os.WriteFile(in, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := runCmd("shard", "build", "--profiles", in, "--out", filepath.Join(dir, file+".shard"))
			if code != 0 || !strings.Contains(stderr, "holds no profiles") {
				t.Fatalf("exit %d, stderr %q; want 0 and a warning that the input holds no profiles", code, stderr)
			}
		})
	}
}

func TestShardInspectCorrupt(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.shard")
	if code, _, stderr := runCmd("shard", "generate", "--profiles", "500", "--out", good); code != 0 {
		t.Fatalf("generate: %s", stderr)
	}
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mutate  func([]byte) []byte
		wantErr string
	}{
		{"flipped byte mid-file", func(b []byte) []byte { b[len(b)/2] ^= 0xff; return b }, "checksum mismatch"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-100] }, "truncated"},
		{"not a shard", func([]byte) []byte {
			return []byte("hello, world, this is not a shard file at all; padding padding padding")
		}, "bad magic"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "bad.shard")
			if err := os.WriteFile(path, tc.mutate(append([]byte(nil), b...)), 0o644); err != nil {
				t.Fatal(err)
			}
			code, got, stderr := inspectJSONOf(t, path)
			if code != 1 || got.OK || !strings.Contains(stderr, tc.wantErr) || !strings.Contains(stderr, path) {
				t.Fatalf("exit %d ok=%v stderr %q; want exit 1 naming %q and the file", code, got.OK, stderr, tc.wantErr)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		if code, _, stderr := runCmd("shard", "inspect", filepath.Join(dir, "nope.shard")); code != 1 || !strings.Contains(stderr, "no such file") {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	})
}

func TestShardGenerateIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	read := func(name string, seed string) []byte {
		path := filepath.Join(dir, name)
		if code, _, stderr := runCmd("shard", "generate", "--profiles", "300", "--seed", seed, "--out", path); code != 0 {
			t.Fatalf("generate: %s", stderr)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name      string
		a, b      []byte
		wantEqual bool
	}{
		{"same seed jsonl", read("a.jsonl", "7"), read("b.jsonl", "7"), true},
		{"other seed jsonl", read("c.jsonl", "7"), read("d.jsonl", "8"), false},
		{"same seed shard", read("a.shard", "7"), read("b.shard", "7"), true},
		{"same seed csv", read("a.csv", "7"), read("b.csv", "7"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if bytes.Equal(tc.a, tc.b) != tc.wantEqual {
				t.Fatalf("equal=%v, want %v", bytes.Equal(tc.a, tc.b), tc.wantEqual)
			}
		})
	}
}

// TestShardRingPartitions: build and generate with --shard-id I --shards N
// write N files that together hold every user once, each naming its place in
// the ring; inspect prints it.
func TestShardRingPartitions(t *testing.T) {
	dir := t.TempDir()
	const shards = 3
	for _, mode := range []string{"build", "generate"} {
		t.Run(mode, func(t *testing.T) {
			seen := map[string]int{}
			for i := range shards {
				out := filepath.Join(dir, fmt.Sprintf("%s-%d.shard", mode, i))
				args := []string{"shard", mode, "--out", out, "--shard-id", fmt.Sprint(i), "--shards", fmt.Sprint(shards), "--ring-version", "6"}
				if mode == "build" {
					args = append(args, "--profiles", filepath.Join("..", "..", "testdata", "profiles.jsonl"))
				} else {
					args = append(args, "--profiles", "200", "--seed", "4")
				}
				if code, stdout, stderr := runCmd(args...); code != 0 || !strings.Contains(stdout, fmt.Sprintf("shard %d of %d (ring version 6, jump)", i, shards)) {
					t.Fatalf("%s exit %d\nstdout %s\nstderr %s", mode, code, stdout, stderr)
				}
				code, got, stderr := inspectJSONOf(t, out)
				if code != 0 || !got.OK || got.Ring.Shard != i || got.Ring.Shards != shards || got.Ring.Version != 6 || got.Ring.Scheme != "jump" {
					t.Fatalf("inspect exit %d: %+v %s", code, got, stderr)
				}
				if _, text, _ := runCmd("shard", "inspect", out); !strings.Contains(text, fmt.Sprintf("shard %d of %d (ring version 6, jump)", i, shards)) {
					t.Fatalf("inspect text does not print the ring:\n%s", text)
				}
				r, err := shard.Open(out)
				if err != nil {
					t.Fatal(err)
				}
				for j := range uint32(r.Rows()) {
					row, err := r.Row(j)
					if err != nil {
						t.Fatal(err)
					}
					seen[strings.Clone(row.ID())]++ // row strings point into the mapping
				}
				r.Release()
			}
			if len(seen) != 200 {
				t.Fatalf("%d distinct users in %d files, want 200", len(seen), shards)
			}
			for id, n := range seen {
				if n != 1 {
					t.Fatalf("user %s is in %d files", id, n)
				}
			}
		})
	}
	if code, _, stderr := runCmd("shard", "generate", "--profiles", "10", "--out", filepath.Join(dir, "x.shard"), "--shard-id", "3", "--shards", "3"); code != 2 || !strings.Contains(stderr, "shard id 3 is out of range") {
		t.Fatalf("shard id past the count: exit %d, %s", code, stderr)
	}
}

func TestShardUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no subcommand", []string{"shard"}, 2},
		{"unknown subcommand", []string{"shard", "frobnicate"}, 2},
		{"build without profiles", []string{"shard", "build"}, 2},
		{"inspect without path", []string{"shard", "inspect"}, 2},
		{"generate without count", []string{"shard", "generate", "--out", "x.jsonl"}, 2},
		{"bad flag", []string{"shard", "inspect", "--nope", "x"}, 2},
		{"help", []string{"shard", "help"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, stderr := runCmd(tc.args...); code != tc.code || stderr == "" {
				t.Fatalf("exit %d (want %d), stderr %q", code, tc.code, stderr)
			}
		})
	}
}
