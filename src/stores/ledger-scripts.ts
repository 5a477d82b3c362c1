// The shared ledger as Lua scripts, one Redis hash per (user, feature): reserve, report, begin-check and store-answer, each atomic on its one key.
//
// Fields of the hash (times are Redis's TIME in milliseconds):
//   a_ep a_access a_cons a_used a_budget (-1: unlimited) a_over a_ps a_pe a_exp a_conf   Kana's shared answer
//   c_epoch (checks begun) c_id c_exp c_conf c_err                                        the fleet's check lock
//   out (sum owed) conf (sum confirmed) live (leases) l_min (next sweep)                  totals kept by the scripts
//   rb (found lost: no grants until then; absent if never)
//   g:<id> rt:<id> sp:<id> cf:<id> h:<id>  l:<id> (lease end)  t:<id> (forgotten after)   per instance
// owed(id) = claim(id) - cf, claim(id) = max(g - rt, sp + h) (the one Lua copy; TypeScript's is ledgerClaim in store.ts); effective used = a_used + out + conf - a_conf, where a_conf is
// `conf` when the answer's check began: usage confirmed before it is in a_used, usage confirmed since is not.

import { defineLuaScript } from './lua-script.js';

const PROLOGUE = `
local K = KEYS[1]
local function num(field) return tonumber(redis.call('HGET', K, field) or '0') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function claim(id)
  return math.max(num('g:' .. id) - num('rt:' .. id), num('sp:' .. id) + num('h:' .. id))
end
local function owed(id) return claim(id) - num('cf:' .. id) end
local function effective() return num('a_used') + num('out') + num('conf') - num('a_conf') end
-- The next sweep runs at the earliest lease end or forget time.
local function schedule(at)
  local soonest = num('l_min')
  if soonest == 0 or at < soonest then redis.call('HSET', K, 'l_min', at) end
end
-- Running totals merged with max(): a report repeated, or landing late, changes nothing. Held is the latest value.
local function merge(id, sp, rt, cf, h, retainMs)
  local before, cfBefore = owed(id), num('cf:' .. id)
  redis.call('HSET', K, 'sp:' .. id, math.max(sp, num('sp:' .. id)), 'rt:' .. id, math.max(rt, num('rt:' .. id)),
    'cf:' .. id, math.max(cf, cfBefore), 'h:' .. id, h, 't:' .. id, now + retainMs)
  redis.call('HINCRBY', K, 'out', owed(id) - before)
  redis.call('HINCRBY', K, 'conf', num('cf:' .. id) - cfBefore)
  schedule(now + retainMs)
end
-- A lease that ended (expired, given back, or its instance gone): reserved units not spent come back, and holds end.
local function release(id)
  if redis.call('HDEL', K, 'l:' .. id) == 0 then return end
  local before = owed(id)
  redis.call('HSET', K, 'rt:' .. id, math.max(num('rt:' .. id), num('g:' .. id) - num('sp:' .. id)), 'h:' .. id, 0)
  redis.call('HINCRBY', K, 'out', owed(id) - before)
  redis.call('HINCRBY', K, 'live', -1)
end
-- An instance's record goes: silent for retainMs (its unconfirmed usage stops counting), or retired by it
-- (its unconfirmed usage counts as confirmed until the next answer).
local function forget(id, retired)
  release(id)
  local cf, sp = num('cf:' .. id), num('sp:' .. id)
  redis.call('HINCRBY', K, 'out', 0 - owed(id))
  if retired and sp > cf then redis.call('HINCRBY', K, 'conf', sp - cf) end
  redis.call('HDEL', K, 'g:' .. id, 'rt:' .. id, 'sp:' .. id, 'cf:' .. id, 'h:' .. id, 't:' .. id)
end
-- The instance's lease lasts leaseMs from now.
local function renew(id, leaseMs)
  redis.call('HSET', K, 'l:' .. id, now + leaseMs)
  schedule(now + leaseMs)
end
-- Ends expired leases and forgets silent instances; skipped until the earliest of them is due.
local function sweep()
  local soonest = num('l_min')
  if soonest == 0 or soonest > now then return end
  local fields, nextMin, ended, silent = redis.call('HGETALL', K), 0, {}, {}
  for i = 1, #fields, 2 do
    local kind = string.sub(fields[i], 1, 2)
    if kind == 'l:' or kind == 't:' then
      local at = tonumber(fields[i + 1])
      if at <= now then table.insert(kind == 'l:' and ended or silent, string.sub(fields[i], 3))
      elseif nextMin == 0 or at < nextMin then nextMin = at end
    end
  end
  for _, id in ipairs(ended) do release(id) end
  for _, id in ipairs(silent) do forget(id, false) end
  redis.call('HSET', K, 'l_min', nextMin)
end
local function answer()
  return { num('a_ep'), num('a_access'), num('a_cons'), num('a_used'), num('a_budget'), num('a_over'), num('a_ps'),
    num('a_pe'), math.max(0, num('a_exp') - now) }
end
local function state(status, id, withAnswer)
  local lease = redis.call('HGET', K, 'l:' .. id)
  local left = num('a_budget') - effective()
  -- While the ledger is rebuilt nothing is granted: nothing remains to take.
  if num('rb') > now then left = math.min(0, left) end
  local reply = { status, num('g:' .. id), num('rt:' .. id), lease and math.max(0, tonumber(lease) - now) or 0, left,
    num('live') }
  if withAnswer then
    for _, value in ipairs(answer()) do table.insert(reply, value) end
  end
  return reply
end
`;

