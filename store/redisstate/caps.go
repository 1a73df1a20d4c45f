package redisstate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
)

// capBuckets is how many hash tags the cap state is spread over: a batch
// is one script call per bucket it touches (at most capBuckets, pipelined
// per node) on a Redis Cluster, one call in all on a single node. More
// buckets spread the state over more slots; fewer make fewer calls and
// fewer, larger hashes.
const capBuckets = 64

// capSimpleMax is the most requests of one user the script takes on its
// fast path (distinct messages under every rule), to keep Go's check of
// their distinctness cheap.
const capSimpleMax = 16

// capMaxRules bounds the rules of one Admit: a request's rules travel as a
// 32-bit mask.
const capMaxRules = 30

// Frequency caps (docs/redis-keys.md, cap keys). A user's messages under
// one rule are one field of a hash shared by the users of its bucket: the
// field is the user key (8 bytes, big-endian), the value the messages
// admitted within the window, oldest first, 12 bytes each: a 6-byte hash of
// the message (scope and channel) then the admission time in server ms as
// 6 big-endian bytes.
//
// The hashes rotate per generation (server ms / window): a rule has two
// hashes per bucket, one per generation parity, each holding its
// generation number in field "g". A message admitted in generation g is
// older than the window once g+2 starts, so a user's value is read from
// the current generation's hash or else the previous one's, and a hash is
// written with PEXPIREAT at the end of the generation after its own: users
// who never come back go with their whole hash, without a key or a TTL
// each. A user's value moves to the current hash at their next admission.
//
// KEYS: per bucket in the call, per rule, the parity-0 then the parity-1
// hash. ARGV: dry ("1": write nothing), the rule count, per rule its limit
// and window ms, then the requests: per bucket a 2-byte user count, per
// user its 8-byte key and a 2-byte request count, per request the 6-byte
// message hash and a 4-byte mask of the rules that apply. A request whose
// message is within the window under every applying rule is admitted
// again without counting; otherwise it is admitted and counted when every
// applying rule has fewer than its limit within the window. Returns one
// byte per request, in order: '1' admitted, '0' capped (a string: an array
// of integers cost Redis a reply element, and the client a parse, per
// request).
const capsSrc = nowMS + `
local dry = ARGV[1] == '1'
local nr = tonumber(ARGV[2])
local blob = ARGV[3 + 2 * nr]
local limit, win, gen, since, bits = {}, {}, {}, {}, {}
local full = 2 ^ nr - 1
for j = 1, nr do
  bits[j] = 2 ^ (j - 1)
  limit[j] = tonumber(ARGV[1 + 2 * j])
  win[j] = tonumber(ARGV[2 + 2 * j])
  gen[j] = math.floor(now / win[j])
  since[j] = now - win[j]
end
local stamp
do
  local b, t = {}, now
  for i = 6, 1, -1 do
    b[i] = t % 256
    t = math.floor(t / 256)
  end
  stamp = string.char(b[1], b[2], b[3], b[4], b[5], b[6])
end
local sub, byte, find, band = string.sub, string.byte, string.find, bit.band
local CHUNK = 3000
-- mget reads fields of key (after 'g', the generation) in chunks that
-- unpack can take; vals[i] is the value of fields[i] or false.
local function mget(key, fields, n)
  if n <= CHUNK then
    local r = redis.call('HMGET', key, 'g', unpack(fields, 1, n))
    return r, tonumber(r[1]), 1
  end
  local vals, g = {}, false
  for s = 1, n, CHUNK do
    local e = math.min(s + CHUNK - 1, n)
    local r = redis.call('HMGET', key, 'g', unpack(fields, s, e))
    g = r[1]
    for i = s, e do vals[i] = r[i - s + 2] end
  end
  return vals, tonumber(g), 0
end
-- has reports whether value v holds message m at an entry boundary.
local function has(v, m)
  local s = 1
  while true do
    local i = find(v, m, s, true)
    if not i then return false end
    if (i - 1) % 12 == 0 then return true end
    s = i + 1
  end
end
-- live drops the entries at or before since from v.
local function live(v, since)
  local keep, cut = nil, false
  for p = 1, #v - 11, 12 do
    local b1, b2, b3, b4, b5, b6 = byte(v, p + 6, p + 11)
    local t = ((((b1 * 256 + b2) * 256 + b3) * 256 + b4) * 256 + b5) * 256 + b6
    if t > since then
      if cut then keep[#keep + 1] = sub(v, p, p + 11) end
    elseif not cut then
      cut = true
      keep = {}
      if p > 1 then keep[1] = sub(v, 1, p - 1) end
    end
  end
  if cut then return table.concat(keep) end
  return v
end
local out, no = {}, 0
local fields, at, cnt, simple = {}, {}, {}, {}
local v, n, moved, changed = {}, {}, {}, {}
local minlimit = math.huge
for j = 1, nr do minlimit = math.min(minlimit, limit[j]) end
local rep = '%0' .. string.gsub(stamp, '%%', '%%%%')
local pos, k = 1, 0
while pos <= #blob do
  local hi, lo = byte(blob, pos, pos + 1)
  local nu = hi * 256 + lo
  pos = pos + 2
  -- the bucket's users: their fields, and where their requests start
  local p = pos
  for u = 1, nu do
    fields[u] = sub(blob, p, p + 7)
    local h, l, f = byte(blob, p + 8, p + 10)
    local c = h * 256 + l
    at[u], cnt[u], simple[u] = p + 11, c, f == 1
    if f == 1 then p = p + 11 + 6 * c else p = p + 11 + 10 * c end
  end
  local cur, curo, curg, prev, prevo, writes, dels, nw, nd = {}, {}, {}, {}, {}, {}, {}, {}, {}
  for j = 1, nr do
    local par = gen[j] % 2
    local kc, kp = KEYS[k + 2 * j - 1 + par], KEYS[k + 2 * j - par]
    local vals, g, o = mget(kc, fields, nu)
    cur[j], curo[j], curg[j] = vals, o, g
    if g ~= gen[j] then cur[j] = {} end
    prev[j], prevo[j] = {}, 0
    if redis.call('EXISTS', kp) == 1 then
      vals, g, o = mget(kp, fields, nu)
      if g == gen[j] - 1 then prev[j], prevo[j] = vals, o end
    end
    writes[j], dels[j], nw[j], nd[j] = {}, {}, 0, 0
  end
  for u = 1, nu do
    local fresh = true
    for j = 1, nr do
      local x = cur[j][u + curo[j]]
      moved[j] = false
      if not x then
        x = prev[j][u + prevo[j]]
        moved[j] = x and true or false
      end
      if x then
        x = live(x, since[j])
        if x ~= '' then fresh = false end
      else
        x = ''
      end
      v[j], n[j], changed[j] = x, #x / 12, false
    end
    local q, c = at[u], cnt[u]
    if simple[u] and fresh then
      -- distinct messages under every rule, nothing within the windows:
      -- the first minlimit are admitted, in one string operation
      local a = math.min(c, minlimit)
      for r = 1, c do out[no + r] = r <= a and '1' or '0' end
      no = no + c
      if a > 0 then
        -- one concatenation for the usual few messages: gsub's pattern
        -- matching cost more Redis time per user than the rest of this path
        local x
        if a == 1 then
          x = sub(blob, q, q + 5) .. stamp
        elseif a == 2 then
          x = sub(blob, q, q + 5) .. stamp .. sub(blob, q + 6, q + 11) .. stamp
        elseif a == 3 then
          x = sub(blob, q, q + 5) .. stamp .. sub(blob, q + 6, q + 11) .. stamp .. sub(blob, q + 12, q + 17) .. stamp
        else
          x = string.gsub(sub(blob, q, q + 6 * a - 1), '......', rep)
        end
        for j = 1, nr do v[j], changed[j] = x, true end
      end
    else
      local mq = q + 6 * c
      for r = 1, c do
        local m = sub(blob, q, q + 5)
        q = q + 6
        local mask = full
        if not simple[u] then
          local b1, b2, b3, b4 = byte(blob, mq, mq + 3)
          mask = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
          mq = mq + 4
        end
        local seen, fits = mask > 0, true
        for j = 1, nr do
          if band(mask, bits[j]) ~= 0 then
            if seen and not has(v[j], m) then seen = false end
            if n[j] >= limit[j] then fits = false end
          end
        end
        no = no + 1
        if seen then
          out[no] = '1'
        elseif fits then
          out[no] = '1'
          for j = 1, nr do
            if band(mask, bits[j]) ~= 0 then
              v[j] = v[j] .. m .. stamp
              n[j] = n[j] + 1
              changed[j] = true
            end
          end
        else
          out[no] = '0'
        end
      end
    end
    for j = 1, nr do
      if changed[j] then
        local w, c = writes[j], nw[j]
        w[c + 1], w[c + 2], nw[j] = fields[u], v[j], c + 2
        if moved[j] then
          nd[j] = nd[j] + 1
          dels[j][nd[j]] = fields[u]
        end
      end
    end
  end
  if not dry then
    for j = 1, nr do
      local w = writes[j]
      if #w > 0 then
        local par = gen[j] % 2
        local kc, kp = KEYS[k + 2 * j - 1 + par], KEYS[k + 2 * j - par]
        if curg[j] == gen[j] then
          -- the hash of this generation exists: its g and its expiry were
          -- set by the write that made it (in the same script), so only
          -- the users are written (two commands fewer per bucket and call)
          for s = 1, #w, 2 * CHUNK do
            redis.call('HSET', kc, unpack(w, s, math.min(s + 2 * CHUNK - 1, #w)))
          end
        else
          if curg[j] then
            -- an older generation of the same parity, not yet expired
            redis.call('UNLINK', kc)
          end
          -- the generation, padded past hash-max-listpack-value (64 by
          -- default) so the hash is a hash table from its first write: a
          -- listpack of hundreds of users is searched field by field
          local gs = string.format('%-65d', gen[j])
          for s = 1, #w, 2 * CHUNK do
            redis.call('HSET', kc, 'g', gs, unpack(w, s, math.min(s + 2 * CHUNK - 1, #w)))
          end
          redis.call('PEXPIREAT', kc, string.format('%d', (gen[j] + 2) * win[j]))
        end
        local d = dels[j]
        for s = 1, #d, CHUNK do
          redis.call('HDEL', kp, unpack(d, s, math.min(s + CHUNK - 1, #d)))
        end
      end
    end
  end
  pos = p
  k = k + 2 * nr
end
return table.concat(out)
`

