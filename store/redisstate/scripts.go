package redisstate

// Lua scripts. Each touches only the keys it is given, and all of them share
// one hash tag ({u:…} or {c:…}), so every call lands in one Redis Cluster slot.
// Times come from redis.call('TIME') so daemons with skewed clocks agree.
// User keys travel as 16-digit lowercase hex because Lua numbers are doubles
// and cannot hold a uint64.

// nowMS is spliced into scripts that need the server clock.
const nowMS = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// Per-message claim. KEYS: dedup keys. ARGV: lease ms, window ms, owner.
// Values: "C" (confirmed) or "L<lease end ms>:<owner>" (leased). A record
// lives for the window, so an expired lease is still seen as in doubt.
// Returns one code per key: 1 claimed, 2 duplicate, 3 held, 4 in doubt.
const claimSrc = nowMS + `
local lease = tonumber(ARGV[1])
local leased = 'L' .. string.format('%d', now + lease) .. ':' .. ARGV[3]
-- ARGV[4] == '1': ARGV[3] names one attempt (owner#token), and a lease it
-- wrote in an earlier call that failed (a lost reply) is its own: claimed.
local attempt = ARGV[4] == '1'
local mine = {}
local out = {}
for i, k in ipairs(KEYS) do
  -- SET NX first: a new key (the common case) costs one call, not GET + SET.
  if redis.call('SET', k, leased, 'PX', ARGV[2], 'NX') then
    out[i] = 1
    mine[k] = true
  else
  local v = redis.call('GET', k)
  if v == 'C' then
    out[i] = 2
  else
    local colon = string.find(v, ':', 2, true)
    local ends = tonumber(string.sub(v, 2, (colon or 0) - 1)) or 0
    if attempt and not mine[k] and colon and string.sub(v, colon + 1) == ARGV[3] then
      redis.call('SET', k, leased, 'PX', ARGV[2])
      out[i] = 1
      mine[k] = true
    elseif ends > now then
      out[i] = 3
    else
      redis.call('SET', k, leased, 'PX', ARGV[2])
      out[i] = 4
    end
  end
  end
end
return out
`

// Per-message confirm. KEYS: dedup keys. ARGV: window ms. One script call
// instead of a pipeline of SETs: one reply instead of one per key.
const confirmSrc = `
for _, k in ipairs(KEYS) do
  redis.call('SET', k, 'C', 'PX', ARGV[1])
end
return #KEYS
`

// Per-message release. KEYS: dedup keys. ARGV: owner. Deletes only the
// owner's own unconfirmed leases.
const releaseSrc = `
local n = 0
for _, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  local colon = v and string.find(v, ':', 2, true)
  if colon and string.sub(v, 1, 1) == 'L' and string.sub(v, colon + 1) == ARGV[1] then
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
`

// Campaign lease. KEYS: lease, prog. ARGV: owner, ttl ms.
// The lease value is "<token>:<owner>"; the token (fence) only ever grows.
// prog "live" holds the token of the run that has not released yet: finding
// it set means the previous run died without releasing, and "crash" counts
// such runs in a row (reset by a checkpoint advance or a lease renewal).
// Returns {token, crashes}, or {-1} when another owner's lease is live.
const acquireSrc = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local colon = string.find(cur, ':', 1, true)
  if string.sub(cur, colon + 1) ~= ARGV[1] then return {-1} end
end
local tok = redis.call('HINCRBY', KEYS[2], 'fence', 1)
redis.call('SET', KEYS[1], tok .. ':' .. ARGV[1], 'PX', ARGV[2])
local crashes
if redis.call('HEXISTS', KEYS[2], 'live') == 1 then
  crashes = redis.call('HINCRBY', KEYS[2], 'crash', 1)
else
  crashes = tonumber(redis.call('HGET', KEYS[2], 'crash') or '0')
