package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
	_ "time/tzdata" // validate IANA zones on hosts without a zone database

	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

const shardUsage = `usage:
  notifyd shard build --profiles FILE [--out PATH] [--format auto|jsonl|csv] [--generation N] [RING]
  notifyd shard inspect PATH [--json] [--rows N]
  notifyd shard generate --profiles N --out PATH [--seed S] [--format jsonl|csv|shard] [RING]

RING: --shard-id I --shards N [--ring-version V] writes only the users of shard I of
N (Jump consistent hash of the user key): N runs over the same input, one per shard
id, partition the population. Without them the file is shard 0 of a ring of one.
`

func runShard(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, shardUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	ctx := context.Background()
	switch args[0] {
	case "build":
		return shardBuild(ctx, args[1:], stdout, stderr)
	case "inspect":
		return shardInspect(ctx, args[1:], stdout, stderr)
	case "generate":
		return shardGenerate(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "notifyd shard: unknown subcommand %q\n%s", args[0], shardUsage)
	return 2
}

// parseFlags parses flags that may come before or after positional
// arguments ("inspect PATH --json").
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	return newCommandFlags("shard "+name, shardSynopsis(name), stderr)
}

// shardSynopsis is the subcommand's line of shardUsage (and the RING
// paragraph when it takes RING flags).
func shardSynopsis(name string) string {
	head, ring, _ := strings.Cut(shardUsage, "\n\n")
	for _, line := range strings.Split(head, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "notifyd shard "+name+" "); ok {
			syn := "shard " + name + " " + rest
			if strings.HasSuffix(rest, "[RING]") {
				syn += "\n\n" + strings.TrimSpace(ring)
			}
			return syn
		}
	}
	return "shard " + name + " [flags]"
}

// ringFlags are the flags that place a shard file in a ring.
type ringFlags struct {
	id, shards *int
	version    *uint64
}

func addRingFlags(fs *flag.FlagSet) ringFlags {
	return ringFlags{
		id:      fs.Int("shard-id", 0, "this file's shard id, 0 .. shards-1"),
		shards:  fs.Int("shards", 1, "number of shards in the ring"),
		version: fs.Uint64("ring-version", 0, "ring version: grows with every change of the shard count"),
	}
}

// ring returns the ring the flags name (nil: a ring of one, the default).
func (f ringFlags) ring() (*shard.RingInfo, error) {
	r := shard.RingInfo{Version: *f.version, Shard: *f.id, Shards: *f.shards, Scheme: shard.RingJump}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

func formatFor(path, flagValue string) (shard.Format, error) {
	switch flagValue {
	case "jsonl", "json":
		return shard.FormatJSONL, nil
	case "csv":
		return shard.FormatCSV, nil
	case "", "auto":
		if strings.EqualFold(filepath.Ext(path), ".csv") {
			return shard.FormatCSV, nil
		}
		return shard.FormatJSONL, nil
	}
	return "", fmt.Errorf("unknown format %q (auto, jsonl or csv)", flagValue)
}

func shardBuild(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("build", stderr)
	in := fs.String("profiles", "", "profiles file: JSON Lines (.jsonl) or CSV (.csv)")
	out := fs.String("out", "", "shard file to publish (default: the profiles path with .shard)")
	format := fs.String("format", "auto", "input format: auto (by extension), jsonl or csv")
	gen := fs.Uint64("generation", 0, "generation number (default: current Unix time)")
	blockRows := fs.Int("block-rows", shard.DefaultBlockRows, "rows per checksummed block")
	rf := addRingFlags(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return exitCode(err)
	}
	ring, err := rf.ring()
	if err != nil {
		fmt.Fprintf(stderr, "notifyd shard build: %v\n", err)
		return 2
	}
	if *in == "" || len(pos) > 0 {
		fmt.Fprintf(stderr, "notifyd shard build: --profiles FILE is required and no positional arguments are taken\n%s", shardUsage)
		return 2
	}
	if *out == "" {
		*out = strings.TrimSuffix(*in, filepath.Ext(*in)) + ".shard"
	}
	f, err := formatFor(*in, *format)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd shard build: %v\n", err)
		return 2
	}
	if *gen == 0 {
		*gen = uint64(time.Now().Unix())
	}
	start := time.Now()
	stats, err := buildShard(ctx, *in, *out, f, shard.WriterOptions{Generation: *gen, BlockRows: *blockRows, Ring: ring})
	if err != nil {
		fmt.Fprintf(stderr, "notifyd shard build: %v\n", err)
		return 1
	}
	if stats.Rows == 0 {
		// Legal (a shard whose segments are all empty) but rarely meant:
		// an export that came out empty would silently stop every campaign.
		fmt.Fprintf(stderr, "notifyd shard build: warning: %s holds no profiles; the shard has 0 rows\n", *in)
	}
	fmt.Fprintf(stdout, "built %s: generation %d, %s, %d rows, %d segments, %d bytes (%.1f bytes/profile) in %s\n",
		*out, *gen, ring, stats.Rows, stats.Segments, stats.Bytes, float64(stats.Bytes)/float64(max(stats.Rows, 1)),
		time.Since(start).Round(time.Millisecond))
	return 0
}

