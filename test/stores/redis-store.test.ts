// kanaMeter with RedisStore, in one process: two instances (each its own app, Redis client and store) against the emulator and
// a real redis-server: one allowance, one Kana check, the idempotency window across instances, blocks given back, Redis going away.

import { randomBytes } from 'node:crypto';
import type { Express } from 'express';
import request from 'supertest';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type KanaMeter, type KanaMeterOptions, kanaMeter, logCodes } from '../../src/index.js';
import { RedisStore } from '../../src/stores/redis-store.js';
import { expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';
import {
  type RedisServer,
  type RedisTestClient,
  redisClients,
  redisIsExternal,
  redisSkipReason,
  startRedisServer,
} from '../helpers/redis.js';

const env = useEmulator();
let redis: RedisServer;
const clients: RedisTestClient[] = [];
let prefixes = 0;
/** Runs of the /calls handler, on every instance; its answer tells each run apart. */
let callRuns = 0;
let exportRuns = 0;

beforeAll(async () => {
  if (!redisSkipReason) redis = await startRedisServer();
});
afterAll(async () => {
  for (const client of clients) client.close();
  await redis?.stop();
});

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed({
    users: ['u1', 'u2', 'u3'].map((id) => ({ id })),
    features: [
      { id: 'api-calls', type: 'CONSUMABLE' },
      { id: 'exports', type: 'CONSUMABLE' },
    ],
    packages: [
      {
        id: 'small',
        features: [
          { id: 'api-calls', limit: 12 },
          { id: 'exports', limit: null },
        ],
      },
    ],
    subscriptions: ['u1', 'u2', 'u3'].map((userId) => ({ userId, packageId: 'small' })),
  });
});

interface Instance {
  kana: KanaMeter;
  app: Express;
  sink: ReturnType<typeof meterOptions>['sink'];
  hit: (user?: string, path?: string) => Promise<number>;
}

/** Instances sharing one Redis, each with its own client (node-redis, then ioredis, alternately) and RedisStore. */
async function fleet(
  size: number,
  storeOptions: { timeoutMs?: number; leaseMs?: number } = {},
  meterOverrides: Partial<KanaMeterOptions> = {},
): Promise<Instance[]> {
  const prefix = `fleet${++prefixes}:`;
  const instances: Instance[] = [];
  for (let i = 0; i < size; i++) {
    const client = await (redisClients[i % 2 === 0 ? 0 : 2] as (typeof redisClients)[number])[1](redis.url);
    clients.push(client);
    const { options, sink } = meterOptions(env.emulator, {
      routes: { 'GET /calls': 'api-calls', 'POST /calls': 'api-calls', 'GET /exports': 'exports' },
      enforce: true,
      idempotencyKey: true,
      store: new RedisStore({ sendCommand: client.sendCommand, prefix, ...storeOptions }),
      ...meterOverrides,
    });
    const kana = env.trackTest(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => {
      app.get('/calls', (_req, res) => res.json({ run: ++callRuns }));
      app.post('/calls', (req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => res.json({ run: ++callRuns, hex: Buffer.concat(chunks).toString('hex') }));
      });
      app.get('/exports', (_req, res) => res.json({ run: ++exportRuns }));
    });
    const hit = async (user = 'u1', path = '/calls') => (await request(app).get(path).set('x-user', user)).status;
    instances.push({ kana, app, sink, hit });
  }
  return instances;
}

/**
 * Sends until the answer is not 409, as a client does: the first's response is stored in Redis
 * just after it is sent, so a retry on another instance may come a few ms early.
 */
