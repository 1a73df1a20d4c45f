package redisstate

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
)

// capBucketBits is how many of a user key's top bits choose the hash tag
// (bucket) its cap state lives under: a batch is one script call per
// bucket it touches (pipelined per node) on a Redis Cluster, one call in
// all on a single node. A campaign visits users in key order, so a batch
// of consecutive keys touches one or two buckets.
const capBucketBits = 6

// DefaultCapGroupBits is how many of a user key's top bits name its group,
// the hash field the group's users share: 2^16 groups hold about 15 users
// each for a million users (docs/redis-keys.md, WithCapGroupBits).
const DefaultCapGroupBits = 16

// capSimpleMax is the most requests of one user the script takes on its
// fast path (distinct messages under every rule), to keep Go's check of
// their distinctness cheap.
const capSimpleMax = 16

// capMaxRules bounds the rules of one Admit: a request's rules travel as a
// 32-bit mask.
const capMaxRules = 30

// Frequency caps (docs/redis-keys.md, cap keys). Users are grouped by the
// top bits of their key (2^groupBits groups); a group's messages under one
// rule are one field of a hash shared by the groups of its bucket (the top
// 6 bits): a field per user cost Redis a lookup, a dict entry and two
// strings per user and batch, which was most of the caps' cost. The field
// is the group (4 bytes, big-endian), the value a list of segments in
// admission order, one per write: the server ms of the write (6 bytes), the
// length of its records (4 bytes), then per user admitted by that write its
// key (8 bytes), a count (2 bytes) and the messages' 6-byte hashes (scope
// and channel). A message's admission time is its segment's, so the
// expired entries are a prefix of segments, dropped at the next write.
//
// The hashes rotate per generation (server ms / window): a rule has two
// hashes per bucket, one per generation parity, each holding its
// generation number in field "g". A message admitted in generation g is
// older than the window once g+2 starts, so a group's value is read from
// the current generation's hash or else the previous one's, and a hash is
// written with PEXPIREAT at the end of the generation after its own: groups
// that never come back go with their whole hash, without a key or a TTL
// each. A group's value moves to the current hash at its next write.
//
// KEYS: per bucket in the call, per rule, the parity-0 then the parity-1
// hash. ARGV: dry ("1": write nothing), the rule count, per rule its limit
// and window ms, then the requests: per bucket a 2-byte group count, per
// group its 4-byte field, a flags byte, its 2-byte request count and the
// 4-byte length of its users, then per user its 8-byte key, a 2-byte
// request count, the requests' 6-byte message hashes and, unless the group
// is simple (flag 1), each request's 4-byte mask of the rules that apply.
// A simple group's users each ask for at most capSimpleMax distinct
// messages under every rule; when one asks for more than the smallest
// limit (flag 2), the group then carries the records a fresh state admits
// (4-byte length, records) and their answer (a byte per request). A simple
// group with nothing within any window is answered and written without
// looking at its users: its new segment is the write's time and what the
// client laid out. Otherwise, a request whose message is within the window
// under every applying rule is admitted again without counting; it is
// admitted and counted when every applying rule has fewer than its limit
// within the window. Returns one byte per request, in order: '1' admitted,
// '0' capped (a string: an array of integers cost Redis a reply element,
// and the client a parse, per request).
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
local sub, byte, char, rep, band, concat = string.sub, string.byte, string.char, string.rep, bit.band, table.concat
local stamp
do
  local b, t = {}, now
  for i = 6, 1, -1 do
    b[i] = t % 256
    t = math.floor(t / 256)
  end
  stamp = char(b[1], b[2], b[3], b[4], b[5], b[6])
end
local function u16(s, p)
  local a, b = byte(s, p, p + 1)
  return a * 256 + b
