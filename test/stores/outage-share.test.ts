// While Redis is down, each instance spends its share: in one process, two kanaMeter instances (each its own client and RedisStore)
// on a real redis-server that is killed or stalled; an allowance they shared, one the store never saw, and one of a fleet
// that never shared any (it learnt its size from the instances' announcements), split between them, not doubled.

import type { Express } from 'express';
import request from 'supertest';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { type KanaMeter, kanaMeter } from '../../src/index.js';
import { firstKey } from '../../src/stores/first-key.js';
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

beforeAll(async () => {
  if (!redisSkipReason && !redisIsExternal) redis = await startRedisServer();
});
afterAll(async () => {
  for (const client of clients) client.close();
  await redis?.stop();
});

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed({
    users: ['u1', 'u2'].map((id) => ({ id })),
    features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
    packages: [{ id: 'small', features: [{ id: 'api-calls', limit: 12 }] }],
    subscriptions: ['u1', 'u2'].map((userId) => ({ userId, packageId: 'small' })),
  });
});

interface Instance {
  kana: KanaMeter;
  app: Express;
  hit: (user: string) => Promise<number>;
}

async function pair(): Promise<[Instance, Instance]> {
  const instances: Instance[] = [];
  for (let i = 0; i < 2; i++) {
    const client = await (redisClients[i * 2] as (typeof redisClients)[number])[1](redis.url);
    clients.push(client);
    const { options } = meterOptions(env.emulator, {
      routes: { 'GET /calls': 'api-calls' },
      enforce: true,
      store: new RedisStore({ sendCommand: client.sendCommand, prefix: 'share:', timeoutMs: 300 }),
    });
    const kana = env.trackTest(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/calls', (_req, res) => res.json({})));
    instances.push({ kana, app, hit: async (user) => (await request(app).get('/calls').set('x-user', user)).status });
  }
  return instances as [Instance, Instance];
}

describe.skipIf(redisSkipReason || redisIsExternal)(
  'while Redis is down, each of two instances spends its share',
  () => {
    it('an allowance both used (4 of 12 left) and one the store never saw (12): 4 and 12 pass in all, not 8 and 24', async () => {
      const [a, b] = await pair();
      for (let i = 0; i < 8; i++) expect(await (i % 2 ? a : b).hit('u1')).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 250)); // both have reported, and heard back
      await redis.kill();
      const passed = { u1: 0, u2: 0 };
      for (let i = 0; i < 40; i++) {
        for (const user of ['u1', 'u2'] as const) if ((await (i % 2 ? a : b).hit(user)) === 200) passed[user]++;
      }
      expect(passed).toEqual({ u1: 4, u2: 12 });
      expect(a.kana.stats().storeFallbacks).toBeGreaterThan(0);
      await Promise.all([a.kana.flush(), b.kana.flush()]);
      expect(env.emulator.usage('u1', 'api-calls')).toBe(12);
      expect(env.emulator.usage('u2', 'api-calls')).toBe(12);
    });

    it('a fleet just started, Redis stalled before any request: 12 pass in all (6 each), not 12 on each', async () => {
      await redis.restart(); // the test before killed it
      // Only the announcements' timer is faked: the second one, a second on, tells the first instance of the second.
      vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
      let instances: [Instance, Instance];
      try {
        instances = await pair();
        await vi.advanceTimersByTimeAsync(1_000);
      } finally {
        vi.useRealTimers();
      }
      const [a, b] = instances;
      await new Promise((resolve) => setTimeout(resolve, 200)); // both heard the count back
      redis.pause();
      let passed = 0;
      try {
        for (let i = 0; i < 40; i++) if ((await (i % 2 ? a : b).hit('u1')) === 200) passed++;
      } finally {
        redis.resume();
      }
      expect(passed).toBe(12);
      await Promise.all([a.kana.flush(), b.kana.flush()]);
      expect(env.emulator.usage('u1', 'api-calls')).toBe(12);
    });

    it('an instance closed while Redis was stalled is not counted once Redis is back: its queued announcement comes before its leaving', async () => {
      await redis.restart();
      const [a, b] = await pair();
      await new Promise((resolve) => setTimeout(resolve, 200)); // both announced
      expect(Number(await redis.command('ZCARD', 'share:fleet'))).toBe(2);
      redis.pause();
      try {
        await new Promise((resolve) => setTimeout(resolve, 1_100)); // an announcement of each, waiting in Redis's socket
        await b.kana.close({ timeoutMs: 100 });
      } finally {
        redis.resume();
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
      // Before: b counted for 3 s more (its late announcement), and its close left it there.
      expect(Number(await redis.command('ZCARD', 'share:fleet'))).toBe(1);
      expect(a.kana.stats().storeAvailable).toBe(true);
    });
  },
);

describe('firstKey', () => {
  it('is the key a cluster client routes a command of RedisStore by', () => {
    expect(firstKey(['EVALSHA', 'abc', '1', 'kana-meter:l:{u1:api-calls}', 'a', '1'])).toBe(
      'kana-meter:l:{u1:api-calls}',
    );
    expect(firstKey(['EVAL', 'return 1', '0'])).toBeUndefined();
    expect(firstKey(['SET', 'kana-meter:i:k', '1', 'NX', 'PX', '1000'])).toBe('kana-meter:i:k');
    expect(firstKey(['EXISTS', 'kana-meter:i:k'])).toBe('kana-meter:i:k');
    expect(firstKey(['CONFIG', 'GET', 'maxmemory-policy'])).toBeUndefined();
  });
});
