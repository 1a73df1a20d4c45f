//go:build unix

package webpush_test

import (
	"syscall"
	"time"
)

// processCPU is user+system CPU of this process so far: benchmarks report
// CPU per message, which a loaded shared machine does not inflate the way
// it inflates wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
