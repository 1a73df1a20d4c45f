package daemon

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "", want: math.MaxInt64},
		{in: "none", want: math.MaxInt64},
		{in: "1048576", want: 1 << 20},
		{in: "512MiB", want: 512 << 20},
		{in: "2GiB", want: 2 << 30},
		{in: "64 KiB", want: 64 << 10},
		{in: "100B", want: 100},
		{in: "0", wantErr: true},
		{in: "-1GiB", wantErr: true},
		{in: "2GB", wantErr: true},
		{in: "lots", wantErr: true},
		{in: "9999999999GiB", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseMemoryLimit(tt.in)
			if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
				t.Fatalf("parseMemoryLimit(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestRuntimeConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  RuntimeConfig
		want string // substring of the only error; "" for none
	}{
		{name: "defaults", cfg: RuntimeConfig{}},
		{name: "explicit", cfg: RuntimeConfig{GCPercent: 200, MemoryLimit: "1GiB"}},
		{name: "off with a limit", cfg: RuntimeConfig{GCPercent: -1, MemoryLimit: "1GiB"}},
		{name: "off without a limit", cfg: RuntimeConfig{GCPercent: -1}, want: "runtime.gc_percent: -1 (off) needs runtime.memory_limit"},
		{name: "off with none", cfg: RuntimeConfig{GCPercent: -1, MemoryLimit: "none"}, want: "runtime.gc_percent: -1 (off) needs"},
		{name: "below -1", cfg: RuntimeConfig{GCPercent: -5}, want: "runtime.gc_percent: -5"},
		{name: "bad size", cfg: RuntimeConfig{MemoryLimit: "2GB"}, want: "runtime.memory_limit: \"2GB\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.cfg.validate()
			if tt.want == "" {
				if len(errs) != 0 {
					t.Fatalf("errors: %v", errs)
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.want) {
				t.Fatalf("errors %v; want one containing %q", errs, tt.want)
			}
		})
	}
}

func TestApplyRuntime(t *testing.T) {
	gc0, lim0 := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(gc0); debug.SetMemoryLimit(lim0) })
	noCgroup := func() (int64, bool) { return 0, false }
	cgroup := func() (int64, bool) { return 1000 << 20, true }
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	tests := []struct {
		name      string
		cfg       RuntimeConfig
		env       map[string]string
		cgroup    func() (int64, bool)
		wantGC    int
		wantLimit int64
		wantSrc   string
	}{
		{name: "defaults, no cgroup", cgroup: noCgroup, wantGC: 400, wantLimit: math.MaxInt64, wantSrc: "gc_percent=default,memory_limit=default"},
		{name: "defaults in a container", cgroup: cgroup, wantGC: 400, wantLimit: (1000 << 20) / 10 * 9, wantSrc: "gc_percent=default,memory_limit=default"},
		{name: "config", cfg: RuntimeConfig{GCPercent: 150, MemoryLimit: "256MiB"}, cgroup: cgroup, wantGC: 150, wantLimit: 256 << 20, wantSrc: "gc_percent=config,memory_limit=config"},
		{name: "config none beats the cgroup", cfg: RuntimeConfig{MemoryLimit: "none"}, cgroup: cgroup, wantGC: 400, wantLimit: math.MaxInt64, wantSrc: "memory_limit=config"},
		// The environment's values were applied by the runtime at start:
		// here that is the 100 and no-limit this test set above.
		{name: "environment wins", cfg: RuntimeConfig{GCPercent: 150, MemoryLimit: "256MiB"}, env: map[string]string{"GOGC": "100", "GOMEMLIMIT": "off"}, cgroup: cgroup, wantGC: 100, wantLimit: math.MaxInt64, wantSrc: "gc_percent=environment,memory_limit=environment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			got, err := ApplyRuntime(tt.cfg, env(tt.env), tt.cgroup)
			if err != nil {
				t.Fatal(err)
			}
			if got.GCPercent != tt.wantGC || got.MemoryLimit != tt.wantLimit || !strings.Contains(got.Source, tt.wantSrc) {
				t.Fatalf("ApplyRuntime = %+v; want gc %d, limit %d, source ~%q", got, tt.wantGC, tt.wantLimit, tt.wantSrc)
			}
			if gc := debug.SetGCPercent(100); gc != tt.wantGC {
				t.Fatalf("runtime GC percent %d, want %d", gc, tt.wantGC)
			}
			if lim := debug.SetMemoryLimit(-1); lim != tt.wantLimit {
				t.Fatalf("runtime memory limit %d, want %d", lim, tt.wantLimit)
			}
		})
	}
}
