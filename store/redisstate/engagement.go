package redisstate

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
)

// engagementSrc counts a campaign's engagement events. KEYS[1] is the
// counts hash, KEYS[2] the per-message dedup hash (both under the
// campaign's tag); ARGV is pairs of dedup field and count field. Every
// event adds to "<count field>:all"; the first of its message and event
// adds to "<count field>".
const engagementSrc = `
local n = 0
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i+1] .. ':all', 1)
  if redis.call('HSETNX', KEYS[2], ARGV[i], '') == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[i+1], 1)
    n = n + 1
  end
end
return n
`

var engagementScript = redis.NewScript(engagementSrc)

var _ campaigns.EngagementLog = (*Store)(nil)

// CountEngagement implements campaigns.EngagementLog: one script call per
// batch, on the campaign's slot.
func (s *Store) CountEngagement(ctx context.Context, campaign string, evs []campaigns.Engagement) error {
	if len(evs) == 0 {
		return nil
	}
	args := make([]any, 0, 2*len(evs))
	for _, e := range evs {
		args = append(args, engagementDedupField(e), e.Channel+":"+e.Event)
	}
	keys := []string{s.campaignKey(campaign, "eng"), s.campaignKey(campaign, "engd")}
	if err := engagementScript.Run(ctx, s.rdb, keys, args...).Err(); err != nil {
		return fmt.Errorf("count engagement of %s: %w", campaign, err)
	}
	return nil
}

// engagementDedupField is the first 8 bytes of SHA-256 of the message id
// followed by the event: 64 bits keep collisions out of reach of any
// campaign's size at a third of the id's bytes.
func engagementDedupField(e campaigns.Engagement) string {
	sum := sha256.Sum256([]byte(e.MessageID))
	return string(sum[:8]) + e.Event
}

// EngagementCounts implements campaigns.EngagementLog.
func (s *Store) EngagementCounts(ctx context.Context, campaign string) ([]campaigns.Count, error) {
	m, err := s.rdb.HGetAll(ctx, s.campaignKey(campaign, "eng")).Result()
	if err != nil {
		return nil, fmt.Errorf("read engagement of %s: %w", campaign, err)
	}
	out := make([]campaigns.Count, 0, len(m))
	for k, v := range m {
		ch, ev, ok := strings.Cut(k, ":")
		if !ok {
			continue
		}
		if e, all := strings.CutSuffix(ev, ":all"); all {
			ev = e + "_total"
		}
		var n int64
		if _, err := fmt.Sscan(v, &n); err != nil {
			return nil, fmt.Errorf("read engagement of %s: field %s: %w", campaign, k, err)
		}
		out = append(out, campaigns.Count{Channel: ch, Reason: ev, N: n})
	}
	return out, nil
}
