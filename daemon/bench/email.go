package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Email content of ~3.5 KB as sent (multipart text + HTML, quoted-printable),
// the size issue 16 measured with; one variable per part, as newsletters have.
var (
	benchEmailHTML = "<html><body><h1>Hello {{ profile.first_name | default: 'there' }}</h1>\n" +
		strings.Repeat("<p>Our autumn collection is in: jackets, boots and scarves at member prices. See what is new this week in your store.</p>\n", 16) +
		"</body></html>"
	benchEmailText = "Hello {{ profile.first_name | default: 'there' }}\n" +
		strings.Repeat("Our autumn collection is in: jackets, boots and scarves at member prices.\n", 12)
)

const (
	benchFrom = "news@notifyd.test"
	benchRcpt = "member@example.org"
)

// benchEmailBytes is the payload size given to the reference (smtp-source
// -l, the raw client's message): the two bodies plus notifyd's headers and
// MIME framing, measured at about 700 bytes.
func benchEmailBytes() int { return len(benchEmailHTML) + len(benchEmailText) + 700 }

// Email runs `notifyd bench email`: the daemon as `notifyd serve` wires it
// (YAML config with defaults, in-memory state, the real SMTP sender) sends a
// campaign over a generated shard into a sink in another process, and in
// the same run, interleaved, the reference sends as many messages of the
// same size into the same sink: Postfix's smtp-source when installed, else
// a built-in raw pipelining SMTP client.
func Email(ctx context.Context, opts ProviderOptions) (*ProviderResult, error) {
	members := 25_000
	if opts.Postfix {
		members = 5_000 // Postfix delivers some thousands per second here, not tens of thousands
	}
	opts.defaults(members, 8)
	res := &ProviderResult{Channel: "email", MessageBytes: benchEmailBytes()}

	if opts.ReferenceWorkload == "campaign" && !opts.Postfix {
		return nil, fmt.Errorf("--reference-workload %s needs --postfix: the message is taken from Postfix's Maildir", opts.ReferenceWorkload)
	}
	if opts.Postfix {
		return emailPostfix(ctx, opts, res)
	}
	var sink *sinkProcess
	var err error
	sinkPath, haveSink := lookTool("smtp-sink")
	switch {
	case opts.Sink == "auto" && haveSink:
		sink, err = startSMTPSink(sinkPath)
	case opts.Sink == "auto" || opts.Sink == "go":
		if opts.Sink == "auto" {
			fmt.Fprintln(opts.Out, "smtp-sink not found (Debian: apt-get install postfix): using notifyd's Go SMTP sink")
		}
		sink, err = startGoSink(opts.SinkCommand, "smtp")
	default:
		return nil, fmt.Errorf("unknown sink %q: want auto or go", opts.Sink)
	}
	if err != nil {
		return nil, err
	}
	defer sink.close()
	res.Sink = sink.what
	host, port, _ := net.SplitHostPort(sink.addr)

	var ref referenceFunc
	srcPath, haveSrc := lookTool("smtp-source")
	switch {
	case opts.Reference == "builtin" || opts.Reference == "auto" && !haveSrc:
		if opts.Reference == "auto" {
			res.Note = "smtp-source not found (Debian: apt-get install postfix): the reference is notifyd's built-in raw SMTP client"
			fmt.Fprintln(opts.Out, res.Note)
		}
		res.Reference = fmt.Sprintf("built-in raw SMTP client: %d sessions, PIPELINING, one pre-built %d-byte message", opts.Concurrency, res.MessageBytes)
		ref = func(ctx context.Context, n int64) (time.Duration, time.Duration, error) {
			return rawSMTP(ctx, sink.addr, opts.Concurrency, n, res.MessageBytes)
		}
	case opts.Reference == "tool" || opts.Reference == "auto":
		if !haveSrc {
			return nil, errors.New("smtp-source not found: apt-get install postfix (Debian), or --reference builtin")
		}
		args := func(n int64) []string {
			return []string{"-d", "-s", strconv.Itoa(opts.Concurrency), "-m", strconv.FormatInt(n, 10), "-l", strconv.Itoa(res.MessageBytes),
				"-f", benchFrom, "-t", benchRcpt, "-M", "bench.notifyd.test", sink.addr}
		}
		res.Reference = strings.Replace(srcPath+" "+strings.Join(args(0), " "), " -m 0 ", " -m <messages> ", 1)
		ref = func(ctx context.Context, n int64) (time.Duration, time.Duration, error) {
			wall, cpu, _, err := runTool(ctx, srcPath, args(n)...)
			return wall, cpu, err
		}
	default:
		return nil, fmt.Errorf("unknown reference %q: want auto, tool or builtin", opts.Reference)
	}

	if err := runEmail(ctx, opts, res, host, port, ref, nil); err != nil {
		return nil, err
	}
	return res, nil
}

