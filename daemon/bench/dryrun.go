package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/daemon"
	"github.com/notifyd/notifyd/store/memstate"
	"github.com/notifyd/notifyd/store/shard"
)

// DryRunOptions configure the dry-run benchmark.
type DryRunOptions struct {
	Members  int // segment size (default 1,000,000)
	Sample   int // previews (default 3)
	Rounds   int // dry runs in a row (default 3); the report has each
	CacheDir string
	Out      io.Writer
}

// DryRunResult is what the dry-run benchmark measured.
type DryRunResult struct {
	Members  int64
	Messages int64 // counted in the audience, every reason
	Elapsed  []time.Duration
	Audience map[string]map[string]int64
	Procs    int
}

// refuser is a Dispatcher that has every channel and sends nothing: a dry
// run must never dispatch, and would fail loudly here if it did.
type refuser struct{}

func (refuser) Dispatch(context.Context, string, channels.Lane, []*channels.Message) (int, error) {
	return 0, errors.New("a dry run dispatched a message")
}
func (refuser) Throttle(string, float64) {}
func (refuser) Has(string) bool          { return true }

// DryRun dry-runs the fan-out benchmark's campaign (push + email + webhook,
// every member rendered) over a shard of opts.Members, the way
// POST /v1/campaigns?dry_run=true does.
func DryRun(ctx context.Context, opts DryRunOptions) (*DryRunResult, error) {
	if opts.Members <= 0 {
		opts.Members = 1_000_000
	}
	if opts.Rounds <= 0 {
		opts.Rounds = 3
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	path, err := cachedShard(opts.CacheDir, opts.Members, opts.Out)
	if err != nil {
		return nil, err
	}
	store, err := shard.OpenStore(path)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	state := memstate.New()
	engine := campaigns.NewEngine(state, state, daemon.NewShardSource(store), refuser{},
		campaigns.EngineConfig{Owner: "bench", BatchSize: 2000}, campaigns.WithEngineLogger(slog.New(slog.DiscardHandler)))
	defer engine.Close(context.WithoutCancel(ctx))
	res := &DryRunResult{Procs: runtime.GOMAXPROCS(0)}
	id := "dryrun-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	for range opts.Rounds {
		start := time.Now()
		rep, err := engine.DryRun(ctx, []byte(fmt.Sprintf(fanoutCampaign, id)), campaigns.DryRunOptions{Sample: opts.Sample})
		if err != nil {
			return nil, err
		}
		res.Elapsed = append(res.Elapsed, time.Since(start))
		if !rep.OK {
			return nil, fmt.Errorf("the benchmark campaign would be refused: %+v", rep.Errors)
		}
		res.Members, res.Audience = rep.Members, rep.Audience
		res.Messages = 0
		for _, m := range rep.Audience {
			for _, n := range m {
				res.Messages += n
			}
		}
		fmt.Fprintf(opts.Out, "dry run: %d members, %d messages counted, %d previews in %s\n", rep.Members, res.Messages, len(rep.Previews), res.Elapsed[len(res.Elapsed)-1].Round(time.Millisecond))
	}
	return res, nil
}
