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

// Frequency caps. One string per (user, rule) holds the messages admitted
// within the rule's window: 14-byte entries, an 8-byte message hash then
// the admission time in ms as 6 big-endian bytes (3 entries fit Redis's
// 44-byte embedded strings). KEYS: per user, one key per rule, users in
// order. ARGV: dry ("1": write nothing), user count, then per user: its
// rule count, per rule the limit and window ms, its request count, and per
// request the message hash and a bitmask of the rules that apply. A
// request whose message is in every applying set within the window is
// admitted again without counting; otherwise it is admitted and added when
// every applying set has fewer than limit entries within the window.
// Returns 1 (admitted) or 0 (capped) per request, in order.
const capsSrc = nowMS + `
local dry = ARGV[1] == '1'
local nu = tonumber(ARGV[2])
local a, k = 3, 1
local out = {}
local function enc(t)
  local b = {}
  for i = 6, 1, -1 do
    b[i] = t % 256
    t = math.floor(t / 256)
  end
  return string.char(b[1], b[2], b[3], b[4], b[5], b[6])
end
for u = 1, nu do
  local nk = tonumber(ARGV[a])
  a = a + 1
  local sets = {}
  for j = 1, nk do
    local limit, win = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    a = a + 2
    local key = KEYS[k]
    k = k + 1
    local v = redis.call('GET', key) or ''
    local st = {key = key, limit = limit, win = win, has = {}, keep = {}, n = 0}
    local since = now - win
    for p = 1, #v - 13, 14 do
      local b1, b2, b3, b4, b5, b6 = string.byte(v, p + 8, p + 13)
      local t = ((((b1 * 256 + b2) * 256 + b3) * 256 + b4) * 256 + b5) * 256 + b6
      if t > since then
        local e = string.sub(v, p, p + 13)
        st.has[string.sub(e, 1, 8)] = true
        st.n = st.n + 1
        st.keep[st.n] = e
      end
    end
    sets[j] = st
  end
  local nr = tonumber(ARGV[a])
  a = a + 1
  for r = 1, nr do
    local m, mask = ARGV[a], tonumber(ARGV[a + 1])
    a = a + 2
    local seen, fits = mask > 0, true
    for j = 1, nk do
      if bit.band(mask, bit.lshift(1, j - 1)) ~= 0 then
        local st = sets[j]
        if not st.has[m] then seen = false end
        if st.n >= st.limit then fits = false end
      end
    end
    if seen then
      out[#out + 1] = 1
    elseif fits then
      out[#out + 1] = 1
      local e = m .. enc(now)
      for j = 1, nk do
        if bit.band(mask, bit.lshift(1, j - 1)) ~= 0 then
          local st = sets[j]
          st.has[m] = true
          st.n = st.n + 1
          st.keep[st.n] = e
          st.added = true
        end
      end
    else
      out[#out + 1] = 0
    end
  end
  if not dry then
    for j = 1, nk do
      local st = sets[j]
      if st.added then
        redis.call('SET', st.key, table.concat(st.keep), 'PX', st.win)
      end
    end
  end
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

// capKey is <prefix>cap:{c<bucket>}:<user hex>:<scope>:<window ms>.
func (s *Store) capKey(buf []byte, user uint64, scope string, window time.Duration) []byte {
	buf = append(buf, s.prefix...)
	buf = append(buf, "cap:{c"...)
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
	if len(rules) > 30 {
		return nil, fmt.Errorf("admit under frequency caps: %d rules, at most 30", len(rules))
	}
	for _, r := range rules {
		if r.Limit < 1 || time.Duration(r.Window) < time.Millisecond {
			return nil, fmt.Errorf("admit under frequency caps: rule %+v needs a limit ≥ 1 and a window ≥ 1ms", r)
		}
	}
	out := make([]bool, len(reqs))
	if len(reqs) == 0 {
		return out, nil
	}
	// Requests are grouped per user (the script reads and writes each of a
	// user's sets once), users per call: one call on a single node, one per
	// tag bucket on a cluster. A user's requests keep their order.
	type user struct {
		reqs []int
	}
	type group struct {
		users []uint64
		byKey map[uint64]*user
		idx   []int // request indexes in reply order
	}
	flag := "0"
	if dry {
		flag = "1"
	}
	var groups []*group
	byBucket := map[uint64]*group{}
	for i, q := range reqs {
		b := uint64(0)
		if c.s.cluster {
			b = q.User % capBuckets
		}
		g := byBucket[b]
		if g == nil {
			g = &group{byKey: map[uint64]*user{}}
			byBucket[b] = g
			groups = append(groups, g)
		}
		u := g.byKey[q.User]
		if u == nil {
			u = &user{}
			g.byKey[q.User] = u
			g.users = append(g.users, q.User)
		}
		u.reqs = append(u.reqs, i)
	}
	keys := make([][]string, len(groups))
	args := make([][]any, len(groups))
	var buf []byte
	for gi, g := range groups {
		a := []any{flag, len(g.users)}
		var ks []string
		for _, uk := range g.users {
			u := g.byKey[uk]
			a = append(a, len(rules))
			for _, r := range rules {
				buf = c.s.capKey(buf[:0], uk, r.Scope(), time.Duration(r.Window))
				ks = append(ks, string(buf))
				a = append(a, r.Limit, ms(time.Duration(r.Window)))
			}
			a = append(a, len(u.reqs))
			for _, i := range u.reqs {
				q := reqs[i]
				mask := 0
				for j, r := range rules {
					if r.Applies(q.Channel) {
						mask |= 1 << j
					}
				}
				a = append(a, capMember(q.Msg, q.Channel), mask)
				g.idx = append(g.idx, i)
			}
		}
		keys[gi], args[gi] = ks, a
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
