// RedisStore reads Redis's maxmemory-policy at start: one warning (KANA_METER_STORE_EVICTION) when Redis may evict its keys, none
// with noeviction, and nothing but a debug line when the server refuses CONFIG (the store stays available). Real redis-servers.

import request from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { kanaMeter, logCodes } from '../../src/index.js';
import { RedisStore } from '../../src/stores/redis-store.js';
import { apiCallsSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';
import {
  type RedisServer,
  redisClients,
  redisIsExternal,
  redisSkipReason,
  startRedisServer,
} from '../helpers/redis.js';

const env = useEmulator();
const servers: RedisServer[] = [];
const closers: (() => void)[] = [];

afterAll(async () => {
  for (const close of closers) close();
  await Promise.all(servers.map((server) => server.stop()));
});

async function serverWith(args: string[]): Promise<RedisServer> {
  const server = await startRedisServer({ args });
  servers.push(server);
  return server;
}

/** A kanaMeter with a RedisStore over `client` on `server`, after one enforced request (the check has had time to answer). */
async function started(server: RedisServer, client: (typeof redisClients)[number]) {
  const connection = await client[1](server.url);
  closers.push(() => connection.close());
  const { options, sink } = meterOptions(env.emulator, {
    routes: { 'GET /calls': 'api-calls' },
    enforce: true,
    store: new RedisStore({ sendCommand: connection.sendCommand, prefix: 'eviction:' }),
  });
  const kana = env.trackTest(kanaMeter(options));
  const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/calls', (_req, res) => res.json({})));
  env.emulator.reset();
  env.emulator.seed(apiCallsSeed(5));
  const status = (await request(app).get('/calls').set('x-user', 'u1')).status;
  await new Promise((resolve) => setTimeout(resolve, 50));
  return { kana, sink, status };
}

describe.skipIf(redisSkipReason || redisIsExternal)("RedisStore and Redis's maxmemory-policy", () => {
  for (const client of redisClients.filter(([name]) => name !== 'node-redis RESP3')) {
    describe(client[0], () => {
      for (const policy of ['allkeys-lru', 'volatile-ttl']) {
        it(`maxmemory-policy ${policy}: one warning with a stable code, naming the policy`, async () => {
          const server = await serverWith(['--maxmemory-policy', policy, '--maxmemory', '64mb']);
          const { sink, status, kana } = await started(server, client);
          expect(status).toBe(200);
          const warnings = sink.withCode(logCodes.storeEviction);
          expect(warnings).toHaveLength(1);
          expect(warnings[0]).toMatchObject({ level: 40, policy });
          expect(String(warnings[0]?.msg)).toContain('noeviction');
          expect(kana.stats()).toMatchObject({ storeAvailable: true, storeFailures: 0 });
        });
      }

      it('maxmemory-policy noeviction: no warning', async () => {
        const server = await serverWith(['--maxmemory-policy', 'noeviction']);
        const { sink, status } = await started(server, client);
        expect(status).toBe(200);
        expect(sink.withCode(logCodes.storeEviction)).toEqual([]);
      });

      it('a server that refuses CONFIG: a debug line, no warning, and the store stays available', async () => {
        const server = await serverWith(['--maxmemory-policy', 'allkeys-lru', '--rename-command', 'CONFIG', '']);
        const { sink, status, kana } = await started(server, client);
        expect(status).toBe(200);
        expect(sink.withCode(logCodes.storeEviction)).toEqual([]);
        expect(sink.lines().filter((line) => line.level >= 40)).toEqual([]);
        expect(sink.lines().some((line) => line.level === 20 && line.msg.includes('maxmemory-policy'))).toBe(true);
        expect(kana.stats()).toMatchObject({ storeAvailable: true, storeFailures: 0, storeOutages: 0 });
      });
    });
  }
});
