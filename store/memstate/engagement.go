package memstate

import (
	"context"
	"sync"

	"github.com/notifyd/notifyd/campaigns"
)

// engagement is one campaign's engagement counts and the messages seen
// per event. It has a lock of its own: events arrive from the tracking
// endpoint's requests, not the campaign runs.
type engagement struct {
	counts map[string]int64 // "<channel>:<event>" and "<channel>:<event>_total"
	seen   map[[2]string]struct{}
}

type engagements struct {
	mu sync.Mutex
	by map[string]*engagement
}

var _ campaigns.EngagementLog = (*Store)(nil)

// CountEngagement implements campaigns.EngagementLog.
func (s *Store) CountEngagement(_ context.Context, campaign string, evs []campaigns.Engagement) error {
	s.eng.mu.Lock()
	defer s.eng.mu.Unlock()
	if s.eng.by == nil {
		s.eng.by = map[string]*engagement{}
	}
	e := s.eng.by[campaign]
	if e == nil {
		e = &engagement{counts: map[string]int64{}, seen: map[[2]string]struct{}{}}
		s.eng.by[campaign] = e
	}
	for _, ev := range evs {
		k := ev.Channel + ":" + ev.Event
		e.counts[k+"_total"]++
		if _, dup := e.seen[[2]string{ev.MessageID, ev.Event}]; !dup {
			e.seen[[2]string{ev.MessageID, ev.Event}] = struct{}{}
			e.counts[k]++
		}
	}
	return nil
}

// EngagementCounts implements campaigns.EngagementLog.
func (s *Store) EngagementCounts(_ context.Context, campaign string) ([]campaigns.Count, error) {
	s.eng.mu.Lock()
	defer s.eng.mu.Unlock()
	e := s.eng.by[campaign]
	if e == nil {
		return nil, nil
	}
	out := make([]campaigns.Count, 0, len(e.counts))
	for k, n := range e.counts {
		for i := 0; i < len(k); i++ {
			if k[i] == ':' {
				out = append(out, campaigns.Count{Channel: k[:i], Reason: k[i+1:], N: n})
				break
			}
		}
	}
	return out, nil
}
