package channels

import (
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// Lane is a priority class. A worker always serves the lowest-numbered lane
// that has a message it may send; within a lane it goes round-robin across
// campaigns.
type Lane uint8

const (
	// LaneHigh is for triggers and transactional messages.
	LaneHigh Lane = iota
	// LaneNormal is for campaigns.
	LaneNormal

	// NumLanes is the number of lanes.
	NumLanes = 2
)

func (l Lane) String() string {
	switch l {
	case LaneHigh:
		return "high"
	case LaneNormal:
		return "normal"
	}
	return fmt.Sprintf("lane(%d)", uint8(l))
}

// item is one message owned by the pool, stored by value so queueing
// allocates nothing per message. Times are Unix nanoseconds of the pool's
// clock: 40 bytes instead of 72 with two time.Time, which the queue copies.
type item struct {
	msg       *Message
	last      *Error // last transient error, for the final outcome
	submitted int64
	readyAt   int64 // retry heap only
	sentAt    int64 // start of the last Send that carried it (Unix ns), 0 before the first
	attempts  int32
	lane      Lane
}

// fifo is a growable ring buffer of items.
type fifo struct {
	buf  []item
	head int
	n    int
}

func (f *fifo) push(it item) {
	if f.n == len(f.buf) {
		size := max(8, 2*len(f.buf))
		buf := make([]item, size)
		for i := 0; i < f.n; i++ {
			buf[i] = f.buf[(f.head+i)&(len(f.buf)-1)]
		}
		f.buf, f.head = buf, 0
	}
	f.buf[(f.head+f.n)&(len(f.buf)-1)] = it
	f.n++
}

func (f *fifo) pop() item {
	it := f.buf[f.head]
	f.buf[f.head] = item{} // let the message be collected
	f.head = (f.head + 1) & (len(f.buf) - 1)
	f.n--
	return it
}

func (f *fifo) front() *item { return &f.buf[f.head] }

// campaignQueue holds one campaign's ready messages in one lane.
type campaignQueue struct {
	id          string
	items       fifo
	limiter     *rate.Limiter
	parkedUntil time.Time // rate-limited: skipped until then
	active      bool      // in its lane's round-robin ring
}

// lane is one priority class: campaigns with ready messages, served round-robin.
type lane struct {
	byID   map[string]*campaignQueue
	ring   []*campaignQueue
	next   int
	queued int
}

// retryHeap is a min-heap of items by readyAt. Typed rather than
// container/heap so pushing an item does not box it.
type retryHeap []item

func (h *retryHeap) push(it item) {
	*h = append(*h, it)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if s[i].readyAt >= s[p].readyAt {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *retryHeap) pop() item {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = item{}
	s = s[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s[l].readyAt < s[m].readyAt {
			m = l
		}
		if r < len(s) && s[r].readyAt < s[m].readyAt {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}
