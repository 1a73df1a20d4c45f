package redisstate

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
)

// capBuckets is how many hash tags the cap keys are spread over: a batch
// is one script call per bucket it touches (at most capBuckets, pipelined
// per node) on a Redis Cluster, one call in all on a single node. More
// buckets spread the keys over more slots; fewer make fewer calls.
const capBuckets = 64

// Frequency caps. KEYS: one sorted set per (user, rule), in request order.
// ARGV: dry ("1": write nothing), request count, then per request its
// message member, its key count, and per key the limit and window ms.
// A set holds the messages admitted within the window, scored by the ms
// they were admitted at. A request whose member is in every one of its
// sets within the window is admitted again without counting; otherwise it
// is admitted and added when each set has fewer than limit members within
// the window. Returns 1 (admitted) or 0 (capped) per request.
const capsSrc = nowMS + `
local dry = ARGV[1] == '1'
local n = tonumber(ARGV[2])
local a, k = 3, 1
local pend = {}
local out = {}
for i = 1, n do
  local member, nk = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local seen, fits = nk > 0, true
  for j = 0, nk - 1 do
    local key, limit, win = KEYS[k + j], tonumber(ARGV[a + 2 * j]), tonumber(ARGV[a + 2 * j + 1])
    local since = now - win
    local sc = redis.call('ZSCORE', key, member)
    if not sc or tonumber(sc) <= since then seen = false end
    local c = redis.call('ZCOUNT', key, '(' .. since, '+inf') + (pend[key] or 0)
    if c >= limit then fits = false end
  end
  if seen then
    out[i] = 1
  elseif fits then
    out[i] = 1
    for j = 0, nk - 1 do
      local key, win = KEYS[k + j], tonumber(ARGV[a + 2 * j + 1])
      if dry then
        pend[key] = (pend[key] or 0) + 1
      else
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
        redis.call('ZADD', key, now, member)
        redis.call('PEXPIRE', key, win)
      end
    end
  else
    out[i] = 0
  end
  a, k = a + 2 * nk, k + nk
end
return out
`

// Caps is the CapStore on Redis (docs/redis-keys.md: cap keys).
type Caps struct {
	s      *Store
	script *redis.Script
}

var _ campaigns.CapStore = (*Caps)(nil)

// Caps returns the Store's CapStore.
func (s *Store) Caps() *Caps { return &Caps{s: s, script: redis.NewScript(capsSrc)} }

// capKey is <prefix>cap:{cap:<bucket>}:<user hex>:<scope>:<window ms>.
func (s *Store) capKey(buf []byte, user uint64, scope string, window time.Duration) []byte {
	buf = append(buf, s.prefix...)
	buf = append(buf, "cap:{cap:"...)
	buf = strconv.AppendUint(buf, user%capBuckets, 10)
	buf = append(buf, "}:"...)
	buf = strconv.AppendUint(buf, user, 16)
	buf = append(buf, ':')
	buf = append(buf, scope...)
	buf = append(buf, ':')
	return strconv.AppendInt(buf, ms(window), 10)
}

// capMember is a message's 8-byte identity in a cap set: a hash of its
// scope and channel, so a set's size does not grow with campaign ids.
func capMember(msg, channel string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(msg))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(channel))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], h.Sum64())
	return string(b[:])
}

// Admit implements campaigns.CapStore.
func (c *Caps) Admit(ctx context.Context, reqs []campaigns.CapRequest, rules []campaigns.CapRule, dry bool) ([]bool, error) {
	for _, r := range rules {
		if r.Limit < 1 || time.Duration(r.Window) < time.Millisecond {
			return nil, fmt.Errorf("admit under frequency caps: rule %+v needs a limit ≥ 1 and a window ≥ 1ms", r)
		}
	}
	out := make([]bool, len(reqs))
	if len(reqs) == 0 {
		return out, nil
	}
	type group struct {
		keys []string
		args []any
		idx  []int
	}
	flag := "0"
	if dry {
		flag = "1"
	}
	var groups []*group
	byBucket := map[uint64]*group{}
	var buf []byte
	for i, q := range reqs {
		b := uint64(0)
		if c.s.cluster {
			b = q.User % capBuckets
		}
		g := byBucket[b]
		if g == nil {
			g = &group{args: []any{flag, 0}}
			byBucket[b] = g
			groups = append(groups, g)
		}
		nk := 0
		at := len(g.args)
		g.args = append(g.args, capMember(q.Msg, q.Channel), 0)
		for _, r := range rules {
			if !r.Applies(q.Channel) {
				continue
			}
			buf = c.s.capKey(buf[:0], q.User, r.Scope(), time.Duration(r.Window))
			g.keys = append(g.keys, string(buf))
			g.args = append(g.args, r.Limit, ms(time.Duration(r.Window)))
			nk++
		}
		g.args[at+1] = nk
		g.idx = append(g.idx, i)
	}
	keys := make([][]string, len(groups))
	args := make([][]any, len(groups))
	for i, g := range groups {
		g.args[1] = len(g.idx)
		keys[i], args[i] = g.keys, g.args
	}
	cmds, err := c.run(ctx, keys, args)
	if err != nil {
		return nil, fmt.Errorf("admit under frequency caps: %w", err)
	}
	for gi, cmd := range cmds {
		codes, err := cmd.Int64Slice()
		if err != nil || len(codes) != len(groups[gi].idx) {
			return nil, fmt.Errorf("admit under frequency caps: unexpected reply %v: %w", cmd.Val(), err)
		}
		for j, code := range codes {
			out[groups[gi].idx[j]] = code == 1
		}
	}
	return out, nil
}

// run runs the script once per group in one pipeline (one per node on a
// cluster client), like Store.runGrouped but with arguments per group.
func (c *Caps) run(ctx context.Context, keys [][]string, args [][]any) ([]*redis.Cmd, error) {
	if len(keys) == 1 {
		cmd := c.script.Run(ctx, c.s.rdb, keys[0], args[0]...)
		return []*redis.Cmd{cmd}, cmd.Err()
	}
	pipe := c.s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(keys))
	for i := range keys {
		cmds[i] = c.script.EvalSha(ctx, pipe, keys[i], args[i]...)
	}
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			cmds[i] = c.script.Run(ctx, c.s.rdb, keys[i], args[i]...) // not executed: safe to run
		}
	}
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			return cmds, err
		}
	}
	return cmds, nil
}