// Caps is the CapStore on Redis (docs/redis-keys.md: cap keys).
type Caps struct {
	s      *Store
	script *redis.Script
	pool   sync.Pool // *capCall: Admit's scratch space
}

var _ campaigns.CapStore = (*Caps)(nil)

// Caps returns the Store's CapStore.
func (s *Store) Caps() *Caps { return &Caps{s: s, script: redis.NewScript(capsSrc)} }

// capKey is <prefix>cap:{c<bucket>}:<scope>:<window ms>:<parity>.
func (s *Store) capKey(bucket uint64, scope string, window time.Duration, parity int) string {
	buf := make([]byte, 0, len(s.prefix)+40)
	buf = append(buf, s.prefix...)
	buf = append(buf, "cap:{c"...)
	buf = strconv.AppendUint(buf, bucket, 10)
	buf = append(buf, "}:"...)
	buf = append(buf, scope...)
	buf = append(buf, ':')
	buf = strconv.AppendInt(buf, ms(window), 10)
	buf = append(buf, ':')
	buf = strconv.AppendInt(buf, int64(parity), 10)
	return string(buf)
}

// capHash is a message's 6-byte identity in a user's value: FNV-1a of its
// scope and channel, so a value's size does not grow with campaign ids.
// Six bytes make a false "already admitted" (a message let through
// uncounted) about limit in 2^48 per check.
func capHash(dst []byte, msg, channel string) []byte {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(msg); i++ {
		h = (h ^ uint64(msg[i])) * prime
	}
	h *= prime // the 0 separator
	for i := 0; i < len(channel); i++ {
		h = (h ^ uint64(channel[i])) * prime
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], h)
	return append(dst, b[:6]...)
}

