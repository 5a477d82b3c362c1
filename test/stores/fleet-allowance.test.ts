// One allowance across real processes sharing one redis-server, whatever the usage source and whatever fails: a worker's
// record() counted by the API instances at once, requests pipelined on one connection to each instance, holds for jobs
// on 3 instances, maxBlock capping what a SIGKILLed instance locks away after a burst, and FLUSHALL mid-traffic never
// passing more than the budget.

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type KanaEmulator, startKanaEmulator } from '../../src/emulator/index.js';
import type { KanaMeterStats } from '../../src/index.js';
import { type FleetProcess, startFleetProcess } from '../helpers/fleet-process.js';
import { pipelinedRequests } from '../helpers/raw-http.js';
import { type RedisServer, redisSkipReason, startRedisServer } from '../helpers/redis.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const LEASE_MS = 1500;

/** Budgets of api-calls per user. */
const PLANS: Record<string, number> = { worker: 30, jobs: 5, burst: 1000, flush: 20, rebuilt: 20, pipelined: 20 };

type Instance = FleetProcess;

describe.skipIf(redisSkipReason)('one allowance across processes sharing one Redis', { timeout: 90_000 }, () => {
  let redis: RedisServer;
  let emulator: KanaEmulator;
  let running: Instance[] = [];

  async function spawnInstance(client: string, env: Record<string, string> = {}): Promise<Instance> {
    const instance = await startFleetProcess({
      KANA_ENDPOINT: emulator.url,
      KANA_API_KEY: emulator.apiKey,
      REDIS_URL: redis.url,
      REDIS_CLIENT: client,
      STORE_PREFIX: 'allowance:',
      LEASE_MS: String(LEASE_MS),
      ...env,
    });
    running.push(instance);
    return instance;
  }

  const spawnFleet = (env?: Record<string, string>) =>
    Promise.all(['node-redis', 'ioredis', 'node-redis RESP3'].map((client) => spawnInstance(client, env)));

  function ask<T>(instance: Instance, message: Record<string, unknown>, reply: string): Promise<T> {
    return new Promise((resolve) => {
      const onMessage = (answer: { type: string } & T) => {
        if (answer.type !== reply) return;
        instance.child.off('message', onMessage);
        resolve(answer);
      };
      instance.child.on('message', onMessage);
      instance.child.send(message);
    });
  }

  async function hit(instance: Instance, user: string, path = '/calls'): Promise<number> {
    const response = await fetch(`http://127.0.0.1:${instance.port}${path}`, { headers: { 'x-user': user } });
    await response.body?.cancel();
    return response.status;
  }

  const flushAll = (instances: Instance[]) =>
    Promise.all(instances.map((one) => ask<{ stats: KanaMeterStats }>(one, { type: 'flush' }, 'flushed')));

  const count = (statuses: number[], status: number) => statuses.filter((one) => one === status).length;

  /** Requests in turn until each instance has refused one in a row (none has units left); the statuses. */
  async function untilRefused(instances: Instance[], user: string): Promise<number[]> {
    const statuses: number[] = [];
    const done = () =>
      statuses.length >= instances.length && statuses.slice(-instances.length).every((one) => one === 429);
    for (let i = 0; !done(); i++) statuses.push(await hit(instances[i % instances.length] as Instance, user));
    return statuses;
  }

  beforeAll(async () => {
    redis = await startRedisServer();
    const users = Object.keys(PLANS);
    emulator = await startKanaEmulator({
      seed: {
        users: users.map((id) => ({ id })),
        features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
        packages: users.map((user) => ({
          id: `plan-${user}`,
          features: [{ id: 'api-calls', limit: PLANS[user] as number }],
        })),
        subscriptions: users.map((userId) => ({ userId, packageId: `plan-${userId}` })),
      },
    });
  }, 60_000);

  afterEach(async () => {
    for (const instance of running) instance.child.kill('SIGKILL');
    await Promise.all(running.map((instance) => instance.exited));
    running = [];
  });

  afterAll(async () => {
    await emulator?.close();
    await redis?.stop();
  });

  it("a worker's record() counts for the API instances at once: 20 of 30 recorded, then the API serves 10", async () => {
    // The worker delivers late (as under load): only the store can tell the API instance about its usage.
    const [worker, api] = await Promise.all([
      spawnInstance('ioredis', { FLUSH_INTERVAL: '3000' }),
      spawnInstance('node-redis'),
    ]);
    await ask(worker as Instance, { type: 'record', user: 'worker', times: 20 }, 'recorded');
    await sleep(300);
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push(await hit(api as Instance, 'worker'));
    // 9 would be a unit parked at a block boundary; 11 or more, an overshoot.
    expect(count(statuses, 200)).toBeGreaterThanOrEqual(9);
    expect(count(statuses, 200)).toBeLessThanOrEqual(10);
    await flushAll([worker as Instance, api as Instance]);
    expect(emulator.usage('worker', 'api-calls')).toBeLessThanOrEqual(30);
  });

  it('HTTP/1.1 pipelining: 30 requests written at once on one connection to each of 3 instances, budget 20: 20 served, Kana records 20', async () => {
    const fleet = await spawnFleet();
    const statuses = (
      await Promise.all(fleet.map((one) => pipelinedRequests(one.port, 30, 'GET', '/calls', { 'x-user': 'pipelined' })))
    ).flat();
    expect(statuses).toHaveLength(90);
    expect(count(statuses, 200)).toBe(20);
    expect(count(statuses, 429)).toBe(70);
    await flushAll(fleet);
    expect(emulator.usage('pipelined', 'api-calls')).toBe(20);
  });

  it('holds for jobs: 3 instances, 15 jobs at once holding 1 unit each, budget 5: exactly 5 run, Kana records 5', async () => {
    const fleet = await spawnFleet();
    const done = await Promise.all(
      fleet.map((instance) =>
        ask<{ allowed: number }>(
          instance,
          { type: 'jobs', user: 'jobs', times: 5, mode: 'hold', workMs: 300 },
          'jobs-done',
        ),
      ),
    );
    expect(done.reduce((sum, one) => sum + one.allowed, 0)).toBe(5);
    await flushAll(fleet);
    expect(emulator.usage('jobs', 'api-calls')).toBe(5);
  });

  it('maxBlock caps what one instance reserves, bursts included: SIGKILLed in a burst of 200, it locks away at most 64', async () => {
    // A long lease: what c locked away is measured before it ends.
    const fleet = await spawnFleet({ LEASE_MS: '60000' });
    const [a, b, c] = fleet as [Instance, Instance, Instance];
    let holding = 0;
    c.child.on('message', (message: { type: string; count: number }) => {
      if (message.type === 'holding') holding = message.count;
    });
    // 200 requests at once whose handlers never end: each holds its unit until c dies. Past maxBlock (64)
    // held, the others wait for units to come free (at most a second), then are refused.
    const burst = Array.from({ length: 200 }, () => hit(c, 'burst', '/hold').catch(() => 0));
    const answered = await Promise.all(burst.map((one) => Promise.race([one, sleep(5000).then(() => -1)])));
    expect(holding).toBeGreaterThan(0);
    expect(holding).toBeLessThanOrEqual(64);
    expect(count(answered, 429)).toBe(200 - holding);
    c.child.kill('SIGKILL');
    await c.exited;
    const statuses = await untilRefused([a, b], 'burst');
    // Before c's lease ends, the others pass all but what c locked away: its holds and its block.
    const locked = 1000 - count(statuses, 200);
    expect(locked).toBeGreaterThanOrEqual(holding);
    expect(locked).toBeLessThanOrEqual(64);
  });

  it('FLUSHALL mid-traffic never passes more than the budget: 12 of 20 used, 8 in flight, flushed, then 60 requests', async () => {
    const fleet = await spawnFleet();
    let holding = 0;
    for (const instance of fleet) {
      instance.child.on('message', (message: { type: string }) => {
        if (message.type === 'holding') holding++;
      });
    }
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push(await hit(fleet[i % 3] as Instance, 'flush'));
    expect(count(statuses, 200)).toBe(12);
    // 8 more units held by requests in flight: the whole allowance is taken.
    let refused = 0;
    const inFlight = Array.from({ length: 8 }, (_, i) =>
      hit(fleet[i % 3] as Instance, 'flush', '/hold').then((status) => {
        if (status !== 200) refused++;
        return status;
      }),
    );
    // (One may be refused early: another instance still has the unit in its block.)
    while (holding + refused < 8) await sleep(20);
    await redis.command('FLUSHALL');
    statuses.push(...(await Promise.all(Array.from({ length: 60 }, (_, i) => hit(fleet[i % 3] as Instance, 'flush')))));
    await Promise.all(fleet.map((instance) => ask(instance, { type: 'release' }, 'released')));
    statuses.push(...(await Promise.all(inFlight)));
    expect(count(statuses, 200)).toBeLessThanOrEqual(20);
    // Once the instances have reported (at most 2 s), nothing more passes either: the allowance is used up.
    await sleep(2500);
    statuses.push(...(await untilRefused(fleet, 'flush')));
    expect(count(statuses, 200)).toBeLessThanOrEqual(20);
    await flushAll(fleet);
    expect(emulator.usage('flush', 'api-calls')).toBe(count(statuses, 200));
  });

  it('after FLUSHALL the rest of an allowance passes again once the instances have reported: 12 of 20 used, then exactly 8', async () => {
    const fleet = await spawnFleet();
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push(await hit(fleet[i % 3] as Instance, 'rebuilt'));
    await redis.command('FLUSHALL');
    statuses.push(
      ...(await Promise.all(Array.from({ length: 30 }, (_, i) => hit(fleet[i % 3] as Instance, 'rebuilt')))),
    );
    expect(count(statuses, 200)).toBeLessThanOrEqual(20);
    await sleep(2500);
    statuses.push(...(await untilRefused(fleet, 'rebuilt')));
    expect(count(statuses, 200)).toBe(20);
    await flushAll(fleet);
    expect(emulator.usage('rebuilt', 'api-calls')).toBe(20);
  });
});