async function untilStored(send: () => request.Test): Promise<request.Response> {
  for (let attempt = 0; ; attempt++) {
    const response = await send();
    if (response.status !== 409 || attempt === 50) return response;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function checksOf(userId: string, featureId: string) {
  return env.emulator
    .requests()
    .filter((sent) => sent.fieldNames.includes('canUseFeature'))
    .filter((sent) => JSON.stringify(sent.variables).includes(`"${userId}"`))
    .filter((sent) => JSON.stringify(sent.variables).includes(`"${featureId}"`));
}

describe.skipIf(redisSkipReason)('kanaMeter with RedisStore', () => {
  it('two instances in turn pass exactly the allowance, with one Kana check, and Kana records exactly that', async () => {
    const [a, b] = (await fleet(2)) as [Instance, Instance];
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push(await (i % 2 === 0 ? a : b).hit());
    expect(statuses.filter((status) => status === 200)).toHaveLength(12);
    expect(statuses.filter((status) => status !== 200 && status !== 429)).toEqual([]);
    await Promise.all([a.kana.flush(), b.kana.flush()]);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(12);
    expect(checksOf('u1', 'api-calls')).toHaveLength(1);
    expect(a.kana.stats().checks + b.kana.stats().checks).toBe(1);
    expect(a.kana.stats().sharedAnswers + b.kana.stats().sharedAnswers).toBe(1);
    expect(a.kana.stats()).toMatchObject({ storeAvailable: true, storeFailures: 0, storeFallbacks: 0 });
    expect(a.kana.stats().storeCommands).toBeGreaterThan(0);
  });

  it('concurrent misses on both instances make one Kana check; the other waits for its answer', async () => {
    const [a, b] = (await fleet(2)) as [Instance, Instance];
    env.emulator.failNext({ delayMs: 150 }, { operation: 'canUseFeature' }); // a slow check: the other instance misses meanwhile
    const statuses = await Promise.all([a.hit('u2'), b.hit('u2'), a.hit('u2'), b.hit('u2')]);
    expect(statuses).toEqual([200, 200, 200, 200]);
    expect(checksOf('u2', 'api-calls')).toHaveLength(1);
  });

  it('a retry with the same Idempotency-Key on the other instance is a replay: handler not run, not billed nor charged', async () => {
    const [a, b] = (await fleet(2)) as [Instance, Instance];
    const runsBefore = callRuns;
    const first = await request(a.app).get('/calls').set('x-user', 'u3').set('idempotency-key', 'order-7').expect(200);
    const retried = await untilStored(() =>
      request(b.app).get('/calls').set('x-user', 'u3').set('idempotency-key', 'order-7'),
    );
    expect(retried.status).toBe(200);
    expect(retried.text).toBe(first.text);
    expect(retried.headers['idempotent-replayed']).toBe('true');
    // The same key with another request, on either instance: 422, not run.
    await request(b.app).get('/calls?x=1').set('x-user', 'u3').set('idempotency-key', 'order-7').expect(422);
    // The same key from another user is another request.
    await request(b.app).get('/calls').set('x-user', 'u2').set('idempotency-key', 'order-7').expect(200);
    expect(callRuns - runsBefore).toBe(2);
    await Promise.all([a.kana.flush(), b.kana.flush()]);
    expect(env.emulator.usage('u3', 'api-calls')).toBe(1);
    expect(env.emulator.usage('u2', 'api-calls')).toBe(1);
    expect(b.kana.stats().idempotentReplays).toBe(1);
  });

  it('a keyed body waits whole while the gate asks Redis, reaches the handler intact, and its retry elsewhere replays', async () => {
    const [a, b] = (await fleet(2)) as [Instance, Instance];
    const body = randomBytes(200_000);
    const post = (instance: Instance, sent: Buffer) =>
      request(instance.app)
        .post('/calls')
        .set('x-user', 'u1')
        .set('idempotency-key', 'upload-1')
        .set('content-type', 'application/octet-stream')
        .send(sent);
    const first = await post(a, body).expect(200);
    expect(first.body.hex).toBe(body.toString('hex'));
    const retry = await untilStored(() => post(b, body));
    expect(retry.status).toBe(200);
    expect(retry.text).toBe(first.text);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    await post(b, randomBytes(10)).expect(422);
    await Promise.all([a.kana.flush(), b.kana.flush()]);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
  });

  it('stored responses are bounded for the fleet: maxKeys counts the keys every instance stored', async () => {
    const [a, b] = (await fleet(2, {}, { idempotencyKey: { maxKeys: 2 } })) as [Instance, Instance];
    const keyed = async (instance: Instance, key: string) => {
      const response = await untilStored(() =>
        request(instance.app).get('/calls').set('x-user', 'u3').set('idempotency-key', key),
      );
      expect(response.status).toBe(200);
      return response;
    };
    await keyed(a, 'k1');
    await keyed(b, 'k2');
    await keyed(a, 'k3'); // the fleet keeps two: k1 goes
    await expect.poll(() => a.kana.stats().idempotencyEvictions).toBe(1);
    expect((await keyed(b, 'k2')).headers['idempotent-replayed']).toBe('true');
    expect((await keyed(b, 'k1')).headers['idempotent-replayed']).toBeUndefined();
  });

  it.skipIf(redisIsExternal)(
    'with Redis down, a keyed request runs as one without a key: a retry runs again and is billed, never free',
    async () => {
      const [a] = (await fleet(1, { timeoutMs: 300 }, { routes: { 'GET /exports': 'exports' } })) as [Instance];
      const runsBefore = callRuns;
      await a.hit('u1', '/exports'); // Kana's answer cached for this user, before Redis goes
      await redis.kill();
      try {
        const keyed = () =>
          request(a.app).get('/exports').set('x-user', 'u1').set('idempotency-key', 'while-down').expect(200);
        expect((await keyed()).headers['idempotent-replayed']).toBeUndefined();
        expect((await keyed()).headers['idempotent-replayed']).toBeUndefined();
        expect(callRuns).toBe(runsBefore);
        await a.kana.flush();
        expect(env.emulator.usage('u1', 'exports')).toBe(3);
        expect(a.kana.stats().idempotentReplays).toBe(0);
      } finally {
        await redis.restart();
      }
    },
  );

  it("an instance's close() gives its unspent units back at once for the others", async () => {
    const [a, b] = (await fleet(2)) as [Instance, Instance];
    expect(await a.hit()).toBe(200);
    expect(a.kana.stats().storeLeasedUnits).toBeGreaterThan(1); // a block, not one unit
    await a.kana.close();
    let passed = 0;
    while ((await b.hit()) === 200) passed++;
    expect(passed).toBe(11);
    await b.kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(12);
  });

  it('unlimited features take no lease: decided from the shared answer with no store call per request', async () => {
    const [a, b] = (await fleet(2)) as [Instance, Instance];
    await a.hit('u1', '/exports');
    await b.hit('u1', '/exports');
    const before = a.kana.stats().storeCommands + b.kana.stats().storeCommands;
    for (let i = 0; i < 20; i++) expect(await (i % 2 ? a : b).hit('u1', '/exports')).toBe(200);
    expect(a.kana.stats().storeCommands + b.kana.stats().storeCommands).toBe(before);
    expect(a.kana.stats().storeLeases).toBe(0);
  });

  describe("issue 10's guarantees across instances", () => {
    it('record() on one instance counts against the allowance on the other; check() answers from the same store', async () => {
      const [a, b] = (await fleet(2)) as [Instance, Instance];
      expect(await a.hit()).toBe(200);
      a.kana.record('u1', 'api-calls', 8); // a background job: 9 of 12 used, past a's block
      expect(await a.hit()).toBe(200); // 10 of 12: its reservation reported the 9 first
      const checked = await b.kana.check('u1', 'api-calls', 2);
      expect(checked).toMatchObject({ allowed: true, source: 'kana', budget: 12 });
      expect(await b.hit()).toBe(200);
      expect(await b.hit()).toBe(200);
      expect(await b.hit()).toBe(429);
      expect(await a.hit()).toBe(429);
      expect(await b.kana.check('u1', 'api-calls')).toMatchObject({ allowed: false, reason: 'limit-reached' });
      await Promise.all([a.kana.flush(), b.kana.flush()]);
      expect(env.emulator.usage('u1', 'api-calls')).toBe(12);
    });

    it('stale-if-error: with Kana down, the expired shared answer keeps deciding for both, and stops at the allowance', async () => {
      // entitlementTtl 0: every answer is expired at once, so every request asks again.
      const [a, b] = (await fleet(2, {}, { entitlementTtl: 0, checkTimeoutMs: 200 })) as [Instance, Instance];
      expect(await a.hit('u2')).toBe(200);
      expect(await b.hit('u2')).toBe(200);
      await env.emulator.setOffline(true);
      try {
        const statuses: number[] = [];
        for (let i = 0; i < 16; i++) statuses.push(await (i % 2 ? a : b).hit('u2'));
        expect(statuses.filter((status) => status === 200)).toHaveLength(10);
        expect(statuses.filter((status) => status === 429)).toHaveLength(6);
        expect(a.kana.stats().staleHits + b.kana.stats().staleHits).toBe(16);
      } finally {
        await env.emulator.setOffline(false);
      }
      await Promise.all([a.kana.flush(), b.kana.flush()]);
      expect(env.emulator.usage('u2', 'api-calls')).toBe(12);
    });

    it('shadow mode: requests past the shared allowance are served, billed and counted as would-be refusals', async () => {
      const [a, b] = (await fleet(2, {}, { enforce: 'shadow' })) as [Instance, Instance];
      for (let i = 0; i < 16; i++) expect(await (i % 2 ? a : b).hit('u3')).toBe(200);
      expect(a.kana.stats().shadowDenied + b.kana.stats().shadowDenied).toBe(4);
      await Promise.all([a.kana.flush(), b.kana.flush()]);
      expect(env.emulator.usage('u3', 'api-calls')).toBe(16);
    });
  });

  it.skipIf(redisIsExternal)(
    'Redis going away fails no request: decided per instance (logged once), usage all delivered; shared again when it is back',
    async () => {
      const [a, b] = (await fleet(2, { timeoutMs: 300 })) as [Instance, Instance];
      expect(await a.hit('u2')).toBe(200);
      expect(await b.hit('u2')).toBe(200);
      await redis.kill();
      const statuses: number[] = [];
      for (let i = 0; i < 20; i++) statuses.push(await (i % 2 === 0 ? a : b).hit('u2'));
      // Per instance, each spends what it believes is left: no request fails, none is thrown.
      expect(statuses.filter((status) => status !== 200 && status !== 429)).toEqual([]);
      expect(a.kana.stats()).toMatchObject({ storeAvailable: false, storeOutages: 1 });
      expect(a.kana.stats().storeFallbacks).toBeGreaterThan(0);
      expect(a.sink.withCode(logCodes.storeUnavailable)).toHaveLength(1);
      await redis.restart();
      // Back: the next store calls get through, one info line.
      const storeAvailable = async () => {
        await a.hit('u3');
        return a.kana.stats().storeAvailable;
      };
      await expect.poll(storeAvailable, { timeout: 10_000 }).toBe(true);
      expect(a.sink.withCode(logCodes.storeAvailable)).toHaveLength(1);
      expect(a.sink.withCode(logCodes.storeUnavailable)).toHaveLength(1);
      await Promise.all([a.kana.flush(), b.kana.flush()]);
      const passed = statuses.filter((status) => status === 200).length + 2;
      expect(env.emulator.usage('u2', 'api-calls')).toBe(passed);
    },
  );
});
