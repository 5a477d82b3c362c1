// The ledger's contract (ledger-conformance.ts) against MemoryStore on a fake clock, and RedisStore against a real
// redis-server through node-redis (RESP2, RESP3) and ioredis; and what RedisStore writes: prefixed keys, each with a TTL.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStore } from '../../src/stores/memory-store.js';
import { RedisStore } from '../../src/stores/redis-store.js';
import { createLogSink } from '../helpers/app.js';
import {
  type RedisServer,
  type RedisTestClient,
  redisClients,
  redisSkipReason,
  startRedisServer,
} from '../helpers/redis.js';
import { describeLedger } from './ledger-conformance.js';

describeLedger('MemoryStore', async (options) => {
  const clock = { now: Date.now() };
  const store = new MemoryStore({ ...options, now: () => clock.now });
  store.bind({ logger: createLogSink().logger });
  return {
    store,
    async advance(ms) {
      clock.now += ms;
    },
  };
});

describe.skipIf(redisSkipReason)('RedisStore against redis-server', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  /** Resolves once Redis's own clock has moved `ms` past now (leases and answers end by Redis's TIME). */
  async function redisTimePasses(ms: number): Promise<void> {
    const time = async () => {
      const [seconds, micros] = (await redis.command('TIME')) as [string, string];
      return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    };
    const target = (await time()) + ms;
    while ((await time()) <= target) await new Promise((resolve) => setTimeout(resolve, 5));
  }

  describe.each(redisClients)('with %s', (_name, connect) => {
    let client: RedisTestClient;
    beforeAll(async () => {
      client = await connect(redis.url);
    });
    afterAll(() => client?.close());

    describeLedger('RedisStore', async (options) => {
      const store = new RedisStore({ sendCommand: client.sendCommand, timeoutMs: 5000, ...options });
      store.bind({ logger: createLogSink().logger });
      return { store, advance: redisTimePasses };
    });
  });

  it("announce counts each instance once, until its entry expires on Redis's clock or it leaves, in one prefixed key that expires", async () => {
    const client = await redisClients[0]![1](redis.url);
    try {
      const store = new RedisStore({ sendCommand: client.sendCommand, prefix: 'fleet-test:' });
      store.bind({ logger: createLogSink().logger });
      expect(await store.announce('a', 300)).toBe(1);
      expect(await store.announce('b', 300)).toBe(2);
      expect(await store.announce('a', 300)).toBe(2);
      const ttl = Number(await redis.command('PTTL', 'fleet-test:fleet'));
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(300);
      await redisTimePasses(300);
      expect(await store.announce('c', 300)).toBe(1);
      // ttlMs 0: the instance leaves at once; the last one leaving takes the key with it.
      expect(await store.announce('d', 300)).toBe(2);
      expect(await store.announce('c', 0)).toBe(1);
      expect(await store.announce('d', 0)).toBe(0);
      expect(Number(await redis.command('EXISTS', 'fleet-test:fleet'))).toBe(0);
    } finally {
      client.close();
    }
  });

  it('writes only prefixed keys, each with a TTL: the ledger (retainMs) and idempotency keys (their TTL)', async () => {
    const client = await redisClients[0]![1](redis.url);
    try {
      const store = new RedisStore({ sendCommand: client.sendCommand, prefix: 'ttl-test:', retainMs: 120_000 });
      store.bind({ logger: createLogSink().logger });
      const key = { userId: 'user:with:colons', featureId: 'api calls' };
      const ticket = await store.beginCheck(key, { instance: 'a', lockMs: 1000 });
      const epoch = (ticket as { epoch: number }).epoch;
      const outcome = {
        access: true,
        consumable: true,
        used: 0,
        budget: 10,
        overageEnabled: false,
        periodStart: null,
        periodEnd: null,
        ttlMs: 1000,
      };
      await store.storeAnswer(key, { instance: 'a', epoch, outcome });
      await store.reserve(key, {
        instance: 'a',
        totals: { spent: 0, returned: 0, confirmed: 0, held: 0 },
        epoch,
        want: 1,
        need: 1,
      });
      const window = store.idempotencyWindow({ ttlMs: 60_000, maxKeys: 10, maxBytes: 1000, onEvict: () => {} });
      const fingerprint = 'f'.repeat(64);
      expect(await window.begin('u1:retry-1', fingerprint)).toEqual({ status: 'claimed' });
      expect(await window.begin('u1:retry-1', fingerprint)).toEqual({ status: 'in-flight', fingerprint });
      await window.complete('u1:retry-1', fingerprint, {
        status: 201,
        headers: [['x-a', 'b']],
        body: Buffer.from('hi'),
      });
      expect(await window.begin('u1:retry-1', fingerprint)).toEqual({
        status: 'done',
        fingerprint,
        response: { status: 201, headers: [['x-a', 'b']], body: Buffer.from('hi') },
      });

      const written = ((await redis.command('KEYS', 'ttl-test:*')) as string[]).sort();
      expect(written).toEqual([
        'ttl-test:l:{user%3Awith%3Acolons:api%20calls}',
        'ttl-test:{i}:#bytes',
        'ttl-test:{i}:#index',
        'ttl-test:{i}:#sizes',
        'ttl-test:{i}:u1:retry-1',
      ]);
      const [ledger, bytes, index, sizes, idempotency] = written as [string, string, string, string, string];
      for (const bound of [bytes, index, sizes]) {
        expect(Number(await redis.command('PTTL', bound))).toBeGreaterThan(50_000);
      }
      expect(Number(await redis.command('PTTL', ledger))).toBeGreaterThan(110_000);
      expect(Number(await redis.command('PTTL', ledger))).toBeLessThanOrEqual(120_000);
      expect(Number(await redis.command('PTTL', idempotency))).toBeGreaterThan(50_000);
      expect(store.stats()).toMatchObject({ available: true, failures: 0 });
      // begin-check, store-answer, reserve, then begin, begin, complete, begin.
      expect(store.stats().commands).toBe(7);
    } finally {
      client.close();
    }
  });
});
