// The idempotency window in Redis: claims and stored responses shared by every instance, with the fleet's TTL, maxKeys and maxBytes kept by Lua scripts.

import {
  IDEMPOTENCY_CLAIM_MS,
  type IdempotencyClaim,
  type IdempotencyWindow,
  type StoredResponse,
  storedSize,
} from '../metering/idempotency-window.js';
import { defineLuaScript } from './lua-script.js';
import type { RedisCommands } from './redis-commands.js';
import { readInteger } from './redis-reply.js';
import type { IdempotencyWindowOptions } from './store.js';
import { StoreError } from './store-error.js';

export interface RedisIdempotencyWindowOptions extends IdempotencyWindowOptions {
  readonly commands: RedisCommands;
  /** Put before each window key: `<store prefix>{i}:` (one hash tag: the scripts touch several keys). */
  readonly prefix: string;
}

/**
 * An entry's value: `p<fingerprint>` while its request runs, `d<fingerprint><response as JSON>`
 * once stored. Fingerprints are SHA-256 in hex: 64 characters.
 */
const FINGERPRINT_LENGTH = 64;

/** KEYS: entry. ARGV: claim ('p' .. fingerprint), claim ms. The entry's value, or nil when it was claimed now. */
const beginScript = defineLuaScript(
  'idempotency-begin',
  `local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false`,
);

/**
 * KEYS: entry, index (sorted set of stored entries by time stored), sizes (hash entry -> bytes),
 * bytes (the total). ARGV: claim, value, size, ttl ms, maxKeys, maxBytes.
 * Forgets the expired, stores the response in place of its own claim only, evicting the oldest
 * while over the bounds. Returns the number evicted, or -1 when the claim was not its own any
 * more, -2 when the response alone is over maxBytes (the claim is released).
 */
const completeScript = defineLuaScript(
  'idempotency-complete',
  `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
local function forget(member)
  local size = tonumber(redis.call('HGET', KEYS[3], member) or '0')
  redis.call('HDEL', KEYS[3], member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('DECRBY', KEYS[4], size)
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do forget(member) end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local size = tonumber(ARGV[3])
if size > tonumber(ARGV[6]) then
  redis.call('DEL', KEYS[1])
  return -2
end
local evicted = 0
while redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5])
  or tonumber(redis.call('GET', KEYS[4]) or '0') + size > tonumber(ARGV[6]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  forget(oldest)
  redis.call('DEL', oldest)
  evicted = evicted + 1
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
redis.call('INCRBY', KEYS[4], size)
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
return evicted`,
);

/** KEYS: entry. ARGV: claim. Deletes the entry if it is still that claim. */
const releaseScript = defineLuaScript(
  'idempotency-release',
  `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`,
);

/**
 * A key claimed or stored by any instance is seen by all. While Redis cannot answer, `begin`
 * rejects at once (the request runs, and is billed, as one without a key): a retry is never free.
 */
export class RedisIdempotencyWindow implements IdempotencyWindow {
  readonly #commands: RedisCommands;
  readonly #prefix: string;
  readonly #ttl: string;
  readonly #claimMs: string;
  readonly #maxKeys: string;
  readonly #maxBytes: string;
  readonly #onEvict: () => void;

  constructor(options: RedisIdempotencyWindowOptions) {
    this.#commands = options.commands;
    this.#prefix = options.prefix;
    this.#ttl = String(options.ttlMs);
    this.#claimMs = String(Math.min(options.ttlMs, IDEMPOTENCY_CLAIM_MS));
    this.#maxKeys = String(options.maxKeys);
    this.#maxBytes = String(options.maxBytes);
    this.#onEvict = options.onEvict;
  }

  async begin(key: string, fingerprint: string): Promise<IdempotencyClaim> {
    // Before the handler: a request does not wait for an unreachable Redis.
    if (!this.#commands.available) throw new StoreError('STORE_DOWN', 'idempotency-begin', 'Redis is unreachable');
    const reply = await this.#commands.runScript(beginScript, [this.#prefix + key], [`p${fingerprint}`, this.#claimMs]);
    if (reply === null) return { status: 'claimed' };
    if (typeof reply !== 'string') {
      throw new StoreError('STORE_BAD_REPLY', 'idempotency-begin', `unexpected reply ${JSON.stringify(reply)}`);
    }
    const stored = reply.slice(1, 1 + FINGERPRINT_LENGTH);
    if (reply[0] === 'p') return { status: 'in-flight', fingerprint: stored };
    const { s, h, b } = JSON.parse(reply.slice(1 + FINGERPRINT_LENGTH)) as {
      s: number;
      h: [string, string | string[]][];
      b: string;
    };
    return { status: 'done', fingerprint: stored, response: { status: s, headers: h, body: Buffer.from(b, 'base64') } };
  }

  async complete(key: string, fingerprint: string, response: StoredResponse): Promise<void> {
    const entry = this.#prefix + key;
    const value = JSON.stringify({ s: response.status, h: response.headers, b: response.body.toString('base64') });
    const reply = await this.#commands.runScript(
      completeScript,
      [entry, `${this.#prefix}#index`, `${this.#prefix}#sizes`, `${this.#prefix}#bytes`],
      [`p${fingerprint}`, `d${fingerprint}${value}`, storedSize(response), this.#ttl, this.#maxKeys, this.#maxBytes],
    );
    const evicted = readInteger(reply, 'idempotency-complete');
    for (let i = 0; i < evicted; i++) this.#onEvict();
  }

  async release(key: string, fingerprint: string): Promise<void> {
    await this.#commands.runScript(releaseScript, [this.#prefix + key], [`p${fingerprint}`]);
  }
}
