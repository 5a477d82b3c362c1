// Usage from any source reaches the shared ledger within a report interval, whether or not the process ever checked
// the key: an unenforced metered route and a delta known after the response, on one instance, counted by another
// enforced instance sharing the same redis-server.

import request from 'supertest';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { kanaMeter, meter } from '../../src/index.js';
import { RedisStore } from '../../src/stores/redis-store.js';
import { apiCallsSeed, expressVersions, meteredApp, meterOptions, sleep } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';
import {
  type RedisServer,
  type RedisTestClient,
  redisClients,
  redisSkipReason,
  startRedisServer,
} from '../helpers/redis.js';

const env = useEmulator();

describe.skipIf(redisSkipReason)('usage from any source, on a shared RedisStore', () => {
  let redis: RedisServer;
  const clients: RedisTestClient[] = [];

  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(async () => {
    for (const client of clients) client.close();
    await redis?.stop();
  });
  beforeEach(() => {
    env.emulator.reset();
    env.emulator.seed(apiCallsSeed(30));
  });

  async function instance(enforce: boolean) {
    const client = await (redisClients[0] as (typeof redisClients)[number])[1](redis.url);
    clients.push(client);
    const { options } = meterOptions(env.emulator, {
      routes: { 'GET /calls': 'api-calls' },
      enforce,
      // Delivered late: only the store can tell the other instance about this usage meanwhile.
      flushInterval: 5000,
      store: new RedisStore({ sendCommand: client.sendCommand, prefix: 'sources:' }),
    });
    const kana = env.trackTest(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => {
      app.get('/calls', (_req, res) => res.json({}));
      app.get('/rows', meter('api-calls', { delta: (_req, res) => res.locals.rows, enforce: false }), (_req, res) => {
        res.locals.rows = 10;
        res.json({});
      });
    });
    return { kana, app };
  }

  it('an unenforced route (10 requests) and a late delta (10 units) elsewhere: the enforced instance then passes 10 of 30', async () => {
    const worker = await instance(false);
    const api = await instance(true);
    for (let i = 0; i < 10; i++) await request(worker.app).get('/calls').set('x-user', 'u1').expect(200);
    await request(worker.app).get('/rows').set('x-user', 'u1').expect(200);
    await sleep(300);
    let passed = 0;
    for (let i = 0; i < 30; i++) {
      if ((await request(api.app).get('/calls').set('x-user', 'u1')).status === 200) passed++;
    }
    expect(passed).toBeGreaterThanOrEqual(9);
    expect(passed).toBeLessThanOrEqual(10);
    await Promise.all([worker.kana.flush(), api.kana.flush()]);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(20 + passed);
  });
});
