// The fleet's presence in Redis: one sorted set of the kanaMeter instances using the store, each until its entry expires.

import { defineLuaScript } from './lua-script.js';

/**
 * KEYS[1]: the set. ARGV: the instance, ttlMs. Scores are expiry times on Redis's clock (TIME, in ms),
 * so instances' clocks never matter. Drops expired entries, (re)adds this one, and returns how many
 * are left, this one included. The set expires with its last entry. A ttlMs of 0 removes this one
 * (it is closing) and leaves the set's expiry alone.
 */
export const presenceScript = defineLuaScript(
  'announce',
  `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ttl <= 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return redis.call('ZCARD', KEYS[1])
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])`,
);
