// A PROTOTYPE of the shared ledger's Lua scripts (issue 9, step 2 designs the real ones): tests only, not the package.
//
// One Redis hash per (user, feature) holds Kana's shared answer, the fleet-wide check lock, and per
// instance four cumulative counters: g (units Redis granted it), rt (units it gave back), sp (units
// it spent) and cf (units of those Kana confirmed). Instances report rt/sp/cf as running totals,
// merged with max(), so a repeated or late message changes nothing. With o_i = max(g-rt, sp) - cf
// (reserved-unspent plus spent-unconfirmed) and `conf` = the sum of every cf:
//   effective used = answer.used + sum(o_i) + (conf - confAtCheckStart)
// Units confirmed before the answer's check began are in answer.used; those confirmed since are in
// the last term; those still unconfirmed (or only reserved) are in sum(o_i). Time is Redis's TIME.

import { defineLuaScript } from '../../src/stores/lua-script.js';
import type { RedisCommands } from '../../src/stores/redis-commands.js';
import { readArray, readInteger } from '../../src/stores/redis-reply.js';

const PROLOGUE = `
local K = KEYS[1]
local function num(field) return tonumber(redis.call('HGET', K, field) or '0') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function owed(id)
  return math.max(num('g:' .. id) - num('rt:' .. id), num('sp:' .. id)) - num('cf:' .. id)
end
-- The instance's running totals, merged with max(): a late or repeated report changes nothing.
local function report(id, sp, rt, cf)
  local before, cfBefore = owed(id), num('cf:' .. id)
  redis.call('HSET', K, 'sp:' .. id, math.max(sp, num('sp:' .. id)), 'rt:' .. id, math.max(rt, num('rt:' .. id)),
    'cf:' .. id, math.max(cf, cfBefore))
  redis.call('HINCRBY', K, 'out', owed(id) - before)
  redis.call('HINCRBY', K, 'conf', num('cf:' .. id) - cfBefore)
end
-- A lease that ended (instance gone, idle or done): what it reserved and did not spend goes back.
local function release(id)
  if redis.call('HDEL', K, 'l:' .. id) == 0 then return end
  local before = owed(id)
  redis.call('HSET', K, 'rt:' .. id, math.max(num('rt:' .. id), num('g:' .. id) - num('sp:' .. id)))
  redis.call('HINCRBY', K, 'out', owed(id) - before)
  redis.call('HINCRBY', K, 'live', -1)
end
local function sweep()
  local soonest = num('l_min')
  if soonest == 0 or soonest > now then return end
  local fields, nextMin = redis.call('HGETALL', K), 0
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 2) == 'l:' then
      local expiry = tonumber(fields[i + 1])
      if expiry <= now then release(string.sub(fields[i], 3))
      elseif nextMin == 0 or expiry < nextMin then nextMin = expiry end
    end
  end
  redis.call('HSET', K, 'l_min', nextMin)
end
local function effective() return num('a_used') + num('out') + num('conf') - num('a_conf') end
local function state(status, id)
  local lease = redis.call('HGET', K, 'l:' .. id)
  return { status, num('g:' .. id), num('rt:' .. id), lease and (tonumber(lease) - now) or 0,
    num('a_budget') - effective() }
end
`;

/** ARGV: id, sp, rt, cf, want, maxBlock, leaseMs, retainMs. Grants a block of at least `want` units, or says why not. */
const reserve = defineLuaScript(
  'reserve',
  `${PROLOGUE}
local id, want, maxBlock, leaseMs = ARGV[1], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('PEXPIRE', K, ARGV[8])
sweep()
report(id, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
local answerExpiry = num('a_exp')
if answerExpiry <= now then return state('check', id) end
if num('a_cons') == 0 then return state(num('a_access') == 1 and 'allow' or 'not-in-plan', id) end
if num('a_budget') < 0 or num('a_over') == 1 then return state('allow', id) end
local remaining = num('a_budget') - effective()
if remaining < want then return state('limit', id) end
-- Big blocks far from the limit, down to single units at the end; never more than remains.
local share = math.floor(remaining / (2 * math.max(1, num('live') + 1)))
local grant = math.min(remaining, math.max(want, math.min(maxBlock, share)))
local before = owed(id)
redis.call('HINCRBY', K, 'g:' .. id, grant)
redis.call('HINCRBY', K, 'out', owed(id) - before)
if redis.call('HEXISTS', K, 'l:' .. id) == 0 then redis.call('HINCRBY', K, 'live', 1) end
local expiry = math.min(now + leaseMs, answerExpiry)
redis.call('HSET', K, 'l:' .. id, expiry)
if num('l_min') == 0 or expiry < num('l_min') then redis.call('HSET', K, 'l_min', expiry) end
return state('granted', id)
`,
);

