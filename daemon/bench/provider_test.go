package bench

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The provider benchmarks re-execute this test binary as their sink.
	ServeSinkIfAsked()
	os.Exit(m.Run())
}

// TestProviderBenchSmall runs `notifyd bench email` and `notifyd bench
// webhook` on a tiny shard against notifyd's own sinks (in a child process)
// and the built-in raw clients, so neither needs Postfix or h2load: every
// message the shard addresses is sent by the daemon, the reference sends as
// many, and both rates and CPU figures come out.
func TestProviderBenchSmall(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		run  func(context.Context, ProviderOptions) (*ProviderResult, error)
	}{
		{"email", Email},
		{"webhook", Webhook},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := tc.run(ctx, ProviderOptions{Members: 1500, Rounds: 3, Reference: "builtin", Sink: "go", CacheDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Rounds) != 3 {
				t.Fatalf("%d rounds, want 3", len(res.Rounds))
			}
			for i, r := range res.Rounds {
				if r.Messages == 0 || r.RefMessages != r.Messages {
					t.Errorf("round %d: notifyd sent %d, the reference %d", i, r.Messages, r.RefMessages)
				}
			}
			if res.MsgsPerSec <= 0 || res.RefPerSec <= 0 || res.Ratio <= 0 || res.CPUMicrosPerMsg <= 0 || res.RefCPUPerMsg <= 0 {
				t.Errorf("figures missing: %+v", res)
			}
		})
	}
}

func TestH2loadSummary(t *testing.T) {
	out := []byte("finished in 1.02s, 49019.61 req/s, 4.40MB/s\nrequests: 50000 total, 50000 started, 50000 done, 50000 succeeded, 0 failed, 0 errored, 0 timeout\n")
	if ok, err := h2loadSucceeded(out, 50000); !ok {
		t.Fatal(err)
	}
	out = []byte("requests: 50000 total, 50000 started, 50000 done, 49000 succeeded, 1000 failed, 0 errored, 0 timeout\n")
	if ok, _ := h2loadSucceeded(out, 50000); ok {
		t.Fatal("1,000 failed requests passed")
	}
	if ok, _ := h2loadSucceeded([]byte("connect: refused"), 1); ok {
		t.Fatal("no summary passed")
	}
}

// TestHeapAllocsCounts: the per-message allocation figure the provider
// benches print counts this process's heap objects.
func TestHeapAllocsCounts(t *testing.T) {
	const n = 100_000
	keep := make([]*[64]byte, n)
	before := heapAllocs()
	for i := range keep {
		keep[i] = new([64]byte)
	}
	got := heapAllocs() - before
	// The runtime counts small objects a span (128 of these) at a time as
	// each P's cache refills, and other goroutines allocate meanwhile: n
	// within 5%.
	if got < n-n/20 || got > n+n/20 {
		t.Fatalf("heapAllocs rose by %d over %d allocations", got, n)
	}
	if keep[n-1] == nil {
		t.Fatal("unreachable")
	}
}