/**
 * The start of both ledger scripts, reserve and report. ARGV 1 to 7: id, spent, returned, confirmed,
 * held, leaseMs, retainMs (the script's own follow). Ends expired leases, then merges the instance's totals.
 */
const LEDGER_PROLOGUE = `${PROLOGUE}
local id, leaseMs, retainMs = ARGV[1], tonumber(ARGV[6]), tonumber(ARGV[7])
sweep()
merge(id, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), retainMs)
`;

/**
 * ARGV: id, spent, returned, confirmed, held, leaseMs, retainMs (LEDGER_PROLOGUE), epoch, want, need, maxBlock, lastEpoch, rebuildMs.
 * Reply: status, granted, returned, leaseMs, remaining, leases[, answer (9 fields) when newer than `epoch`].
 * Grants `u` usable units: the claim max(g - rt, sp + h) grows by exactly u, so spending past a
 * grant is covered first. u = min(remaining, max(want, min(maxBlock, remaining / (2 * (leases + 1)))), room):
 * big blocks far from the limit, smaller as it nears, single units at the very end; room keeps the
 * claim less what was spent (block and holds) within maxBlock (one bigger request may have its own units
 * when nothing else is reserved). An instance granted units under a newer answer than the hash has (lastEpoch)
 * means the ledger was lost (FLUSHALL, a restart): nothing is granted for rebuildMs while the instances report.
 */
export const reserveScript = defineLuaScript(
  'reserve',
  `${LEDGER_PROLOGUE}
local epoch, want, need, maxBlock = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local current, reply = num('a_ep'), nil
local lastEpoch = tonumber(ARGV[12] or '0')
if lastEpoch > current and num('rb') == 0 then
  local rebuilt = now + tonumber(ARGV[13])
  redis.call('HSET', K, 'rb', rebuilt, 'c_epoch', math.max(num('c_epoch'), lastEpoch))
  -- An answer taken meanwhile is asked again once every instance has reported.
  if current > 0 and num('a_exp') > rebuilt then redis.call('HSET', K, 'a_exp', rebuilt) end
end
if current == 0 or current < epoch then
  reply = state('check', id, false)
else
  local newer = current > epoch
  if num('a_cons') == 0 then
    reply = state(num('a_access') == 1 and 'allow' or 'not-in-plan', id, newer)
  elseif num('a_budget') < 0 or num('a_over') == 1 then
    reply = state('allow', id, newer)
  else
    local remaining = num('a_budget') - effective()
    local claimed = claim(id)
    local unspent = claimed - num('sp:' .. id)
    local room = maxBlock - unspent
    if unspent <= 0 then room = math.max(maxBlock, need) end
    local share = math.floor(remaining / (2 * (num('live') + 1)))
    local usable = math.min(remaining, math.max(want, math.min(maxBlock, share)), room)
    if remaining < need or usable < need or num('rb') > now then
      reply = state('limit', id, newer)
    else
      local before = owed(id)
      redis.call('HSET', K, 'g:' .. id, claimed + usable + num('rt:' .. id))
      redis.call('HINCRBY', K, 'out', owed(id) - before)
      if redis.call('HEXISTS', K, 'l:' .. id) == 0 then redis.call('HINCRBY', K, 'live', 1) end
      renew(id, leaseMs)
      reply = state('granted', id, newer)
    end
  end
end
redis.call('PEXPIRE', K, retainMs)
return reply
`,
);

