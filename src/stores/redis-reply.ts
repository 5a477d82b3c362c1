// Redis replies as one shape whichever client sent the command (node-redis RESP2/RESP3, ioredis), and readers for them.

import { StoreError } from './store-error.js';

/**
 * A normalised reply: integers (and RESP3 doubles) as numbers, bulk and simple strings as strings
 * (Buffers decoded as UTF-8), nil as null, arrays as arrays, RESP3 maps flattened to [key, value, ...]
 * as RESP2 sends them, RESP3 booleans as Lua's conversions give them (true -> 1, false -> null).
 */
export type RedisReply = string | number | null | RedisReply[];

/** Normalises what a client's `sendCommand` resolved with; an error reply inside an array becomes a StoreError. */
export function normaliseReply(raw: unknown, command: string): RedisReply {
  if (raw === null || raw === undefined) return null;
  switch (typeof raw) {
    case 'string':
      return raw;
    case 'number':
      return raw;
    case 'bigint':
      return Number.isSafeInteger(Number(raw)) ? Number(raw) : raw.toString();
    case 'boolean':
      return raw ? 1 : null;
    case 'object': {
      if (Array.isArray(raw)) return raw.map((item) => normaliseReply(item, command));
      if (raw instanceof Uint8Array) return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8');
      if (raw instanceof Error) throw new StoreError('STORE_COMMAND_FAILED', command, raw.message, raw);
      if (raw instanceof Map) return [...raw].flatMap((entry) => entry.map((item) => normaliseReply(item, command)));
      if (raw instanceof Set) return [...raw].map((item) => normaliseReply(item, command));
      if (Object.getPrototypeOf(raw) === Object.prototype || Object.getPrototypeOf(raw) === null) {
        return Object.entries(raw).flatMap(([key, value]) => [key, normaliseReply(value, command)]);
      }
    }
  }
  throw new StoreError('STORE_BAD_REPLY', command, `unexpected reply of type ${typeof raw}`);
}

/** The reply as an integer (an integer reply, or a string of digits as Lua scripts may return). */
export function readInteger(reply: RedisReply, command: string): number {
  const value = typeof reply === 'string' && /^-?\d+$/.test(reply) ? Number(reply) : reply;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
  throw new StoreError('STORE_BAD_REPLY', command, `expected an integer, got ${JSON.stringify(reply)}`);
}

/** The reply as an array of at least `length` items. */
export function readArray(reply: RedisReply, command: string, length = 0): RedisReply[] {
  if (Array.isArray(reply) && reply.length >= length) return reply;
  throw new StoreError(
    'STORE_BAD_REPLY',
    command,
    `expected an array of ${length}+ items, got ${JSON.stringify(reply)}`,
  );
}