func buildShard(ctx context.Context, in, out string, format shard.Format, opts shard.WriterOptions) (shard.CommitStats, error) {
	src, err := os.Open(in)
	if err != nil {
		return shard.CommitStats{}, fmt.Errorf("open profiles: %w", err)
	}
	defer src.Close()
	w, err := shard.NewWriter(out, opts)
	if err != nil {
		return shard.CommitStats{}, err
	}
	ring := opts.Ring
	err = shard.ReadProfiles(src, format, func(_ int, p *shard.Profile) error {
		if ring != nil && !ring.Owns(shard.Key(p.ID)) {
			// Another shard's user: validated all the same, so that the N
			// builds of one input accept or refuse it together.
			return p.Validate()
		}
		return w.Add(p)
	})
	if err != nil {
		w.Abort()
		return shard.CommitStats{}, fmt.Errorf("%s: %w", in, err)
	}
	stats, err := w.Commit(ctx)
	if dup, ok := errors.AsType[*shard.DuplicateIDError](err); ok {
		// The writer sorts by key and has no line numbers: read the input
		// again for the id's lines (the spec promises them; costs nothing
		// unless the build fails).
		dup.Lines = idLines(in, format, dup.ID)
		return stats, fmt.Errorf("%s: commit shard: %w", in, dup)
	}
	return stats, err
}

// idLines returns the first two input lines that hold profile id.
func idLines(in string, format shard.Format, id string) []int {
	src, err := os.Open(in)
	if err != nil {
		return nil
	}
	defer src.Close()
	var lines []int
	errFound := errors.New("found")
	shard.ReadProfiles(src, format, func(line int, p *shard.Profile) error {
		if p.ID == id {
			if lines = append(lines, line); len(lines) == 2 {
				return errFound
			}
		}
		return nil
	})
	return lines
}

type inspectJSON struct {
	Path       string            `json:"path"`
	Generation uint64            `json:"generation"`
	Ring       *ringJSON         `json:"ring,omitempty"`
	Rows       uint64            `json:"rows"`
	Bytes      int               `json:"bytes"`
	BlockRows  uint64            `json:"block_rows"`
	Attributes []string          `json:"attributes"`
	Segments   map[string]uint64 `json:"segments"`
	OK         bool              `json:"ok"`
	Problems   []string          `json:"problems,omitempty"`
	Error      string            `json:"error,omitempty"`
}

type ringJSON struct {
	Version uint64 `json:"version"`
	Shard   int    `json:"shard"`
	Shards  int    `json:"shards"`
	Scheme  string `json:"scheme"`
}

