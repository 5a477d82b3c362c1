// While Redis is down, the fleet's overshoot is bounded: 3 real processes (test/fixtures/fleet-instance.ts) share an allowance
// with 11 units left when redis-server is stopped (SIGSTOP); each then spends at most its block and its share of what was left,
// so together they pass at most the 11 (the bound docs/several-instances.md states), where each spent all 11 alone before.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KanaEmulator, startKanaEmulator } from '../../src/emulator/index.js';
import { type FleetProcess, startFleetProcess } from '../helpers/fleet-process.js';
import { type RedisServer, redisIsExternal, redisSkipReason, startRedisServer } from '../helpers/redis.js';

const CLIENTS = ['node-redis', 'ioredis', 'node-redis RESP3'] as const;
const BUDGET = 30;
const USED_BEFORE = 19;
const LEFT = BUDGET - USED_BEFORE; // 11 when Redis stops

type Instance = FleetProcess;

describe.skipIf(redisSkipReason || redisIsExternal)('a fleet of 3 processes while Redis is down', () => {
  let redis: RedisServer;
  let emulator: KanaEmulator;
  let fleet: Instance[] = [];

  const spawnInstance = (client: string): Promise<Instance> =>
    startFleetProcess({
      KANA_ENDPOINT: emulator.url,
      KANA_API_KEY: emulator.apiKey,
      REDIS_URL: redis.url,
      REDIS_CLIENT: client,
      STORE_PREFIX: 'outage:',
      LEASE_MS: '1500',
    });

  async function hit(instance: Instance, user: string): Promise<number> {
    const response = await fetch(`http://127.0.0.1:${instance.port}/calls`, { headers: { 'x-user': user } });
    await response.body?.cancel();
    return response.status;
  }

  function flush(instance: Instance): Promise<void> {
    return new Promise((resolve) => {
      const onMessage = (message: { type: string }) => {
        if (message.type !== 'flushed') return;
        instance.child.off('message', onMessage);
        resolve();
      };
      instance.child.on('message', onMessage);
      instance.child.send({ type: 'flush' });
    });
  }

  beforeAll(async () => {
    redis = await startRedisServer();
    emulator = await startKanaEmulator({
      seed: {
        users: [{ id: 'stall' }],
        features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
        packages: [{ id: 'plan', features: [{ id: 'api-calls', limit: BUDGET }] }],
        subscriptions: [{ userId: 'stall', packageId: 'plan' }],
      },
    });
    fleet = await Promise.all(CLIENTS.map((client) => spawnInstance(client)));
  }, 60_000);

  afterAll(async () => {
    redis?.resume();
    for (const instance of fleet) instance.child.kill('SIGKILL');
    await Promise.all(fleet.map((instance) => instance.exited));
    await emulator?.close();
    await redis?.stop();
  });

  it(`Redis stopped with 11 of ${BUDGET} left: 3 instances pass at most 11 (+ n - 1) in 3 seconds of traffic, and Kana records what passed`, async () => {
    let passedBefore = 0;
    for (let i = 0; i < USED_BEFORE; i++) if ((await hit(fleet[i % 3] as Instance, 'stall')) === 200) passedBefore++;
    expect(passedBefore).toBe(USED_BEFORE);
    // Every instance has reported its totals (within 100 ms) before Redis stops.
    await new Promise((resolve) => setTimeout(resolve, 300));
    redis.pause();
    const statuses: number[] = [];
    const until = Date.now() + 3000;
    await Promise.all(
      fleet.map(async (instance) => {
        while (Date.now() < until) statuses.push(await hit(instance, 'stall'));
      }),
    );
    redis.resume();
    const passed = statuses.filter((status) => status === 200).length;
    console.info(`fleet-outage: ${passed} of ${statuses.length} passed with Redis stopped and 11 left`);
    expect(statuses.filter((status) => status !== 200 && status !== 429)).toEqual([]);
    // The guide's bound: what was left, plus n - 1 for what the others reserved in the 100 ms before an instance's last word
    // from Redis (rounded down per instance); and no fewer than what was left less the rounding (n - 1).
    expect(passed).toBeLessThanOrEqual(LEFT + fleet.length - 1);
    expect(passed).toBeGreaterThanOrEqual(LEFT - (fleet.length - 1));
    await Promise.all(fleet.map(flush));
    expect(emulator.usage('stall', 'api-calls')).toBe(USED_BEFORE + passed);
  }, 30_000);
});