// capUser is one user's requests in a call, chained through capCall.next.
type capUser struct {
	key         uint64
	head, tail  int32
	n           int32
	bucketOrder int32
}

// capCall is the scratch space of one Admit, pooled: grouping a batch's
// requests must not allocate per request.
type capCall struct {
	byUser  map[uint64]int32
	users   []capUser
	next    []int32
	buckets [capBuckets][]int32 // user indexes per bucket, in first-seen order
	used    []int               // buckets with users, in first-seen order
	masks   []uint32
	blob    []byte
	idx     []int
}

func (cc *capCall) reset(nreq int) {
	clear(cc.byUser)
	cc.users = cc.users[:0]
	cc.next = slices32(cc.next, nreq)
	for _, b := range cc.used {
		cc.buckets[b] = cc.buckets[b][:0]
	}
	cc.used = cc.used[:0]
	cc.idx = cc.idx[:0]
}

func slices32(s []int32, n int) []int32 {
	if cap(s) < n {
		return make([]int32, n)
	}
	return s[:n]
}

// Admit implements campaigns.CapStore.
func (c *Caps) Admit(ctx context.Context, reqs []campaigns.CapRequest, rules []campaigns.CapRule, dry bool) ([]bool, error) {
	if len(rules) > capMaxRules {
		return nil, fmt.Errorf("admit under frequency caps: %d rules, at most %d", len(rules), capMaxRules)
	}
	for _, r := range rules {
		if r.Limit < 1 || time.Duration(r.Window) < time.Millisecond {
			return nil, fmt.Errorf("admit under frequency caps: rule %+v needs a limit ≥ 1 and a window ≥ 1ms", r)
		}
	}
	out := make([]bool, len(reqs))
	if len(reqs) == 0 || len(rules) == 0 {
		for i := range out {
			out[i] = true // no rule applies: admitted, nothing counted
		}
		return out, nil
	}
	cc, _ := c.pool.Get().(*capCall)
	if cc == nil {
		cc = &capCall{byUser: map[uint64]int32{}}
	}
	defer c.pool.Put(cc)
	cc.reset(len(reqs))

	// Requests are chained per user (the script reads and writes each of a
	// user's values once, so a user is one record in a call), users per
	// bucket. A user's requests keep their order.
	for i, q := range reqs {
		cc.next[i] = -1
		u, ok := cc.byUser[q.User]
		if !ok {
			u = int32(len(cc.users))
			cc.byUser[q.User] = u
			cc.users = append(cc.users, capUser{key: q.User, head: int32(i), tail: int32(i)})
			b := int(q.User % capBuckets)
			if len(cc.buckets[b]) == 0 {
				cc.used = append(cc.used, b)
			}
			cc.buckets[b] = append(cc.buckets[b], u)
		} else {
			cc.next[cc.users[u].tail] = int32(i)
			cc.users[u].tail = int32(i)
		}
		cc.users[u].n++
	}
	cc.masks = cc.masks[:0]
	full := uint32(1)<<len(rules) - 1
	for _, q := range reqs {
		var mask uint32
		for j, r := range rules {
			if r.Applies(q.Channel) {
				mask |= 1 << j
			}
		}
		cc.masks = append(cc.masks, mask)
	}

	// One call per bucket on a cluster (its keys share a slot), one call
	// for every bucket on a single node.
	flag := "0"
	if dry {
		flag = "1"
	}
	head := make([]any, 0, 3+2*len(rules))
	head = append(head, flag, len(rules))
	for _, r := range rules {
		head = append(head, r.Limit, ms(time.Duration(r.Window)))
	}
	var keys [][]string
	var args [][]any
	var bounds []int // end of each call's requests in cc.idx
	blob := cc.blob[:0]
	var ks []string
	for n, b := range cc.used {
		users := cc.buckets[b]
		if len(users) > 0xffff {
			return nil, fmt.Errorf("admit under frequency caps: %d users in one bucket, at most 65535", len(users))
		}
		for _, r := range rules {
			for parity := range 2 {
				ks = append(ks, c.s.capKey(uint64(b), r.Scope(), time.Duration(r.Window), parity))
			}
		}
		blob = binary.BigEndian.AppendUint16(blob, uint16(len(users)))
		for _, ui := range users {
			u := &cc.users[ui]
			if u.n > 0xffff {
				return nil, fmt.Errorf("admit under frequency caps: %d requests for one user, at most 65535", u.n)
			}
			blob = binary.BigEndian.AppendUint64(blob, u.key)
			blob = binary.BigEndian.AppendUint16(blob, uint16(u.n))
			flags := len(blob)
			blob = append(blob, 1)
			start := len(blob)
			simple := u.n <= capSimpleMax
			for i := u.head; i >= 0; i = cc.next[i] {
				blob = capHash(blob, reqs[i].Msg, reqs[i].Channel)
				simple = simple && cc.masks[i] == full
				cc.idx = append(cc.idx, int(i))
			}
			for a := start; simple && a < len(blob); a += 6 {
				for b := a + 6; simple && b < len(blob); b += 6 {
					simple = string(blob[a:a+6]) != string(blob[b:b+6])
				}
			}
			if !simple {
				blob[flags] = 0
				for i := u.head; i >= 0; i = cc.next[i] {
					blob = binary.BigEndian.AppendUint32(blob, cc.masks[i])
				}
			}
		}
		if c.s.cluster || n == len(cc.used)-1 {
			keys = append(keys, ks)
			args = append(args, append(head[:len(head):len(head)], string(blob)))
			bounds = append(bounds, len(cc.idx))
			blob, ks = blob[:0], nil
		}
	}
	cc.blob = blob
	cmds, err := c.run(ctx, keys, args)
	if err != nil {
		return nil, fmt.Errorf("admit under frequency caps: %w", err)
	}
	start := 0
	for ci, cmd := range cmds {
		idx := cc.idx[start:bounds[ci]]
		start = bounds[ci]
		codes, err := cmd.Text()
		if err != nil || len(codes) != len(idx) {
			return nil, fmt.Errorf("admit under frequency caps: unexpected reply %.40q (%d bytes for %d requests): %w", codes, len(codes), len(idx), err)
		}
		for j := range len(codes) {
			out[idx[j]] = codes[j] == '1'
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

// Usage is what the cap hashes hold in Redis (MEMORY USAGE, every field
// counted) and the users they keep values for (a user under two rules
// counts twice), for the fan-out benchmark's bytes per capped user.
func (c *Caps) Usage(ctx context.Context) (bytes, users int64, err error) {
	var mu sync.Mutex
	node := func(ctx context.Context, n redis.UniversalClient) error {
		iter := n.Scan(ctx, 0, c.s.prefix+"cap:*", 1000).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			size, err := n.MemoryUsage(ctx, k, 0).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			fields, err := n.HLen(ctx, k).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			bytes += size
			users += max(fields-1, 0) // the generation field "g"
			mu.Unlock()
		}
		return iter.Err()
	}
	if cc, ok := c.s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return node(ctx, n) })
	} else {
		err = node(ctx, c.s.rdb)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("measure cap state: %w", err)
	}
	return bytes, users, nil
}
