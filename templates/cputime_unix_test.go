//go:build unix

package templates

import (
	"syscall"
	"testing"
	"time"
)

// cpuTimer reports CPU time per operation next to wall time: the
// benchmarks run on a machine shared by several builds, where ns/op
// measures the neighbours as much as the code.
func cpuTimer(b *testing.B) func() {
	start := processCPU()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64((processCPU()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
		}
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
