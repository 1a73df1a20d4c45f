package daemon

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// RuntimeConfig tunes the Go runtime of `notifyd serve`.
//
// A trigger waits for every collection's concurrent mark on a host whose
// cores it shares with the data store and Redis; the daemon's live heap is
// small (tens of MiB), so collecting when it has grown 4× instead of 2×
// cuts the number of collections by about four at little memory, and the
// soft memory limit makes the collector work harder only when the heap
// nears what the host (or container) can give.
type RuntimeConfig struct {
	// GCPercent is GOGC: heap growth, in percent of the live heap, that
	// triggers a collection. 0 means the default (400); -1 turns the
	// proportional trigger off (memory_limit must then be set).
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimit is the Go runtime's soft memory limit (GOMEMLIMIT): bytes,
	// or a number with a KiB, MiB or GiB suffix; "none" for no limit. Empty
	// means 90% of the container's cgroup memory.max when there is one.
	MemoryLimit string `yaml:"memory_limit"`
}

// DefaultGCPercent is RuntimeConfig.GCPercent's default.
const DefaultGCPercent = 400

// RuntimeSettings are what ApplyRuntime set, for the start-up log.
type RuntimeSettings struct {
	GCPercent   int
	MemoryLimit int64  // math.MaxInt64: none
	Source      string // "config", "environment" or "default", per setting
}

func (c RuntimeConfig) validate() ConfigErrors {
	var errs ConfigErrors
	if c.GCPercent < -1 {
		errs = append(errs, &ConfigError{Path: "runtime.gc_percent", Msg: fmt.Sprintf("%d: want a percentage ≥ 1, 0 for the default or -1 for off", c.GCPercent)})
	}
	limit, err := parseMemoryLimit(c.MemoryLimit)
	if err != nil {
		errs = append(errs, &ConfigError{Path: "runtime.memory_limit", Msg: err.Error()})
	}
	if c.GCPercent == -1 && (c.MemoryLimit == "" || limit == math.MaxInt64) {
		errs = append(errs, &ConfigError{Path: "runtime.gc_percent", Msg: "-1 (off) needs runtime.memory_limit, or the heap grows without bound"})
	}
	return errs
}

// parseMemoryLimit reads "", "none", "123", "512MiB", "2GiB" or "64KiB".
// "" and "none" give math.MaxInt64 (no limit).
func parseMemoryLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	orig := s
	if s == "" || s == "none" {
		return math.MaxInt64, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q: want a positive size such as 1536MiB or 2GiB, or none", orig)
	}
	return n * mult, nil
}

// ApplyRuntime sets the collector from c. GOGC and GOMEMLIMIT in the
// environment win over the config, as they do for any Go program, so an
// operator can override both without editing it. cgroupMax returns the
// container's memory limit, if any (CgroupMemoryMax on Linux).
func ApplyRuntime(c RuntimeConfig, getenv func(string) string, cgroupMax func() (int64, bool)) (RuntimeSettings, error) {
	var set RuntimeSettings
	var src []string
	switch {
	case getenv("GOGC") != "":
		set.GCPercent = debug.SetGCPercent(-1)
		debug.SetGCPercent(set.GCPercent)
		src = append(src, "gc_percent=environment")
	case c.GCPercent != 0:
		set.GCPercent = c.GCPercent
		debug.SetGCPercent(c.GCPercent)
		src = append(src, "gc_percent=config")
	default:
		set.GCPercent = DefaultGCPercent
		debug.SetGCPercent(DefaultGCPercent)
		src = append(src, "gc_percent=default")
	}
	switch {
	case getenv("GOMEMLIMIT") != "":
		set.MemoryLimit = debug.SetMemoryLimit(-1)
		src = append(src, "memory_limit=environment")
	case c.MemoryLimit != "":
		limit, err := parseMemoryLimit(c.MemoryLimit)
		if err != nil {
			return set, fmt.Errorf("apply runtime.memory_limit: %w", err)
		}
		set.MemoryLimit = limit
		debug.SetMemoryLimit(limit)
		src = append(src, "memory_limit=config")
	default:
		set.MemoryLimit = math.MaxInt64
		if n, ok := cgroupMax(); ok {
			set.MemoryLimit = n / 10 * 9
		}
		debug.SetMemoryLimit(set.MemoryLimit)
		src = append(src, "memory_limit=default")
	}
	set.Source = strings.Join(src, ",")
	return set, nil
}

// CgroupMemoryMax reads cgroup v2's memory.max of this process's cgroup
// (mounted at /sys/fs/cgroup, as in a container): false when there is none
// or it says "max".
func CgroupMemoryMax() (int64, bool) {
	b, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}