func shardInspect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("inspect", stderr)
	asJSON := fs.Bool("json", false, "print a JSON summary")
	sample := fs.Int("rows", 0, "also print the first N rows (text mode)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return exitCode(err)
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "notifyd shard inspect: want exactly one PATH\n%s", shardUsage)
		return 2
	}
	path := pos[0]
	r, err := shard.Open(path)
	if err != nil {
		if *asJSON {
			json.NewEncoder(stdout).Encode(inspectJSON{Path: path, Error: err.Error()})
		}
		fmt.Fprintf(stderr, "notifyd shard inspect: %v\n", err)
		return 1
	}
	defer r.Release()
	rep := r.Verify(ctx)
	if *asJSON {
		ring := r.Ring()
		out := inspectJSON{Path: path, Generation: r.Generation(), Rows: r.Rows(), Bytes: r.Size(),
			Ring:      &ringJSON{Version: ring.Version, Shard: ring.Shard, Shards: ring.Shards, Scheme: ring.Scheme.String()},
			BlockRows: r.BlockRows(), Attributes: r.AttrNames(), Segments: map[string]uint64{}, OK: rep.OK()}
		for _, s := range r.Segments() {
			out.Segments[s.Name] = s.Members
		}
		for _, p := range rep.Problems {
			out.Problems = append(out.Problems, p.Error())
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "file\t%s\n", path)
		fmt.Fprintf(tw, "bytes\t%d (%.1f per row)\n", r.Size(), float64(r.Size())/float64(max(r.Rows(), 1)))
		fmt.Fprintf(tw, "generation\t%d\n", r.Generation())
		fmt.Fprintf(tw, "ring\t%s\n", r.Ring())
		fmt.Fprintf(tw, "rows\t%d (%d per block)\n", r.Rows(), r.BlockRows())
		fmt.Fprintf(tw, "attributes\t%s\n", strings.Join(r.AttrNames(), ", "))
		fmt.Fprintf(tw, "segments\t%d\n", len(r.Segments()))
		for _, s := range r.Segments() {
			fmt.Fprintf(tw, "  %s\t%d\t(%.1f%%)\n", s.Name, s.Members, 100*float64(s.Members)/float64(max(r.Rows(), 1)))
		}
		verdict := fmt.Sprintf("ok (%d sections, %d blocks, %d segment bitmaps verified)", rep.Sections, rep.Blocks, rep.Segments)
		if !rep.OK() {
			verdict = fmt.Sprintf("CORRUPT (%d problems)", len(rep.Problems))
		}
		fmt.Fprintf(tw, "checksums\t%s\n", verdict)
		tw.Flush()
		printRows(stdout, r, *sample)
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			fmt.Fprintf(stderr, "notifyd shard inspect: %v\n", p)
		}
		return 1
	}
	return 0
}

func shardGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("generate", stderr)
	n := fs.Uint64("profiles", 0, "number of profiles")
	out := fs.String("out", "", "output path")
	seed := fs.Uint64("seed", 1, "random seed (same seed, same profiles)")
	format := fs.String("format", "", "jsonl, csv or shard (default: by the extension of --out)")
	gen := fs.Uint64("generation", 1, "generation number (shard format)")
	rf := addRingFlags(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return exitCode(err)
	}
	ring, err := rf.ring()
	if err != nil {
		fmt.Fprintf(stderr, "notifyd shard generate: %v\n", err)
		return 2
	}
	if *n == 0 || *out == "" || len(pos) > 0 {
		fmt.Fprintf(stderr, "notifyd shard generate: --profiles N (N > 0) and --out PATH are required\n%s", shardUsage)
		return 2
	}
	if *format == "" {
		switch strings.ToLower(filepath.Ext(*out)) {
		case ".shard":
			*format = "shard"
		case ".csv":
			*format = "csv"
		default:
			*format = "jsonl"
		}
	}
	g := shardgen.New(*seed)
	start := time.Now()
	var size int64
	kept := *n
	switch *format {
	case "shard":
		var stats shard.CommitStats
		stats, err = generateShard(ctx, g, *n, *out, shard.WriterOptions{Generation: *gen, Ring: ring})
		size, kept = int64(stats.Bytes), stats.Rows
	case "jsonl", "csv":
		size, kept, err = generateText(g, *n, *out, *format, ring)
	default:
		fmt.Fprintf(stderr, "notifyd shard generate: unknown format %q (jsonl, csv or shard)\n", *format)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "notifyd shard generate: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "generated %s: %d of %d profiles (%s; seed %d, %s), %d bytes (%.1f bytes/profile) in %s\n",
		*out, kept, *n, ring, *seed, *format, size, float64(size)/float64(max(kept, 1)), time.Since(start).Round(time.Millisecond))
	return 0
}

