package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/daemon"
)

// ProviderOptions configure the email and webhook benchmarks.
type ProviderOptions struct {
	// Members is the segment size (default 25,000 for email, 50,000 for
	// webhooks); messages are what the shard's profiles address.
	Members int
	// Rounds alternate notifyd and the reference, one each per round (3).
	Rounds int
	// Reference is "auto" (the external tool when installed, otherwise the
	// built-in raw client, saying so), "tool" (the tool, or fail) or
	// "builtin".
	Reference string
	// Sink is "auto" (Postfix's smtp-sink for email when installed, else
	// notifyd's Go sink) or "go". Webhooks always use the Go receiver.
	Sink string
	// Concurrency is the reference's sessions/connections (smtp-source -s,
	// h2load -c; default 8 for email, 64 for webhooks); notifyd runs its
	// defaults.
	Concurrency int
	// SinkCommand starts this binary as a sink process (argv; default: the
	// running executable). The process must call ServeSinkIfAsked.
	SinkCommand []string
	// Postfix (email only) replaces the sink with a private, loopback-only
	// Postfix delivering to a Maildir on a tmpfs (/dev/shm); both notifyd
	// and smtp-source are timed until Postfix has delivered every message.
	// Needs root and Debian's postfix package; the default segment is 5,000.
	Postfix bool
	// ReferenceWorkload (with Postfix) is what smtp-source sends as the
	// reference: "campaign" (the default: what a campaign asks of Postfix:
	// -F, a message notifyd rendered and Postfix delivered in the warm-up,
	// trace headers removed, and -N, a recipient of its own per message) or
	// "filler" (-l, its own filler text of the message's size, every
	// message to one recipient). With "campaign" the filler workload runs in
	// every round too and is reported beside it (ProviderResult.Filler):
	// it is the most this Postfix accepts of the cheapest mail, not of a
	// campaign. One recipient keeps Postfix's address resolve and rewrite
	// caches at a 100% hit rate (smtp-source(1) on -N) and filler text is
	// cheaper for cleanup than a multipart message, which no campaign
	// sees: "campaign" compares the two clients on the same work for Postfix.
	ReferenceWorkload string
	// CPUProfile, when set, receives a CPU profile of notifyd's rounds.
	CPUProfile string
	CacheDir   string
	Out        io.Writer
	Log        *slog.Logger
}

// Round is one notifyd run and one reference run, back to back.
type Round struct {
	Messages, RefMessages int64
	Wall, RefWall         time.Duration
	CPU, RefCPU           time.Duration
	// Syscalls is notifyd's read and write system calls in its run
	// (Linux /proc/self/io; 0 elsewhere): unlike CPU time, the count does
	// not change with the machine's load.
	Syscalls int64
	// CtxSwitches is the process's voluntary and involuntary context
	// switches in its run: the idle-time costs (threads parking and waking
	// on every reply) that CPU time per message hides in the machine's
	// noise. (Postfix runs count the bench's own Maildir poll too, about
	// 100 a second.)
	CtxSwitches int64
	// Allocs is the heap objects notifyd allocated in its run.
	Allocs int64
}

// ProviderResult is what an email or webhook benchmark measured: medians
// over the rounds.
type ProviderResult struct {
	Channel   string
	Sink      string // what answered both
	Reference string // the reference's command line or "built-in ..."
	Note      string // why the reference is not the external tool, if not
	Rounds    []Round

	MsgsPerSec, RefPerSec         float64
	Ratio                         float64 // median of per-round ratios
	CPUMicrosPerMsg, RefCPUPerMsg float64
	// CPURatio is the median of per-round notifyd CPU per message over the
	// reference's: CPU per message in µs moves with the host (3× between
	// sittings here), the two clients' CPU on the same host far less.
	CPURatio     float64
	MessageBytes int // size of one message's payload as sent
	// SyscallsPerMsg is the median of notifyd's read+write system calls
	// per message (0 when /proc/self/io is not there).
	SyscallsPerMsg float64
	// CtxSwitchesPerMsg and AllocsPerMsg are the medians of Round's
	// counters per message.
	CtxSwitchesPerMsg, AllocsPerMsg float64
	// Filler, with Postfix and the campaign workload as the reference, is
	// smtp-source's filler workload run in the same rounds: context for the
	// reference, not the reference.
	Filler *SideReference
}

// SideReference is a second reference run in every round beside the first.
type SideReference struct {
	Command   string
	PerSec    float64 // median rate
	Ratio     float64 // median of notifyd's rate over this one's, per round
	CPUPerMsg float64 // median CPU per message
}

