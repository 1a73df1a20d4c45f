package sandbox

import (
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is an injected failure for addresses matching Match.
type Fault struct {
	// Match is a path.Match glob ("dead-*", "*@bounce.test") tested against the
	// address (device token, email, phone, endpoint, webhook path); a pattern
	// without glob characters matches as a substring.
	Match string
	// Status is the HTTP status (or SMTP reply code for the SMTP fake) to answer with.
	Status int
	// Reason is the provider's own reason/code: APNs "BadDeviceToken", FCM
	// "UNREGISTERED", Twilio "21211", SMTP enhanced text.
	Reason string
	// RetryAfter is sent as a Retry-After header when non-zero.
	RetryAfter time.Duration
	// Latency delays the answer.
	Latency time.Duration
	// Drop closes the connection without answering.
	Drop bool
	// Times limits how many requests the fault applies to; 0 means always.
	Times int
}

type fault struct {
	Fault
	used atomic.Int64
}

// Faults is a concurrency-safe list of faults; the first match wins.
type Faults struct {
	mu   sync.RWMutex
	list []*fault
}

// Add installs a fault.
func (fs *Faults) Add(f Fault) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.list = append(fs.list, &fault{Fault: f})
}

// Clear removes every fault.
func (fs *Faults) Clear() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.list = nil
}

// Match returns the first fault whose pattern matches addr and has uses left.
func (fs *Faults) Match(addr string) *Fault {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	for _, f := range fs.list {
		if !matches(f.Match, addr) {
			continue
		}
		if f.Times > 0 && f.used.Add(1) > int64(f.Times) {
			continue
		}
		return &f.Fault
	}
	return nil
}

func matches(pattern, addr string) bool {
	if pattern == "" {
		return true
	}
	if strings.ContainsAny(pattern, "*?[") {
		ok, err := path.Match(pattern, addr)
		return err == nil && ok
	}
	return strings.Contains(addr, pattern)
}

// Received is one request a fake accepted or answered.
type Received struct {
	Provider string
	Address  string
	Headers  map[string]string
	Body     []byte
	Status   int
	At       time.Time
}

// Recorder keeps the last Limit received requests and counts all of them.
// A zero Limit keeps 10,000; a negative one keeps none (counting only), so a
// benchmark does not measure the recorder.
type Recorder struct {
	Limit int

	observe atomic.Pointer[func(Received)]

	mu    sync.Mutex
	items []Received
	total atomic.Int64
}

// Add records one request.
func (r *Recorder) Add(rec Received) {
	r.total.Add(1)
	if f := r.observe.Load(); f != nil {
		(*f)(rec)
	}
	limit := r.Limit
	if limit < 0 {
		return
	}
	if limit == 0 {
		limit = 10000
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.items) >= limit {
		copy(r.items, r.items[1:])
		r.items = r.items[:len(r.items)-1]
	}
	r.items = append(r.items, rec)
}

// SetObserver makes f see every request as it is recorded, whatever the
// Limit keeps, so a caller can tally all of them without holding them (nil
// stops it). It is safe to call while the fake serves.
func (r *Recorder) SetObserver(f func(Received)) {
	if f == nil {
		r.observe.Store(nil)
		return
	}
	r.observe.Store(&f)
}

// Count is how many requests were recorded since the last Reset.
func (r *Recorder) Count() int { return int(r.total.Load()) }

// All returns a copy of the kept requests, oldest first.
func (r *Recorder) All() []Received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Received(nil), r.items...)
}

// Reset forgets everything recorded.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items = nil
	r.total.Store(0)
}