end
redis.call('HSET', KEYS[2], 'live', tok)
return {tok, crashes}
`

// KEYS: lease, prog. ARGV: "<token>:<owner>", token, ttl ms. Returns 1, or 0
// if not held. A lease that ran out while nobody took it over (the fence is
// still the caller's token, and it was never released: Redis was away
// longer than the ttl) is taken back. A run that lives to renew its lease is not crash-looping.
const renewSrc = `
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  if cur or redis.call('HGET', KEYS[2], 'fence') ~= ARGV[2] or redis.call('HGET', KEYS[2], 'live') ~= ARGV[2] then return 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`

// KEYS: lease, prog. ARGV: "<token>:<owner>".
const unleaseSrc = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], 'live')
end
return 1
`

// hexLE compares two 16-digit hex uint64s exactly, in two 32-bit halves
// (doubles are exact there; string comparison would depend on the locale).
const hexLE = `
local function hex_le(a, b)
  local ah, bh = tonumber(string.sub(a, 1, 8), 16), tonumber(string.sub(b, 1, 8), 16)
  if ah ~= bh then return ah < bh end
  return tonumber(string.sub(a, 9), 16) <= tonumber(string.sub(b, 9), 16)
end
`

// Batch claim. KEYS: lease, prog, bat. ARGV: "<token>:<owner>", token,
// first (hex16), last (hex16), slots. The batch record is one field of the
// campaign's batch hash: "<first>:<last>:<slots>:<token>:<final 0|1>".
// Returns the batch's seq, -1 lease lost, -5 out of order. Claiming exactly
// the last claimed batch again (a retry after a lost reply) returns its seq.
const claimBatchSrc = hexLE + `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local rec = ARGV[3] .. ':' .. ARGV[4] .. ':' .. ARGV[5] .. ':' .. ARGV[2] .. ':0'
local last = redis.call('HGET', KEYS[2], 'hi')
if last and hex_le(ARGV[3], last) then
  local s = redis.call('HGET', KEYS[2], 'seq')
  if s and redis.call('HGET', KEYS[3], s) == rec then return tonumber(s) end
  return -5
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('HSET', KEYS[3], seq, rec)
redis.call('HSET', KEYS[2], 'hi', ARGV[4])
return seq
`

