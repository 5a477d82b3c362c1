// Several real processes, one allowance: 3 instances (each its own process: Express + kanaMeter + RedisStore, over node-redis,
// ioredis and node-redis RESP3) against the emulator and a real redis-server. Requests passed and usage Kana recorded, against
// each budget: in turn, in a burst with slow handlers, many users and features at once; one Kana check per key; an instance
// SIGKILLed while holding units; Redis killed mid-traffic, then restarted.

import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KanaEmulator, startKanaEmulator } from '../../src/emulator/index.js';
import { type KanaMeterStats, logCodes } from '../../src/index.js';
import type { LogLine } from '../helpers/app.js';
import { type RedisServer, redisIsExternal, redisSkipReason, startRedisServer } from '../helpers/redis.js';

/** Short, so that the SIGKILL test waits little for the dead instance's units. */
const LEASE_MS = 1500;
const FIXTURE = fileURLToPath(new URL('../fixtures/fleet-instance.ts', import.meta.url));
const CLIENTS = ['node-redis', 'ioredis', 'node-redis RESP3'] as const;

/** Budgets per user (api-calls; the "many" users also have reports). */
const PLANS: Record<string, { api: number; reports?: number }> = {
  turn: { api: 30 },
  burst: { api: 20 },
  shared: { api: 1000 },
  kill: { api: 10 },
  outage: { api: 1000 },
  after: { api: 15 },
  ...Object.fromEntries(Array.from({ length: 6 }, (_, i) => [`m${i}`, { api: 8 + i, reports: 3 + i }])),
};

interface Instance {
  readonly name: string;
  readonly child: ChildProcess;
  readonly port: number;
  readonly logs: LogLine[];
  readonly exited: Promise<void>;
}