// runEmail starts the daemon with the default email config pointed at
// host:port and runs the rounds.
// capturingWaiter is the Postfix instance of --reference-workload campaign:
// after the first wait (the warm-up campaign's) it copies one delivered
// message to the reference's file.
type capturingWaiter struct {
	*postfixInstance
	to   string
	done bool
}

func (c *capturingWaiter) waitDelivered(ctx context.Context, n int64) (time.Duration, error) {
	cpu, err := c.postfixInstance.waitDelivered(ctx, n)
	if err != nil || c.done {
		return cpu, err
	}
	c.done = true
	names, err := os.ReadDir(c.maildir)
	if err != nil || len(names) == 0 {
		return cpu, fmt.Errorf("capture a delivered message for the reference: %d in %s: %v", len(names), c.maildir, err)
	}
	b, err := os.ReadFile(filepath.Join(c.maildir, names[0].Name()))
	if err != nil {
		return cpu, fmt.Errorf("capture a delivered message for the reference: %w", err)
	}
	return cpu, os.WriteFile(c.to, withoutTrace(b), 0o600)
}

// withoutTrace drops the header lines Postfix added on delivery
// (Return-Path, X-Original-To, Delivered-To, Received and its
// continuations): what is left is the message as notifyd sent it.
func withoutTrace(msg []byte) []byte {
	rest := msg
	trace := false
	for len(rest) > 0 {
		line, after, _ := bytes.Cut(rest, []byte("\n"))
		cont := len(line) > 0 && (line[0] == ' ' || line[0] == '\t')
		switch {
		case cont && trace:
		case bytes.HasPrefix(line, []byte("Return-Path:")), bytes.HasPrefix(line, []byte("X-Original-To:")),
			bytes.HasPrefix(line, []byte("Delivered-To:")), bytes.HasPrefix(line, []byte("Received:")):
			trace = true
		default:
			return rest
		}
		rest = after
	}
	return rest
}

func runEmail(ctx context.Context, opts ProviderOptions, res *ProviderResult, host, port string, ref referenceFunc, dw deliveryWaiter) error {
	path, err := cachedShard(opts.CacheDir, opts.Members, opts.Out)
	if err != nil {
		return err
	}
	// The default config but for the relay's address and clear text: the
	// sinks, like a local relay, speak no TLS (smtp-source has none either).
	chYAML := "  email:\n    host: " + host + "\n    port: " + port + "\n    tls_mode: none\n    from: " + benchFrom + "\n"
	d, err := startDaemon(ctx, path, chYAML, opts.Log)
	if err != nil {
		return err
	}
	defer d.stop()
	content := map[string]any{
		"from":    "Notifyd News <" + benchFrom + ">",
		"subject": "{{ profile.first_name | default: 'Friend' }}, our autumn news",
		"html":    benchEmailHTML,
		"text":    benchEmailText,
	}
	fmt.Fprintf(opts.Out, "sink: %s\nreference: %s\n", res.Sink, res.Reference)
	return runRounds(ctx, res, opts, d, content, ref, dw)
}

// emailPostfix is `notifyd bench email --postfix`: a private Postfix on
// loopback delivers to a Maildir on a tmpfs, and both notifyd and
// smtp-source (the reference: Postfix's own load generator, -s sessions)
// are timed from their first connection to the last message delivered.
func emailPostfix(ctx context.Context, opts ProviderOptions, res *ProviderResult) (*ProviderResult, error) {
	srcPath, haveSrc := lookTool("smtp-source")
	if !haveSrc || opts.Reference == "builtin" {
		return nil, errors.New("--postfix compares with Postfix's smtp-source: apt-get install postfix (Debian)")
	}
	pf, err := startPostfix(ctx, "")
	if err != nil {
		return nil, err
	}
	defer pf.stop()
	res.Sink = "private Postfix (" + pf.addr + ", smtpd → cleanup → qmgr → virtual, Maildir on tmpfs " + pf.dir + ")"
	host, port, _ := net.SplitHostPort(pf.addr)
	var dw deliveryWaiter = pf
	filler := []string{"-l", strconv.Itoa(res.MessageBytes)}
	content, side := filler, []string(nil)
	switch opts.ReferenceWorkload {
	case "filler":
	case "", "campaign":
		// The warm-up campaign's first delivered message becomes the
		// reference's: the same bytes through the same Postfix, each to
		// a recipient of its own (-N), as a campaign's are. The filler
		// workload runs beside it, for context.
		cw := &capturingWaiter{postfixInstance: pf, to: filepath.Join(pf.dir, "reference.eml")}
		dw = cw
		content, side = []string{"-N", "-F", cw.to}, filler
	default:
		return nil, fmt.Errorf("unknown --reference-workload %q: want campaign or filler", opts.ReferenceWorkload)
	}
	args := func(content []string, n int64) []string {
		return append(append([]string{"-d", "-s", strconv.Itoa(opts.Concurrency), "-m", strconv.FormatInt(n, 10)}, content...),
			"-f", benchFrom, "-t", benchRcpt, "-M", "bench.notifyd.test", pf.addr)
	}
	command := func(content []string) string {
		return strings.Replace(srcPath+" "+strings.Join(args(content, 0), " "), " -m 0 ", " -m <messages> ", 1) + ", until delivered"
	}
	res.Reference = command(content)
	if side != nil {
		res.Reference += " (-F: a message notifyd rendered, as Postfix delivered it, without its trace headers; -N: a recipient of its own per message)"
	}
	run := func(ctx context.Context, content []string, n int64) (time.Duration, time.Duration, error) {
		if err := pf.fresh(); err != nil {
			return 0, 0, err
		}
		start := time.Now()
		_, cpu, _, err := runTool(ctx, srcPath, args(content, n)...)
		if err != nil {
			return 0, 0, err
		}
		if _, err := pf.waitDelivered(ctx, n); err != nil {
			return 0, 0, err
		}
		return time.Since(start), cpu, nil
	}
	var sideRuns []Round
	ref := func(ctx context.Context, n int64) (time.Duration, time.Duration, error) {
		wall, cpu, err := run(ctx, content, n)
		if err != nil || side == nil {
			return wall, cpu, err
		}
		sw, sc, err := run(ctx, side, n)
		sideRuns = append(sideRuns, Round{RefWall: sw, RefCPU: sc, RefMessages: n})
		return wall, cpu, err
	}
	if err := runEmail(ctx, opts, res, host, port, ref, dw); err != nil {
		return nil, err
	}
	if side != nil {
		res.Filler = sideReference(command(side), res.Rounds, sideRuns)
	}
	return res, nil
}