// Ledger flush: several batch reports applied at once. KEYS: lease, prog,
// bat, cnt, fail. ARGV: "<token>:<owner>", token, flush id (0: no replay
// check), mode ("o": bitmaps are OR-ed in; "s": they replace the stored
// bytes from the report's base on; "p": as "s", and the flush records
// progress, which resets the crash counter), number of reports, then per report: seq,
// final (0|1), base (byte offset), slots (0, or more to grow the batch),
// dispatched, confirmed, done (bitmaps),
// number of count pairs, the pairs (field, delta), number of failure pairs,
// the pairs (prefix, member).
// Mode "s" is the ledger's: the daemon holding the lease is the only writer
// and sends the merged bytes of the range that changed, so Redis copies
// strings instead of OR-ing them byte by byte in Lua.
// prog "fl" is "<token>:<id>" of the last flush applied: a flush replayed
// under the same lease (its reply was lost) answers without applying twice.
// Every report is checked before any is applied, so a refused flush changes
// nothing. Bitmaps live in fields "<seq>d", "<seq>c", "<seq>f" of the batch
// hash. The checkpoint (prog cseq/cur) then advances over every final batch
// that follows it, deleting their fields: memory stays O(open batches).
// Returns {cseq, cur hex16} or {code, report index}: -1 lease lost,
// -2 unknown batch, -3 already final, -4 bitmap longer than the batch.
const reportSrc = `
local function bor(a, b)
  if not a or #a == 0 then return b end
  local n = math.max(#a, #b)
  local out = {}
  for i = 1, n do
    out[i] = string.char(bit.bor(string.byte(a, i) or 0, string.byte(b, i) or 0))
  end
  return table.concat(out)
end
local function put(old, base, b)
  old = old or ''
  if #old < base then old = old .. string.rep('\0', base - #old) end
  return string.sub(old, 1, base) .. b .. string.sub(old, base + #b + 1)
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0} end
local cseq = tonumber(redis.call('HGET', KEYS[2], 'cseq') or '0')
local cur = redis.call('HGET', KEYS[2], 'cur') or ''
local fid = tonumber(ARGV[3])
if fid > 0 then
  local fl = redis.call('HGET', KEYS[2], 'fl')
  if fl then
    local t, id = string.match(fl, '^([^:]*):(.*)$')
    if t == ARGV[2] and tonumber(id) >= fid then return {cseq, cur} end
  end
end
local set = ARGV[4] ~= 'o'
-- pass 1: check
local i = 6
local recs = {}
for r = 1, tonumber(ARGV[5]) do
  local seq = ARGV[i]
  local rec = redis.call('HGET', KEYS[3], seq)
  if not rec then
    local s = tonumber(seq)
    if s >= 1 and s <= cseq then return {-3, r} end
    return {-2, r}
  end
  local first, last, slots, tok, fin = string.match(rec, '^([^:]*):([^:]*):([^:]*):([^:]*):([^:]*)$')
  if fin == '1' then return {-3, r} end
  if tonumber(ARGV[i + 3]) > tonumber(slots) then slots = ARGV[i + 3] end
  local maxlen = math.floor((tonumber(slots) + 7) / 8) - tonumber(ARGV[i + 2])
  if #ARGV[i + 4] > maxlen or #ARGV[i + 5] > maxlen or #ARGV[i + 6] > maxlen then return {-4, r} end
  recs[r] = {first .. ':' .. last .. ':' .. slots .. ':' .. tok .. ':', slots ~= string.match(rec, '^[^:]*:[^:]*:([^:]*):')}
  i = i + 7
  i = i + 1 + 2 * tonumber(ARGV[i])
  i = i + 1 + 2 * tonumber(ARGV[i])
end
-- pass 2: apply
i = 6
local anyFinal = false
local suffixes = {'d', 'c', 'f'}
for r = 1, tonumber(ARGV[5]) do
  local seq = ARGV[i]
  local base = tonumber(ARGV[i + 2])
  for j = 1, 3 do
    local add = ARGV[i + 3 + j]
    if #add > 0 then
      local f = seq .. suffixes[j]
      local old = redis.call('HGET', KEYS[3], f)
      if set then
        redis.call('HSET', KEYS[3], f, put(old, base, add))
      else
        redis.call('HSET', KEYS[3], f, bor(old, add))
      end
    end
  end
  if ARGV[i + 1] == '1' then
    redis.call('HSET', KEYS[3], seq, recs[r][1] .. '1')
    anyFinal = true
  elseif recs[r][2] then
    redis.call('HSET', KEYS[3], seq, recs[r][1] .. '0')
  end
  i = i + 7
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    redis.call('ZREMRANGEBYLEX', KEYS[5], '[' .. ARGV[i], '(' .. string.sub(ARGV[i], 1, -2) .. ';')
    redis.call('ZADD', KEYS[5], 0, ARGV[i] .. ARGV[i + 1])
    i = i + 2
  end
end
if anyFinal then
  local moved = false
  while true do
    local s = string.format('%d', cseq + 1)
    local r = redis.call('HGET', KEYS[3], s)
    if not r or string.sub(r, -1) ~= '1' then break end
    cur = string.match(r, '^[^:]*:([^:]*):')
    redis.call('HDEL', KEYS[3], s, s .. 'd', s .. 'c', s .. 'f')
    cseq = cseq + 1
    moved = true
  end
  if moved then
    redis.call('HSET', KEYS[2], 'cseq', cseq, 'cur', cur)
    redis.call('HDEL', KEYS[2], 'crash')
  end
end
if ARGV[4] == 'p' then redis.call('HDEL', KEYS[2], 'crash') end
if fid > 0 then redis.call('HSET', KEYS[2], 'fl', ARGV[2] .. ':' .. ARGV[3]) end
return {cseq, cur}
`

