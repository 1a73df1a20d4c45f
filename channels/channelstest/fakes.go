package channelstest

import (
	"context"
	"sync"

	"github.com/notifyd/notifyd/channels"
)

// FuncChannel is a Channel made of a function, for one-off fakes.
type FuncChannel struct {
	ChannelName string
	SendFunc    func(ctx context.Context, batch []*channels.Message) []channels.Result
}

var _ channels.Channel = (*FuncChannel)(nil)

// Name returns ChannelName.
func (f *FuncChannel) Name() string { return f.ChannelName }

// Send calls SendFunc.
func (f *FuncChannel) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	return f.SendFunc(ctx, batch)
}

// Noop is a Channel that accepts everything instantly and allocates nothing,
// to measure what the pool itself costs.
type Noop struct {
	ChannelName string
	results     []channels.Result
}

// NewNoop returns a Noop answering batches of up to maxBatch without allocating.
func NewNoop(name string, maxBatch int) *Noop {
	return &Noop{ChannelName: name, results: make([]channels.Result, maxBatch)}
}

// Name returns ChannelName.
func (n *Noop) Name() string { return n.ChannelName }

// Send accepts the batch. The returned slice is shared and read-only.
func (n *Noop) Send(_ context.Context, batch []*channels.Message) []channels.Result {
	if len(batch) <= len(n.results) {
		return n.results[:len(batch)]
	}
	return make([]channels.Result, len(batch))
}

// Answer is one scripted reply to one message.
type Answer struct {
	ProviderID string
	Err        error
	// Block makes Send wait for ctx's end and answer ctx.Err(), like a
	// provider that never replies.
	Block bool
}

// Scripted is a Channel answering per address from a script and counting
// everything: what a test of the pool, or of anything above it, needs.
// Each Send of an address consumes its next answer; the last one repeats.
// Addresses without a script are accepted.
type Scripted struct {
	ChannelName string

	mu       sync.Mutex
	script   map[string][]Answer
	attempts map[string]int
	sent     []*channels.Message
	batches  []int
	hook     func(batch []*channels.Message)
}

var _ channels.Channel = (*Scripted)(nil)

// NewScripted returns an empty script for a channel called name.
func NewScripted(name string) *Scripted {
	return &Scripted{ChannelName: name, script: map[string][]Answer{}, attempts: map[string]int{}}
}

// Script sets the answers for address.
func (s *Scripted) Script(address string, answers ...Answer) *Scripted {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script[address] = answers
	return s
}

// OnSend calls hook with every batch before answering it (under no lock of
// the pool; keep it quick).
func (s *Scripted) OnSend(hook func(batch []*channels.Message)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = hook
}

// Name returns ChannelName.
func (s *Scripted) Name() string { return s.ChannelName }

// Send answers from the script.
func (s *Scripted) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	out := make([]channels.Result, len(batch))
	block := false
	s.mu.Lock()
	hook := s.hook
	s.batches = append(s.batches, len(batch))
	for i, m := range batch {
		addr := address(m)
		n := s.attempts[addr]
		s.attempts[addr] = n + 1
		s.sent = append(s.sent, m)
		answers := s.script[addr]
		if len(answers) == 0 {
			out[i] = channels.Result{ProviderID: "id-" + m.ID}
			continue
		}
		a := answers[min(n, len(answers)-1)]
		if a.Block {
			block = true
			continue
		}
		out[i] = channels.Result{ProviderID: a.ProviderID, Err: a.Err}
	}
	s.mu.Unlock()
	if hook != nil {
		hook(batch)
	}
	if block {
		<-ctx.Done()
		for i := range out {
			if out[i].Err == nil && out[i].ProviderID == "" {
				out[i].Err = ctx.Err()
			}
		}
	}
	return out
}

// Attempts is how many times address was sent.
func (s *Scripted) Attempts(address string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[address]
}

// Sent returns every message sent, in order (a message once per attempt).
func (s *Scripted) Sent() []*channels.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*channels.Message(nil), s.sent...)
}

// SentCount is len(Sent()) without the copy.
func (s *Scripted) SentCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

// Batches returns the size of every Send call, in order.
func (s *Scripted) Batches() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.batches...)
}

func address(m *channels.Message) string {
	if m.To == "" && m.Subscription != nil {
		return m.Subscription.Endpoint
	}
	return m.To
}
