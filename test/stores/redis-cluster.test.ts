// RedisStore on a real Redis Cluster (3 masters of redis-server): through node-redis's createCluster and ioredis's Cluster, with the
// sendCommand recipes the guide gives, two kanaMeter instances pass one allowance exactly, and share the idempotency window.

import type { Express } from 'express';
import { Cluster } from 'ioredis';
import { createCluster } from 'redis';
import request from 'supertest';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type KanaMeter, kanaMeter } from '../../src/index.js';
import { firstKey, RedisStore, type SendCommand } from '../../src/stores/redis-store.js';
import { expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';
import { type RedisCluster, redisClusterSkipReason, startRedisCluster } from '../helpers/redis-cluster.js';

const env = useEmulator();
let cluster: RedisCluster;
const closers: (() => unknown)[] = [];
let prefixes = 0;
const USERS = Array.from({ length: 8 }, (_, i) => `c${i}`);

beforeAll(async () => {
  if (!redisClusterSkipReason) cluster = await startRedisCluster();
}, 60_000);
afterAll(async () => {
  for (const close of closers) await close();
  await cluster?.stop();
});

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed({
    users: USERS.map((id) => ({ id })),
    features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
    packages: [{ id: 'small', features: [{ id: 'api-calls', limit: 12 }] }],
    subscriptions: USERS.map((userId) => ({ userId, packageId: 'small' })),
  });
});

/** Each client as the guide wires it to a cluster. */
const clusterClients: ReadonlyArray<readonly [string, () => Promise<SendCommand>]> = [
  [
    'node-redis createCluster',
    async () => {
      const client = createCluster({
        rootNodes: cluster.nodes.map(({ host, port }) => ({ url: `redis://${host}:${port}` })),
      });
      client.on('error', () => {});
      await client.connect();
      closers.push(() => client.destroy());
      return (...args: string[]) => client.sendCommand(firstKey(args), false, args);
    },
  ],
  [
    'ioredis Cluster',
    async () => {
      const client = new Cluster([...cluster.nodes], { lazyConnect: true });
      client.on('error', () => {});
      await client.connect();
      closers.push(() => client.disconnect());
      return (command: string, ...args: string[]) => client.call(command, ...args);
    },
  ],
];

interface Instance {
  kana: KanaMeter;
  app: Express;
  hit: (user: string, idempotencyKey?: string) => Promise<number>;
}

async function fleet(connect: () => Promise<SendCommand>): Promise<[Instance, Instance]> {
  const prefix = `cluster${++prefixes}:`;
  const instances: Instance[] = [];
  for (let i = 0; i < 2; i++) {
    const { options } = meterOptions(env.emulator, {
      routes: { 'GET /calls': 'api-calls' },
      enforce: true,
      idempotencyKey: true,
      store: new RedisStore({ sendCommand: await connect(), prefix }),
    });
    const kana = env.trackTest(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/calls', (_req, res) => res.json({})));
    const hit = async (user: string, idempotencyKey?: string) => {
      const sent = request(app).get('/calls').set('x-user', user);
      return (await (idempotencyKey ? sent.set('idempotency-key', idempotencyKey) : sent)).status;
    };
    instances.push({ kana, app, hit });
  }
  return instances as [Instance, Instance];
}

/** Ledger keys with this prefix on each master (KEYS runs per node). */
async function ledgerKeysPerNode(prefix: string): Promise<number[]> {
  const client = createCluster({ rootNodes: [{ url: `redis://${cluster.nodes[0]?.host}:${cluster.nodes[0]?.port}` }] });
  client.on('error', () => {});
  await client.connect();
  try {
    return await Promise.all(
      client.masters.map(async (master) => {
        const node = await client.nodeClient(master);
        return ((await node.sendCommand(['KEYS', `${prefix}l:*`])) as string[]).length;
      }),
    );
  } finally {
    client.destroy();
  }
}

describe.skipIf(redisClusterSkipReason)('RedisStore on a Redis Cluster of 3 masters', () => {
  for (const [name, connect] of clusterClients) {
    describe(name, () => {
      it('two instances in turn pass exactly each allowance, for keys spread over the masters, after one Kana check each', async () => {
        const [a, b] = await fleet(connect);
        const users = USERS.slice(0, 6);
        const passed: Record<string, number> = {};
        for (const user of users) {
          passed[user] = 0;
          for (let i = 0; i < 20; i++) if ((await (i % 2 === 0 ? a : b).hit(user)) === 200) passed[user]++;
        }
        expect(passed).toEqual(Object.fromEntries(users.map((user) => [user, 12])));
        expect(a.kana.stats()).toMatchObject({ storeAvailable: true, storeFailures: 0, storeFallbacks: 0 });
        expect(b.kana.stats()).toMatchObject({ storeAvailable: true, storeFailures: 0, storeFallbacks: 0 });
        expect(a.kana.stats().checks + b.kana.stats().checks).toBe(users.length);
        await Promise.all([a.kana.flush(), b.kana.flush()]);
        for (const user of users) expect(env.emulator.usage(user, 'api-calls')).toBe(12);
        // The ledgers sit on more than one master: commands were routed by key.
        const perNode = await ledgerKeysPerNode(`cluster${prefixes}:`);
        expect(perNode.reduce((sum, keys) => sum + keys, 0)).toBe(users.length);
        expect(perNode.filter((keys) => keys > 0).length).toBeGreaterThan(1);
      });

      it('60 requests at once over both instances: exactly the allowance passes', async () => {
        const [a, b] = await fleet(connect);
        const statuses = await Promise.all(Array.from({ length: 60 }, (_, i) => (i % 2 ? a : b).hit('c6')));
        expect(statuses.filter((status) => status === 200)).toHaveLength(12);
        expect(statuses.filter((status) => status === 429)).toHaveLength(48);
        await Promise.all([a.kana.flush(), b.kana.flush()]);
        expect(env.emulator.usage('c6', 'api-calls')).toBe(12);
      });

      it('a retry with the same Idempotency-Key on the other instance is not billed again', async () => {
        const [a, b] = await fleet(connect);
        expect(await a.hit('c7', 'order-1')).toBe(200);
        await a.kana.flush();
        expect(await b.hit('c7', 'order-1')).toBe(200);
        await Promise.all([a.kana.flush(), b.kana.flush()]);
        expect(env.emulator.usage('c7', 'api-calls')).toBe(1);
        expect(b.kana.stats().idempotentReplays).toBe(1);
      });
    });
  }
});