// sideReference sums up a second reference's runs, one per round of own.
func sideReference(command string, own, side []Round) *SideReference {
	rates, ratios, cpus := make([]float64, len(side)), make([]float64, len(side)), make([]float64, len(side))
	for i, s := range side {
		rates[i] = perSec(s.RefMessages, s.RefWall)
		ratios[i] = perSec(own[i].Messages, own[i].Wall) / rates[i]
		cpus[i] = micros(s.RefCPU, s.RefMessages)
	}
	return &SideReference{Command: command, PerSec: median(rates), Ratio: median(ratios), CPUPerMsg: median(cpus)}
}

// rawSMTP is the built-in reference: conns sessions, each sending its share
// of n copies of one pre-built message with MAIL/RCPT/DATA pipelined behind
// the previous end of data (one write and one round trip per message), and
// no per-message work at all.
func rawSMTP(ctx context.Context, addr string, conns int, n int64, size int) (time.Duration, time.Duration, error) {
	data := make([]byte, 0, size+64)
	data = append(data, "From: <"+benchFrom+">\r\nTo: <"+benchRcpt+">\r\nSubject: bench\r\n\r\n"...)
	for len(data) < size {
		data = append(data, "Our autumn collection is in: jackets, boots and scarves at member prices.\r\n"...)
	}
	const envelope = "MAIL FROM:<" + benchFrom + ">\r\nRCPT TO:<" + benchRcpt + ">\r\nDATA\r\n"
	start, cpu0 := time.Now(), processCPU()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	per := (n + int64(conns) - 1) / int64(conns)
	for k := range int64(conns) {
		cnt := min(per, n-k*per)
		if cnt <= 0 {
			break
		}
		wg.Go(func() {
			if err := rawSMTPSession(ctx, addr, data, envelope, cnt); err != nil {
				mu.Lock()
				first = cmp(first, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return time.Since(start), processCPU() - cpu0, first
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func rawSMTPSession(ctx context.Context, addr string, data []byte, envelope string, cnt int64) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	tp := textproto.NewConn(c)
	w := bufio.NewWriterSize(c, 16<<10)
	step := func(code int, line string) error {
		if line != "" {
			if err := tp.PrintfLine("%s", line); err != nil {
				return err
			}
		}
		_, _, err := tp.ReadResponse(code)
		return err
	}
	if err := step(220, ""); err != nil {
		return err
	}
	if err := step(250, "EHLO ref.notifyd.test"); err != nil {
		return err
	}
	read := func(codes ...int) error {
		for _, code := range codes {
			if _, _, err := tp.ReadResponse(code); err != nil {
				return err
			}
		}
		return nil
	}
	_, _ = w.WriteString(envelope)
	if err := w.Flush(); err != nil {
		return err
	}
	if err := read(250, 250, 354); err != nil {
		return err
	}
	for i := range cnt {
		_, _ = w.Write(data)
		_, _ = w.WriteString(".\r\n")
		last := i+1 == cnt
		if !last {
			_, _ = w.WriteString(envelope)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if err := read(250); err != nil {
			return err
		}
		if !last {
			if err := read(250, 250, 354); err != nil {
				return err
			}
		}
	}
	return step(221, "QUIT")
}
