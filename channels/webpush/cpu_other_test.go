//go:build !unix

package webpush_test

import "time"

// processCPU is unavailable here; benchmarks then report 0 CPU per message.
func processCPU() time.Duration { return 0 }