/** ARGV: id, sp, rt, cf, done (1: give back what is left), retainMs. Reports spent/returned/confirmed units. */
const settle = defineLuaScript(
  'settle',
  `${PROLOGUE}
local id = ARGV[1]
redis.call('PEXPIRE', K, ARGV[6])
sweep()
report(id, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
if ARGV[5] == '1' then release(id) end
return state('settled', id)
`,
);

/** ARGV: id, lockMs, retainMs. 'fresh' (someone answered), 'wait' + ms (someone is asking Kana), or 'check' + epoch (ask Kana). */
const beginCheck = defineLuaScript(
  'begin-check',
  `${PROLOGUE}
redis.call('PEXPIRE', K, ARGV[3])
if num('a_exp') > now then return { 'fresh', num('a_exp') - now } end
if num('c_exp') > now then return { 'wait', num('c_exp') - now } end
local epoch = redis.call('HINCRBY', K, 'c_epoch', 1)
redis.call('HSET', K, 'c_id', ARGV[1], 'c_exp', now + tonumber(ARGV[2]), 'c_conf', num('conf'))
return { 'check', epoch }
`,
);

/** ARGV: id, epoch, access, consumable, used, budget (-1 unlimited), overage, periodEndMs (0 none), ttlMs, retainMs. */
const storeAnswer = defineLuaScript(
  'store-answer',
  `${PROLOGUE}
redis.call('PEXPIRE', K, ARGV[10])
if redis.call('HGET', K, 'c_id') ~= ARGV[1] or num('c_epoch') ~= tonumber(ARGV[2]) then return { 'stale', 0 } end
local expiry, periodEnd = now + tonumber(ARGV[9]), tonumber(ARGV[8])
if periodEnd > now and periodEnd < expiry then expiry = periodEnd end
redis.call('HSET', K, 'a_access', ARGV[3], 'a_cons', ARGV[4], 'a_used', ARGV[5], 'a_budget', ARGV[6],
  'a_over', ARGV[7], 'a_exp', expiry, 'a_conf', num('c_conf'))
redis.call('HDEL', K, 'c_id', 'c_exp', 'c_conf')
return { 'stored', num('a_budget') - effective() }
`,
);

export interface Totals {
  spent: number;
  returned: number;
  confirmed: number;
}
export interface LeaseState {
  status: string;
  granted: number;
  returned: number;
  leaseMs: number;
  remaining: number;
}
export interface Answer {
  access: boolean;
  consumable: boolean;
  used: number;
  budget: number | null;
  overage: boolean;
  periodEndMs?: number;
}

const RETAIN_MS = 60_000;

function leaseState(reply: unknown[], command: string): LeaseState {
  const [status, granted, returned, leaseMs, remaining] = reply as [string, number, number, number, number];
  return {
    status,
    granted: readInteger(granted, command),
    returned: readInteger(returned, command),
    leaseMs: readInteger(leaseMs, command),
    remaining: readInteger(remaining, command),
  };
}

/** The four scripts over one key, through the command layer. */
export function prototypeLedger(commands: RedisCommands, key: string) {
  const totals = (t: Totals) => [t.spent, t.returned, t.confirmed];
  return {
    async reserve(id: string, t: Totals, want: number, options: { maxBlock?: number; leaseMs?: number } = {}) {
      const args = [id, ...totals(t), want, options.maxBlock ?? 64, options.leaseMs ?? 10_000, RETAIN_MS];
      return leaseState(readArray(await commands.runScript(reserve, [key], args), 'reserve', 5), 'reserve');
    },
    async settle(id: string, t: Totals, done = false) {
      const args = [id, ...totals(t), done ? 1 : 0, RETAIN_MS];
      return leaseState(readArray(await commands.runScript(settle, [key], args), 'settle', 5), 'settle');
    },
    async beginCheck(id: string, lockMs = 5000) {
      const [status, value] = readArray(await commands.runScript(beginCheck, [key], [id, lockMs, RETAIN_MS]), 'b', 2);
      return { status: status as string, value: readInteger(value ?? null, 'begin-check') };
    },
    /** Tests only: the shared answer's TTL has passed (rather than waiting for it). */
    async expireAnswer() {
      await commands.command('HSET', key, 'a_exp', '0');
    },
    async storeAnswer(id: string, epoch: number, answer: Answer, ttlMs = 60_000) {
      const args = [
        id,
        epoch,
        answer.access ? 1 : 0,
        answer.consumable ? 1 : 0,
        answer.used,
        answer.budget ?? -1,
        answer.overage ? 1 : 0,
        answer.periodEndMs ?? 0,
        ttlMs,
        RETAIN_MS,
      ];
      const [status, remaining] = readArray(await commands.runScript(storeAnswer, [key], args), 'store-answer', 2);
      return { status: status as string, remaining: readInteger(remaining ?? null, 'store-answer') };
    },
  };
}