// generateShard generates profiles 0..n-1 and writes those of opts.Ring's
// shard (all of them without a ring).
func generateShard(ctx context.Context, g *shardgen.Generator, n uint64, out string, opts shard.WriterOptions) (shard.CommitStats, error) {
	w, err := shard.NewWriter(out, opts)
	if err != nil {
		return shard.CommitStats{}, err
	}
	var p shard.Profile
	for i := range n {
		g.Profile(i, &p)
		if opts.Ring != nil && !opts.Ring.Owns(shard.Key(p.ID)) {
			continue
		}
		if err := w.Add(&p); err != nil {
			w.Abort()
			return shard.CommitStats{}, err
		}
	}
	return w.Commit(ctx)
}

// generateText writes profiles 0..n-1 (those of ring's shard when ring is
// not nil) as JSON Lines or CSV.
func generateText(g *shardgen.Generator, n uint64, out, format string, ring *shard.RingInfo) (size int64, kept uint64, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return 0, 0, fmt.Errorf("create output: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	var p shard.Profile
	var line []byte
	var cw *csv.Writer
	attrs := shardgen.CSVAttrs()
	if format == "csv" {
		cw = csv.NewWriter(bw)
		cw.Write(shard.CSVColumns(attrs...))
	}
	for i := range n {
		g.Profile(i, &p)
		if ring != nil && !ring.Owns(shard.Key(p.ID)) {
			continue
		}
		kept++
		if cw != nil {
			cw.Write(shard.CSVRecord(&p, attrs))
			continue
		}
		line = append(shard.AppendJSON(line[:0], &p), '\n')
		bw.Write(line)
	}
	if cw != nil {
		cw.Flush()
		if err := cw.Error(); err != nil {
			return 0, 0, fmt.Errorf("write %s: %w", out, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return 0, 0, fmt.Errorf("write %s: %w", out, err)
	}
	st, err := tmp.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("stat %s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return 0, 0, fmt.Errorf("close %s: %w", out, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return 0, 0, fmt.Errorf("publish %s: %w", out, err)
	}
	return st.Size(), kept, nil
}

// printRows prints the first n rows, one line each, for a quick look.
func printRows(w io.Writer, r *shard.Reader, n int) {
	for i := range uint32(min(uint64(max(n, 0)), r.Rows())) {
		row, err := r.Row(i)
		if err != nil {
			fmt.Fprintf(w, "row %d: %v\n", i, err)
			continue
		}
		var attrs []string
		row.Attrs(func(name string, v shard.Value) bool {
			attrs = append(attrs, fmt.Sprintf("%s=%v", name, v.Any()))
			return true
		})
		c := row.Consents()
		fmt.Fprintf(w, "row %d key=%016x id=%s email=%q phone=%q locale=%q tz=%q apns=%d fcm=%d webpush=%d consent(email=%s sms=%s push=%s webpush=%s) %s\n",
			i, row.Key(), row.ID(), row.Email(), row.Phone(), row.Locale(), row.TimeZone(),
			len(row.APNsTokens(nil)), len(row.FCMTokens(nil)), len(row.WebPush(nil)),
			c.Email, c.SMS, c.Push, c.WebPush, strings.Join(attrs, " "))
	}
}