/** ARGV: id, spent, returned, confirmed, held, leaseMs, retainMs (LEDGER_PROLOGUE), mode (keep, release, forget). Reply: as reserve's, without the answer. */
export const reportScript = defineLuaScript(
  'report',
  `${LEDGER_PROLOGUE}
local mode = ARGV[8]
if mode == 'forget' then
  forget(id, true)
elseif mode == 'release' then
  release(id)
elseif redis.call('HEXISTS', K, 'l:' .. id) == 1 then
  renew(id, leaseMs)
end
redis.call('PEXPIRE', K, retainMs)
return state('reported', id, false)
`,
);

/**
 * ARGV: id, lockMs, retainMs. Reply: 'fresh' + answer (9 fields) | 'wait', ms left on the lock |
 * 'failed', the failed check's error code | 'check', epoch (this caller holds the lock).
 */
export const beginCheckScript = defineLuaScript(
  'begin-check',
  `${PROLOGUE}
local reply
if num('a_ep') > 0 and num('a_exp') > now then
  reply = { 'fresh' }
  for _, value in ipairs(answer()) do table.insert(reply, value) end
elseif num('c_exp') > now then
  local failed = redis.call('HGET', K, 'c_err')
  reply = failed and { 'failed', failed } or { 'wait', num('c_exp') - now }
else
  local epoch = math.max(redis.call('HINCRBY', K, 'c_epoch', 1), num('a_ep') + 1)
  redis.call('HSET', K, 'c_epoch', epoch, 'c_id', ARGV[1], 'c_exp', now + tonumber(ARGV[2]), 'c_conf', num('conf'))
  redis.call('HDEL', K, 'c_err')
  reply = { 'check', epoch }
end
redis.call('PEXPIRE', K, ARGV[3])
return reply
`,
);

/**
 * ARGV: id, epoch, failed ('' or a KanaError code), access, consumable, used, budget (-1: unlimited),
 * overage, periodStart (0: none), periodEnd (0: none), ttlMs, retainMs.
 * Reply: 'stored' + answer (9 fields) | 'stale' (another check began since) | 'failed' (recorded: until
 * the lock ends, others are told the check failed instead of waiting, and nobody asks Kana again).
 */
export const storeAnswerScript = defineLuaScript(
  'store-answer',
  `${PROLOGUE}
local reply
if redis.call('HGET', K, 'c_id') ~= ARGV[1] or num('c_epoch') ~= tonumber(ARGV[2]) then
  reply = { 'stale' }
elseif ARGV[3] ~= '' then
  redis.call('HSET', K, 'c_err', ARGV[3])
  reply = { 'failed' }
else
  local expiry, periodEnd = now + tonumber(ARGV[11]), tonumber(ARGV[10])
  if periodEnd > now and periodEnd < expiry then expiry = periodEnd end
  -- While the ledger is rebuilt, the answer is asked again once every instance has reported.
  if num('rb') > now and num('rb') < expiry then expiry = num('rb') end
  redis.call('HSET', K, 'a_ep', ARGV[2], 'a_access', ARGV[4], 'a_cons', ARGV[5], 'a_used', ARGV[6], 'a_budget', ARGV[7],
    'a_over', ARGV[8], 'a_ps', ARGV[9], 'a_pe', ARGV[10], 'a_exp', expiry, 'a_conf', num('c_conf'))
  redis.call('HDEL', K, 'c_id', 'c_exp', 'c_conf', 'c_err')
  reply = { 'stored' }
  for _, value in ipairs(answer()) do table.insert(reply, value) end
end
redis.call('PEXPIRE', K, ARGV[12])
return reply
`,
);