// Retry outcome. KEYS: lease, cnt, fail. ARGV: "<token>:<owner>", number of
// retried prefixes, the prefixes, number of new failure pairs, the pairs
// (prefix, member), then count pairs (field, delta).
// Failure members are "<user hex16>:<channel>:<reason>" in a sorted set of
// score 0, so "<user>:<channel>:" is a unique prefix and pages come in user
// order; a failure is replaced, never duplicated, when its reason changes.
const retriedSrc = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local i = 2
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('ZREMRANGEBYLEX', KEYS[3], '[' .. ARGV[i], '(' .. string.sub(ARGV[i], 1, -2) .. ';')
  i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('ZREMRANGEBYLEX', KEYS[3], '[' .. ARGV[i], '(' .. string.sub(ARGV[i], 1, -2) .. ';')
  redis.call('ZADD', KEYS[3], 0, ARGV[i] .. ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
`

// Campaign record create. KEYS: rec. ARGV: compacted definition.
// Returns {created 1|0, status, created ms, updated ms} or {-1} on conflict.
const createSrc = nowMS + `
local r = redis.call('HMGET', KEYS[1], 'def', 'st', 'ct', 'ut')
if r[1] then
  if r[1] ~= ARGV[1] then return {-1} end
  return {0, r[2], tonumber(r[3]), tonumber(r[4])}
end
redis.call('HSET', KEYS[1], 'def', ARGV[1], 'st', 'scheduled', 'ct', now, 'ut', now)
return {1, 'scheduled', now, now}
`

// Status compare-and-set. KEYS: rec. ARGV: from, to, reason ("" clears it).
// Returns {1, def, created ms, updated ms}, {-1} not found, {-2, current status}.
const transitionSrc = nowMS + `
local r = redis.call('HMGET', KEYS[1], 'def', 'st', 'ct')
if not r[1] then return {-1} end
if r[2] ~= ARGV[1] then return {-2, r[2]} end
redis.call('HSET', KEYS[1], 'st', ARGV[2], 'ut', now)
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'why')
else
  redis.call('HSET', KEYS[1], 'why', ARGV[3])
end
return {1, r[1], tonumber(r[3]), now}
`

// Ring pin. KEYS: rec. ARGV: ring. Returns the pinned ring, or false
// without a record.
const pinRingSrc = `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSETNX', KEYS[1], 'ring', ARGV[1])
return redis.call('HGET', KEYS[1], 'ring')
`

// Restore a lost campaign record. KEYS: rec. ARGV: def, status, reason,
// created ms, updated ms, ring. Writes it only if absent (another part's daemon may
// have restored it first). Returns 1 if written.
const restoreRecSrc = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'def', ARGV[1], 'st', ARGV[2], 'ct', ARGV[4], 'ut', ARGV[5])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'why', ARGV[3]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'ring', ARGV[6]) end
return 1
`

// Restore a lost campaign's progress (or a fleet part's). KEYS: lease, prog,
// bat, cnt, fail. ARGV: lease value, ttl ms, then three sections each led by
// its pair count: prog pairs, bat pairs, cnt pairs; then failure members.
// Does nothing (returns 0) if the progress still exists: the store did not
// lose it, or its owner restored it already.
const restoreSrc = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
local i = 3
for k = 2, 4 do
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    redis.call('HSET', KEYS[k], ARGV[i], ARGV[i + 1])
    i = i + 2
  end
end
while i <= #ARGV do
  redis.call('ZADD', KEYS[5], 0, ARGV[i])
  i = i + 1
end
return 1
`

// Part complete. KEYS: lease, prog. ARGV: "<token>:<owner>". Marks the
// progress done and releases the lease. Returns 1, or 0 if not held.
const completeSrc = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'done', 1)
redis.call('HDEL', KEYS[2], 'live', 'retry')
redis.call('DEL', KEYS[1])
return 1
`