// processSyscalls is the read and write system calls of this process so
// far (syscr + syscw of /proc/self/io), or 0 where that file is missing.
func processSyscalls() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			c, _ := strconv.ParseInt(v, 10, 64)
			n += c
		} else if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			c, _ := strconv.ParseInt(v, 10, 64)
			n += c
		}
	}
	return n
}

// heapAllocs is the heap objects this process allocated so far.
func heapAllocs() int64 {
	samples := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	metrics.Read(samples)
	if samples[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(samples[0].Value.Uint64())
}

// contextSwitches is the process's voluntary and involuntary context
// switches so far.
func contextSwitches() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Nvcsw + ru.Nivcsw
}

// processCPU is the user+system CPU of this process so far: notifyd's
// share (the sink and reference tools are other processes).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// referenceFunc runs the reference for n messages and returns its wall
// time and CPU.
type referenceFunc func(ctx context.Context, n int64) (wall, cpu time.Duration, err error)

// benchDaemon is a daemon wired as `notifyd serve` wires it (config parsed
// from YAML, defaults applied, BuildChannels), with in-memory state.
type benchDaemon struct {
	d      *daemon.Daemon
	cancel context.CancelFunc
	done   chan error
}

func startDaemon(ctx context.Context, shardPath, channelsYAML string, log *slog.Logger) (*benchDaemon, error) {
	yml := "shard:\n  path: " + strconv.Quote(shardPath) + "\nadmin:\n  listen: 127.0.0.1:0\n  token: bench-3f9a1c7e5d2b8064\n" +
		"engine:\n  owner: bench\n  shutdown_timeout: 10s\nchannels:\n" + channelsYAML
	cfg, err := daemon.ParseConfig([]byte(yml))
	if err != nil {
		return nil, err
	}
	chans, err := daemon.BuildChannels(cfg.Channels, log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d, err := daemon.New(ctx, cfg, daemon.Deps{Channels: chans, Logger: log, Listener: ln})
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	b := &benchDaemon{d: d, cancel: cancel, done: make(chan error, 1)}
	go func() { b.done <- d.Run(rctx) }()
	return b, nil
}

func (b *benchDaemon) stop() error {
	b.cancel()
	return <-b.done
}

// campaign creates campaign id from body and waits for it; it returns the
// messages the channel counted sent, and fails if any was not.
func (b *benchDaemon) campaign(ctx context.Context, id, channel string, body []byte) (int64, error) {
	e := b.d.Engine()
	if _, _, err := e.Create(ctx, body); err != nil {
		return 0, fmt.Errorf("create campaign: %w", err)
	}
	if err := e.Wait(ctx, id); err != nil {
		return 0, err
	}
	st, err := e.Get(ctx, id)
	if err != nil {
		return 0, err
	}
	if st.Status != campaigns.StatusCompleted {
		return 0, fmt.Errorf("campaign %s ended %s", id, st.Status)
	}
	counts := st.Counts[channel]
	for reason, n := range counts {
		switch reason {
		case "sent", "no_address", "no_consent":
		default:
			if n > 0 {
				return 0, fmt.Errorf("campaign %s: %d %s messages %s (counts %v)", id, n, channel, reason, counts)
			}
		}
	}
	return counts["sent"], nil
}

// campaignJSON is a one-channel campaign over the whole shard.
func campaignJSON(id, channel string, content map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{
		"id": id, "segment": "all", "channels": []string{channel},
		"content": map[string]any{channel: content},
	})
	return b
}

// deliveryWaiter, when the sink stores messages (Postfix), makes a run end
// when the sink has delivered them, not when it has accepted them.
type deliveryWaiter interface {
	// fresh starts counting a new run's deliveries from zero.
	fresh() error
	// waitDelivered waits for n deliveries and returns the CPU this process
	// spent counting them (not the sender's: it is subtracted).
	waitDelivered(ctx context.Context, n int64) (time.Duration, error)
}