end
local function u32(s, p)
  local a, b, c, d = byte(s, p, p + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
local function u48(s, p)
  local a, b, c, d, e, f = byte(s, p, p + 5)
  return ((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + f
end
local function be16(n) return char(math.floor(n / 256) % 256, n % 256) end
local function be32(n)
  return char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end
local CHUNK = 3000
-- mget reads fields of key (after 'g', the generation) in chunks that
-- unpack can take; vals[i + o] is the value of fields[i] or false.
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
-- has reports whether the hashes h (6 bytes each) hold m.
local function has(h, m)
  local s = 1
  while true do
    local i = string.find(h, m, s, true)
    if not i then return false end
    if (i - 1) % 6 == 0 then return true end
    s = i + 1
  end
end
-- live drops v's segments admitted at or before since: they are in time
-- order, so the expired ones are a prefix.
local function live(v, since)
  local p, n = 1, #v
  while p <= n and u48(v, p) <= since do
    p = p + 10 + u32(v, p + 6)
  end
  if p == 1 then return v end
  return sub(v, p)
end
local out = {}
local v, moved, changed = {}, {}, {}
local gidx, gkey, gat2, gcnt, add = {}, {}, {}, {}, {}
local cnt, hs, recs, rn = {}, {}, {}, {}
for j = 1, nr do cnt[j], hs[j], recs[j] = {}, {}, {} end
local minlimit = math.huge
for j = 1, nr do minlimit = math.min(minlimit, limit[j]) end
local pos, k = 1, 0
while pos <= #blob do
  local ng = u16(blob, pos)
  pos = pos + 2
  -- the bucket's groups: their fields, and where they start in the blob
  local fields, gat = {}, {}
  local p = pos
  for g = 1, ng do
    fields[g], gat[g] = sub(blob, p, p + 3), p
    local L = u32(blob, p + 7)
    local q = p + 11 + L
    if band(byte(blob, p + 4), 2) ~= 0 then q = q + 4 + u32(blob, q) + u16(blob, p + 5) end
    p = q
  end
  local cur, curo, curg, prev, prevo, writes, dels = {}, {}, {}, {}, {}, {}, {}
  for j = 1, nr do
    local par = gen[j] % 2
    local kc, kp = KEYS[k + 2 * j - 1 + par], KEYS[k + 2 * j - par]
    local vals, g, o = mget(kc, fields, ng)
    cur[j], curo[j], curg[j] = vals, o, g
    if g ~= gen[j] then cur[j] = {} end
    prev[j], prevo[j] = {}, 0
    if redis.call('EXISTS', kp) == 1 then
      vals, g, o = mget(kp, fields, ng)
      if g == gen[j] - 1 then prev[j], prevo[j] = vals, o end
    end
    writes[j], dels[j] = {}, {}
  end
  for g = 1, ng do
    local q = gat[g]
    local flags, nreq, L = byte(blob, q + 4), u16(blob, q + 5), u32(blob, q + 7)
    local simple = band(flags, 1) ~= 0
    local fresh = true
    for j = 1, nr do
      local x = cur[j][g + curo[j]]
      moved[j] = false
      if not x then
        x = prev[j][g + prevo[j]]
        moved[j] = x and true or false
      end
      if x then
        x = live(x, since[j])
        if x ~= '' then fresh = false end
      else
        x = ''
      end
      v[j], changed[j] = x, false
    end
    if simple and fresh then
      -- nothing within any window and distinct messages under every rule:
      -- the client laid out the group's new segment, and the answer
      local seg
      if band(flags, 2) == 0 then
        out[#out + 1] = rep('1', nreq)
        seg = stamp .. sub(blob, q + 7, q + 10 + L)
      else
        local f = q + 11 + L
        local L2 = u32(blob, f)
        out[#out + 1] = sub(blob, f + 4 + L2, f + 3 + L2 + nreq)
        seg = stamp .. sub(blob, f, f + 3 + L2)
      end
      for j = 1, nr do v[j], changed[j] = seg, true end
    else
      -- the group's users in the request, then their live entries per rule
      -- (in tables reused from group to group: making and growing a dozen
      -- tables per group cost more than the work in them)
      local nu = 0
      local up, ue = q + 11, q + 11 + L
      while up < ue do
        nu = nu + 1
        local key, c = sub(blob, up, up + 7), u16(blob, up + 8)
        gidx[key], gkey[nu], gat2[nu], gcnt[nu] = nu, key, up + 10, c
        if simple then up = up + 10 + 6 * c else up = up + 10 + 10 * c end
      end
      for j = 1, nr do
        local cj, hj, x = cnt[j], hs[j], v[j]
        for u = 1, nu do cj[u], hj[u] = 0, '' end
        rn[j] = 0
        local sp, n = 1, #x
        while sp <= n do
          local rp, re = sp + 10, sp + 10 + u32(x, sp + 6)
          while rp < re do
            local c = u16(x, rp + 8)
            local u = gidx[sub(x, rp, rp + 7)]
            if u then
              cj[u] = cj[u] + c
              hj[u] = hj[u] .. sub(x, rp + 10, rp + 9 + 6 * c)
            end
            rp = rp + 10 + 6 * c
          end
          sp = re
        end
      end
      for u = 1, nu do
        local mp, c = gat2[u], gcnt[u]
        local mq = mp + 6 * c
        for j = 1, nr do add[j] = '' end
        for r = 1, c do
          local m = sub(blob, mp, mp + 5)
          mp = mp + 6
          local mask = full
          if not simple then
            mask = u32(blob, mq)
            mq = mq + 4
          end
          local seen, fits = mask > 0, true
          for j = 1, nr do
            if band(mask, bits[j]) ~= 0 then
              if seen and not has(hs[j][u], m) then seen = false end
              if cnt[j][u] >= limit[j] then fits = false end
            end
          end
          if seen then
            out[#out + 1] = '1'
          elseif fits then
            out[#out + 1] = '1'
            for j = 1, nr do
              if band(mask, bits[j]) ~= 0 then
                cnt[j][u] = cnt[j][u] + 1
                hs[j][u] = hs[j][u] .. m
                add[j] = add[j] .. m
              end
            end
          else
            out[#out + 1] = '0'
          end
        end
        for j = 1, nr do
          local a = add[j]
          if a ~= '' then
            rn[j] = rn[j] + 1
            recs[j][rn[j]] = gkey[u] .. be16(#a / 6) .. a
          end
        end
      end
      for u = 1, nu do gidx[gkey[u]] = nil end
      for j = 1, nr do
        if rn[j] > 0 then
          local body = concat(recs[j], '', 1, rn[j])
          v[j], changed[j] = v[j] .. stamp .. be32(#body) .. body, true
        end
      end
    end
    for j = 1, nr do
      if changed[j] then
        local w = writes[j]
        w[#w + 1], w[#w + 2] = fields[g], v[j]
        if moved[j] then
          local d = dels[j]
          d[#d + 1] = fields[g]
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
          -- the groups are written
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
          -- listpack of hundreds of groups is searched field by field
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
return concat(out)
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

// WithCapGroupBits sets how many top bits of a user key name its cap group
// (default DefaultCapGroupBits, 6 to 32): about users / 2^bits users share
// a hash field. Every daemon sharing the state must use the same bits (they
// are part of the keys' names); see docs/redis-keys.md for the choice.
func WithCapGroupBits(bits int) Option { return func(s *Store) { s.capGroupBits = bits } }

// capKey is <prefix>capg:{g<bucket>}:<scope>:<window ms>:<group bits>:<parity>.
func (s *Store) capKey(bucket uint64, scope string, window time.Duration, parity int) string {
	buf := make([]byte, 0, len(s.prefix)+48)
	buf = append(buf, s.prefix...)
	buf = append(buf, "capg:{g"...)
	buf = strconv.AppendUint(buf, bucket, 10)
	buf = append(buf, "}:"...)
	buf = append(buf, scope...)
	buf = append(buf, ':')
	buf = strconv.AppendInt(buf, ms(window), 10)
	buf = append(buf, ':')
	buf = strconv.AppendInt(buf, int64(s.capGroupBits), 10)
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
	key        uint64
	head, tail int32
	n          int32
}

// capCall is the scratch space of one Admit, pooled: grouping a batch's
// requests must not allocate per request.
type capCall struct {
	byUser map[uint64]int32
	users  []capUser
	order  []int32 // users by key: buckets and groups are runs of it
	next   []int32
	masks  []uint32
	blob   []byte
	idx    []int
}

func (cc *capCall) reset(nreq int) {
	clear(cc.byUser)
	cc.users = cc.users[:0]
	cc.order = cc.order[:0]
	cc.next = slices32(cc.next, nreq)
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
	minLimit := 0
	for _, r := range rules {
		if r.Limit < 1 || time.Duration(r.Window) < time.Millisecond {
			return nil, fmt.Errorf("admit under frequency caps: rule %+v needs a limit ≥ 1 and a window ≥ 1ms", r)
		}
		if minLimit == 0 || r.Limit < minLimit {
			minLimit = r.Limit
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

	// Requests are chained per user (the script reads each user's entries
	// once, so a user is one record in a call); users are sorted by key so
	// that a bucket, and a group in it, is a run of them. A user's requests
	// keep their order.
	for i, q := range reqs {
		cc.next[i] = -1
		u, ok := cc.byUser[q.User]
		if !ok {
			u = int32(len(cc.users))
			cc.byUser[q.User] = u
			cc.users = append(cc.users, capUser{key: q.User, head: int32(i), tail: int32(i)})
			cc.order = append(cc.order, u)
		} else {
			cc.next[cc.users[u].tail] = int32(i)
			cc.users[u].tail = int32(i)
		}
		cc.users[u].n++
		if cc.users[u].n > 0xffff {
			return nil, fmt.Errorf("admit under frequency caps: %d requests for one user, at most 65535", cc.users[u].n)
		}
	}
	users := cc.users
	slices.SortFunc(cc.order, func(a, b int32) int { return cmp.Compare(users[a].key, users[b].key) })
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
	groupShift := 64 - uint(c.s.capGroupBits)
	var keys [][]string
	var args [][]any
	var bounds []int // end of each call's requests in cc.idx
	blob := cc.blob[:0]
	var ks []string
	order := cc.order
	for b := 0; b < len(order); {
		bucket := users[order[b]].key >> (64 - capBucketBits)
		for _, r := range rules {
			for parity := range 2 {
				ks = append(ks, c.s.capKey(bucket, r.Scope(), time.Duration(r.Window), parity))
			}
		}
		ngAt := len(blob)
		blob = append(blob, 0, 0)
		ng := 0
		for b < len(order) && users[order[b]].key>>(64-capBucketBits) == bucket {
			group := users[order[b]].key >> groupShift
			e := b + 1
			for e < len(order) && users[order[e]].key>>groupShift == group {
				e++
			}
			if ng++; ng > 0xffff {
				return nil, fmt.Errorf("admit under frequency caps: more than 65535 groups in one bucket")
			}
			blob = c.appendGroup(blob, cc, reqs, order[b:e], uint32(group), full, minLimit)
			b = e
		}
		binary.BigEndian.PutUint16(blob[ngAt:], uint16(ng))
		if c.s.cluster || b == len(order) {
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

// appendGroup lays out one group's users (in key order) for the script and
// appends their requests' indexes to cc.idx in the order of its answer.
func (c *Caps) appendGroup(blob []byte, cc *capCall, reqs []campaigns.CapRequest, group []int32, field, full uint32, minLimit int) []byte {
	at := len(blob)
	blob = binary.BigEndian.AppendUint32(blob, field)
	blob = append(blob, 0, 0, 0, 0, 0, 0, 0) // flags, request count, users' length
	start := len(blob)
	nreq, simple, over := 0, true, false
	for _, ui := range group {
		u := &cc.users[ui]
		blob = binary.BigEndian.AppendUint64(blob, u.key)
		blob = binary.BigEndian.AppendUint16(blob, uint16(u.n))
		hs := len(blob)
		for i := u.head; i >= 0; i = cc.next[i] {
			blob = capHash(blob, reqs[i].Msg, reqs[i].Channel)
			simple = simple && cc.masks[i] == full
			cc.idx = append(cc.idx, int(i))
		}
		simple = simple && u.n <= capSimpleMax
		for a := hs; simple && a < len(blob); a += 6 {
			for b := a + 6; simple && b < len(blob); b += 6 {
				simple = string(blob[a:a+6]) != string(blob[b:b+6])
			}
		}
		nreq += int(u.n)
		over = over || int(u.n) > minLimit
	}
	if nreq > 0xffff {
		// the count travels in 2 bytes; users of a group beyond it are rare
		// enough to lay out again without the fast path's flag
		simple = false
	}
	if !simple {
		// the requests again, each with its mask
		blob = blob[:start]
		for _, ui := range group {
			u := &cc.users[ui]
			blob = binary.BigEndian.AppendUint64(blob, u.key)
			blob = binary.BigEndian.AppendUint16(blob, uint16(u.n))
			for i := u.head; i >= 0; i = cc.next[i] {
				blob = capHash(blob, reqs[i].Msg, reqs[i].Channel)
			}
			for i := u.head; i >= 0; i = cc.next[i] {
				blob = binary.BigEndian.AppendUint32(blob, cc.masks[i])
			}
		}
	}
	var flags byte
	if simple {
		flags = 1
	}
	binary.BigEndian.PutUint16(blob[at+5:], uint16(nreq))
	binary.BigEndian.PutUint32(blob[at+7:], uint32(len(blob)-start))
	if simple && over {
		// a fresh state admits each user's first minLimit messages: their
		// records, then the answer
		flags |= 2
		lenAt := len(blob)
		blob = append(blob, 0, 0, 0, 0)
		p := start
		for _, ui := range group {
			u := &cc.users[ui]
			a := min(int(u.n), minLimit)
			blob = append(blob, blob[p:p+8]...)
			blob = binary.BigEndian.AppendUint16(blob, uint16(a))
			blob = append(blob, blob[p+10:p+10+6*a]...)
			p += 10 + 6*int(u.n)
		}
		binary.BigEndian.PutUint32(blob[lenAt:], uint32(len(blob)-lenAt-4))
		for _, ui := range group {
			u := &cc.users[ui]
			for r := range int(u.n) {
				if r < minLimit {
					blob = append(blob, '1')
				} else {
					blob = append(blob, '0')
				}
			}
		}
	}
	blob[at+4] = flags
	return blob
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
// counted) and the users they keep entries for (a user under two rules
// counts twice), for the fan-out benchmark's bytes per capped user.
func (c *Caps) Usage(ctx context.Context) (bytes, users int64, err error) {
	var mu sync.Mutex
	node := func(ctx context.Context, n redis.UniversalClient) error {
		iter := n.Scan(ctx, 0, c.s.prefix+"capg:*", 1000).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			size, err := n.MemoryUsage(ctx, k, 0).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			all, err := n.HGetAll(ctx, k).Result()
			if err != nil {
				return err
			}
			var held int64
			for f, v := range all {
				if f != "g" {
					held += int64(capValueUsers(v))
				}
			}
			mu.Lock()
			bytes += size
			users += held
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

// capValueUsers counts the distinct users with records in a group's value.
func capValueUsers(v string) int {
	seen := map[string]bool{}
	for p := 0; p+10 <= len(v); {
		end := min(p+10+int(binary.BigEndian.Uint32([]byte(v[p+6:p+10]))), len(v))
		for r := p + 10; r+10 <= end; {
			seen[v[r:r+8]] = true
			r += 10 + 6*int(binary.BigEndian.Uint16([]byte(v[r+8:r+10])))
		}
		p = end
	}
	return len(seen)
}