describe.skipIf(redisSkipReason)('a fleet of 3 processes sharing one Redis', () => {
  let redis: RedisServer;
  let emulator: KanaEmulator;
  let fleet: Instance[] = [];

  async function spawnInstance(name: string, client: string): Promise<Instance> {
    const child = fork(FIXTURE, [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
      env: {
        ...process.env,
        KANA_ENDPOINT: emulator.url,
        KANA_API_KEY: emulator.apiKey,
        REDIS_URL: redis.url,
        REDIS_CLIENT: client,
        STORE_PREFIX: 'fleet:',
        LEASE_MS: String(LEASE_MS),
      },
    });
    const logs: LogLine[] = [];
    let partial = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (line.startsWith('{')) logs.push(JSON.parse(line) as LogLine);
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const port = await new Promise<number>((resolve, reject) => {
      child.once('message', (message: { type: string; port: number }) => resolve(message.port));
      void exited.then(() => reject(new Error(`instance ${name} exited before it was ready`)));
    });
    return { name, child, port, logs, exited };
  }

  function ask<T>(instance: Instance, type: string, reply: string): Promise<T> {
    return new Promise((resolve) => {
      const onMessage = (message: { type: string } & T) => {
        if (message.type !== reply) return;
        instance.child.off('message', onMessage);
        resolve(message);
      };
      instance.child.on('message', onMessage);
      instance.child.send({ type });
    });
  }

  async function hit(instance: Instance, user: string, path = '/calls'): Promise<number> {
    const response = await fetch(`http://127.0.0.1:${instance.port}${path}`, { headers: { 'x-user': user } });
    await response.body?.cancel();
    return response.status;
  }

  /** Waits until every instance has delivered what it captured; resolves with their stats. */
  async function flushAll(instances = fleet): Promise<KanaMeterStats[]> {
    const flushed = await Promise.all(
      instances.map((instance) => ask<{ stats: KanaMeterStats }>(instance, 'flush', 'flushed')),
    );
    return flushed.map((reply) => reply.stats);
  }

  /** Kana calls that checked this user's entitlement to this feature (batched documents included). */
  function kanaChecks(userId: string, featureId = 'api-calls'): number {
    let checks = 0;
    for (const sent of emulator.requests()) {
      if (!sent.fieldNames.includes('canUseFeature')) continue;
      const variables = sent.variables as Record<string, unknown>;
      if (variables.userId === userId && variables.featureId === featureId) checks++;
      for (let i = 0; `u${i}` in variables; i++) {
        if (variables[`u${i}`] === userId && variables[`f${i}`] === featureId) checks++;
      }
    }
    return checks;
  }

  /** Resolves once Redis's own clock has moved `ms` past now (leases end by Redis's TIME). */
  async function redisTimePasses(ms: number): Promise<void> {
    const time = async () => {
      const [seconds, micros] = (await redis.command('TIME')) as [string, string];
      return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    };
    const target = (await time()) + ms;
    while ((await time()) <= target) await new Promise((resolve) => setTimeout(resolve, 20));
  }

  const count = (statuses: number[], status: number) => statuses.filter((one) => one === status).length;

  beforeAll(async () => {
    redis = await startRedisServer();
    const users = Object.keys(PLANS);
    emulator = await startKanaEmulator({
      seed: {
        users: users.map((id) => ({ id })),
        features: [
          { id: 'api-calls', type: 'CONSUMABLE' },
          { id: 'reports', type: 'CONSUMABLE' },
        ],
        packages: users.map((user) => ({
          id: `plan-${user}`,
          features: [
            { id: 'api-calls', limit: (PLANS[user] as { api: number }).api },
            ...(PLANS[user]?.reports === undefined ? [] : [{ id: 'reports', limit: PLANS[user]?.reports as number }]),
          ],
        })),
        subscriptions: users.map((userId) => ({ userId, packageId: `plan-${userId}` })),
      },
    });
    fleet = await Promise.all(CLIENTS.map((client, i) => spawnInstance(String.fromCharCode(65 + i), client)));
  }, 60_000);

  afterAll(async () => {
    for (const instance of fleet) instance.child.kill('SIGKILL');
    await Promise.all(fleet.map((instance) => instance.exited));
    await emulator?.close();
    await redis?.stop();
  });

  it('3 instances in turn: 90 requests for a budget of 30, exactly 30 pass, Kana records 30, after one check', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 90; i++) statuses.push(await hit(fleet[i % 3] as Instance, 'turn'));
    expect(count(statuses, 200)).toBe(30);
    expect(count(statuses, 429)).toBe(60);
    await flushAll();
    expect(emulator.usage('turn', 'api-calls')).toBe(30);
    expect(kanaChecks('turn')).toBe(1);
  });

  it('3 instances in a burst: 60 requests at once, handlers of 100 ms, budget 20: exactly 20 pass', async () => {
    const statuses = await Promise.all(
      Array.from({ length: 60 }, (_, i) => hit(fleet[i % 3] as Instance, 'burst', '/slow')),
    );
    expect(count(statuses, 200)).toBe(20);
    expect(count(statuses, 429)).toBe(40);
    await flushAll();
    expect(emulator.usage('burst', 'api-calls')).toBe(20);
    expect(kanaChecks('burst')).toBe(1);
  });

  it('many users and features at once: each (user, feature) passes exactly its own budget', async () => {
    const users = Array.from({ length: 6 }, (_, i) => `m${i}`);
    const requests = users.flatMap((user) =>
      ['/calls', '/reports'].flatMap((path) => Array.from({ length: 20 }, (_, i) => ({ user, path, instance: i % 3 }))),
    );
    const statuses = await Promise.all(
      requests.map(({ user, path, instance }) => hit(fleet[instance] as Instance, user, path)),
    );
    await flushAll();
    for (const user of users) {
      const passed = (path: string) =>
        requests.filter((request, i) => request.user === user && request.path === path && statuses[i] === 200).length;
      const plan = PLANS[user] as { api: number; reports: number };
      expect({ user, calls: passed('/calls'), reports: passed('/reports') }).toEqual({
        user,
        calls: plan.api,
        reports: plan.reports,
      });
      expect(emulator.usage(user, 'api-calls')).toBe(plan.api);
      expect(emulator.usage(user, 'reports')).toBe(plan.reports);
      expect(kanaChecks(user, 'api-calls')).toBe(1);
      expect(kanaChecks(user, 'reports')).toBe(1);
    }
  });

  it('the shared answer: 150 requests over 3 instances (the first ones at once) make one Kana check', async () => {
    const first = await Promise.all(fleet.map((instance) => hit(instance, 'shared')));
    expect(first).toEqual([200, 200, 200]);
    for (let i = 0; i < 147; i++) expect(await hit(fleet[i % 3] as Instance, 'shared')).toBe(200);
    const stats = await flushAll();
    expect(kanaChecks('shared')).toBe(1);
    expect(emulator.usage('shared', 'api-calls')).toBe(150);
    // So far 15 keys (turn, burst, 6 users x 2 features, shared): one check each for the whole fleet,
    // and each of the two other instances took that answer from the store.
    const sum = (field: 'checks' | 'sharedAnswers') => stats.reduce((total, one) => total + one[field], 0);
    expect(sum('checks')).toBe(15);
    expect(sum('sharedAnswers')).toBe(2 * 15);
  });

  it.skipIf(redisIsExternal)(
    'Redis killed mid-traffic: every request is still answered (decided per instance), all usage reaches Kana, one warning per instance',
    async () => {
      const statuses: number[] = [];
      for (let i = 0; i < 30; i++) statuses.push(await hit(fleet[i % 3] as Instance, 'outage'));
      await redis.kill();
      for (let i = 0; i < 30; i++) statuses.push(await hit(fleet[i % 3] as Instance, 'outage'));
      expect(count(statuses, 200)).toBe(60);
      await flushAll();
      expect(emulator.usage('outage', 'api-calls')).toBe(60);
      for (const instance of fleet) {
        // Each finds out at its next store call (a reservation, or reporting its totals within 100 ms).
        const stats = async () => (await ask<{ stats: KanaMeterStats }>(instance, 'stats', 'stats')).stats;
        await expect.poll(async () => (await stats()).storeAvailable, { timeout: 10_000, interval: 50 }).toBe(false);
        expect(await stats()).toMatchObject({ storeOutages: 1, failed: 0 });
        expect(instance.logs.filter((line) => line.code === logCodes.storeUnavailable)).toHaveLength(1);
      }
    },
  );

  it.skipIf(redisIsExternal)(
    'Redis restarted (empty): one info line per instance, and the allowance is shared again: 15 of 45 in turn',
    async () => {
      await redis.restart();
      // Any request's store call finds out it is back.
      for (const instance of fleet) {
        const back = async () => {
          await hit(instance, 'outage');
          return instance.logs.filter((line) => line.code === logCodes.storeAvailable).length;
        };
        await expect.poll(back, { timeout: 15_000, interval: 50 }).toBe(1);
      }
      const statuses: number[] = [];
      for (let i = 0; i < 45; i++) statuses.push(await hit(fleet[i % 3] as Instance, 'after'));
      expect(count(statuses, 200)).toBe(15);
      await flushAll();
      expect(emulator.usage('after', 'api-calls')).toBe(15);
      expect(kanaChecks('after')).toBe(1);
    },
  );

  it('an instance SIGKILLed while holding units: the others use them once its lease has passed', async () => {
    const [a, b, c] = fleet as [Instance, Instance, Instance];
    // c reserves a block, and one request of it is in its handler when c dies.
    const holding = new Promise((resolve) => c.child.once('message', resolve));
    const inFlight = hit(c, 'kill', '/hold').catch(() => 'killed');
    await holding;
    c.child.kill('SIGKILL');
    await c.exited;
    expect(await inFlight).toBe('killed');
    const statuses: number[] = [];
    const untilRefused = async () => {
      for (let i = 0; ; i++) {
        const status = await hit(i % 2 ? a : b, 'kill');
        statuses.push(status);
        if (status === 429) return;
      }
    };
    await untilRefused();
    // c's units (its block, the one held in flight) are locked away until its lease ends...
    const beforeLeaseEnd = count(statuses, 200);
    expect(beforeLeaseEnd).toBeGreaterThan(0);
    expect(beforeLeaseEnd).toBeLessThan(10);
    await redisTimePasses(LEASE_MS);
    // ...then they come back: the whole allowance passes, and no more.
    await untilRefused();
    expect(count(statuses, 200)).toBe(10);
    await flushAll([a, b]);
    expect(emulator.usage('kill', 'api-calls')).toBe(10);
    fleet = [a, b];
  });
});