// runRounds alternates notifyd's campaign and the reference, measuring
// wall time and CPU of each, and fills the medians.
func runRounds(ctx context.Context, res *ProviderResult, opts ProviderOptions, d *benchDaemon, content map[string]any, ref referenceFunc, dw deliveryWaiter) error {
	if opts.CPUProfile != "" {
		f, err := os.Create(opts.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	// A warm-up campaign: sessions and connections open, code paged in.
	warm := "bench-warm-" + stamp
	if dw != nil {
		if err := dw.fresh(); err != nil {
			return err
		}
	}
	n, err := d.campaign(ctx, warm, res.Channel, campaignJSON(warm, res.Channel, content))
	if err != nil {
		return err
	}
	if dw != nil {
		if _, err := dw.waitDelivered(ctx, n); err != nil {
			return err
		}
	}
	if n == 0 {
		return errors.New("the shard addresses no message on this channel")
	}
	for r := range opts.Rounds {
		var rd Round
		// Reference first in odd rounds, notifyd first in even ones: neither
		// always runs right after the other's connections were torn down.
		runOwn := func() error {
			id := fmt.Sprintf("bench-%s-%d", stamp, r)
			if dw != nil {
				if err := dw.fresh(); err != nil {
					return err
				}
			}
			start, cpu0, sys0, cs0 := time.Now(), processCPU(), processSyscalls(), contextSwitches()
			al0 := heapAllocs()
			n, err := d.campaign(ctx, id, res.Channel, campaignJSON(id, res.Channel, content))
			var counting time.Duration
			if err == nil && dw != nil {
				counting, err = dw.waitDelivered(ctx, n)
			}
			rd.Wall, rd.CPU, rd.Messages = time.Since(start), processCPU()-cpu0-counting, n
			rd.Syscalls = processSyscalls() - sys0
			rd.Allocs, rd.CtxSwitches = heapAllocs()-al0, contextSwitches()-cs0
			return err
		}
		runRef := func() error {
			rd.RefMessages = n
			var err error
			rd.RefWall, rd.RefCPU, err = ref(ctx, n)
			return err
		}
		first, second := runOwn, runRef
		if r%2 == 1 {
			first, second = runRef, runOwn
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
		res.Rounds = append(res.Rounds, rd)
		fmt.Fprintf(opts.Out, "round %d: notifyd %d msgs in %s (%.0f/s, %.1f µs CPU/msg, %.2f read+write syscalls/msg, %.2f context switches/msg, %.1f allocs/msg); reference %.0f/s, %.1f µs CPU/msg\n",
			r+1, rd.Messages, rd.Wall.Round(time.Millisecond), perSec(rd.Messages, rd.Wall), micros(rd.CPU, rd.Messages), perMsg(rd.Syscalls, rd.Messages),
			perMsg(rd.CtxSwitches, rd.Messages), perMsg(rd.Allocs, rd.Messages),
			perSec(rd.RefMessages, rd.RefWall), micros(rd.RefCPU, rd.RefMessages))
	}
	med := func(f func(Round) float64) float64 {
		v := make([]float64, len(res.Rounds))
		for i, rd := range res.Rounds {
			v[i] = f(rd)
		}
		return median(v)
	}
	res.MsgsPerSec = med(func(r Round) float64 { return perSec(r.Messages, r.Wall) })
	res.RefPerSec = med(func(r Round) float64 { return perSec(r.RefMessages, r.RefWall) })
	res.Ratio = med(func(r Round) float64 { return perSec(r.Messages, r.Wall) / perSec(r.RefMessages, r.RefWall) })
	res.CPUMicrosPerMsg = med(func(r Round) float64 { return micros(r.CPU, r.Messages) })
	res.RefCPUPerMsg = med(func(r Round) float64 { return micros(r.RefCPU, r.RefMessages) })
	res.CPURatio = med(func(r Round) float64 {
		if ref := micros(r.RefCPU, r.RefMessages); ref > 0 {
			return micros(r.CPU, r.Messages) / ref
		}
		return 0
	})
	res.SyscallsPerMsg = med(func(r Round) float64 { return perMsg(r.Syscalls, r.Messages) })
	res.CtxSwitchesPerMsg = med(func(r Round) float64 { return perMsg(r.CtxSwitches, r.Messages) })
	res.AllocsPerMsg = med(func(r Round) float64 { return perMsg(r.Allocs, r.Messages) })
	return nil
}

// median is v's middle value (the upper one of an even count); it sorts v.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func perSec(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func perMsg(n, msgs int64) float64 {
	if msgs == 0 {
		return 0
	}
	return float64(n) / float64(msgs)
}

func micros(d time.Duration, n int64) float64 {
	if n == 0 {
		return 0
	}
	return float64(d) / float64(time.Microsecond) / float64(n)
}

func (o *ProviderOptions) defaults(members, conc int) {
	if o.Members <= 0 {
		o.Members = members
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Concurrency <= 0 {
		o.Concurrency = conc
	}
	if o.Reference == "" {
		o.Reference = "auto"
	}
	if o.Sink == "" {
		o.Sink = "auto"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}
