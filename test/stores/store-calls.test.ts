// What a (user, feature) with a request now and then costs in store calls, through the real HTTP stack, RedisStore and a
// real redis-server: far from the end of the allowance a reservation and a report; near the end, every report at once.

import request from 'supertest';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { kanaMeter } from '../../src/index.js';
import { reportScript, reserveScript } from '../../src/stores/ledger-scripts.js';
import { RedisStore } from '../../src/stores/redis-store.js';
import { expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';
import {
  type RedisServer,
  type RedisTestClient,
  redisClients,
  redisSkipReason,
  startRedisServer,
} from '../helpers/redis.js';

const env = useEmulator();
let redis: RedisServer;
let client: RedisTestClient;
let prefixes = 0;
/** Leases of 6 s: renewed, or given back when idle far from the end, 3 s after the store's last answer. */
const LEASE_MS = 6000;

beforeAll(async () => {
  if (redisSkipReason) return;
  redis = await startRedisServer();
  client = await (redisClients[0] as (typeof redisClients)[number])[1](redis.url);
});
afterAll(async () => {
  client?.close();
  await redis?.stop();
});

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed({
    users: [{ id: 'far' }, { id: 'near' }],
    features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
    packages: [
      { id: 'large', features: [{ id: 'api-calls', limit: 1_000_000 }] },
      { id: 'small', features: [{ id: 'api-calls', limit: 12 }] },
    ],
    subscriptions: [
      { userId: 'far', packageId: 'large' },
      { userId: 'near', packageId: 'small' },
    ],
  });
});

interface LedgerCall {
  script: 'reserve' | 'report';
  at: number;
  /** From the ledger scripts' ARGV: id, spent, returned, confirmed, held, leaseMs, retainMs, then report's mode. */
  spent: number;
  confirmed: number;
  mode: string | undefined;
}

/** One instance whose store's ledger calls are recorded at the one seam, its sendCommand. */
function instance() {
  const calls: LedgerCall[] = [];
  const started = Date.now();
  const sendCommand = (...args: string[]) => {
    const script = args[1] === reserveScript.sha ? 'reserve' : args[1] === reportScript.sha ? 'report' : undefined;
    if (args[0] === 'EVALSHA' && script !== undefined) {
      const argv = args.slice(3 + Number(args[2]));
      calls.push({
        script,
        at: Date.now() - started,
        spent: Number(argv[1]),
        confirmed: Number(argv[3]),
        mode: script === 'report' ? argv[7] : undefined,
      });
    }
    return client.sendCommand(...args);
  };
  const { options } = meterOptions(env.emulator, {
    routes: { 'GET /calls': 'api-calls' },
    enforce: true,
    store: new RedisStore({ sendCommand, prefix: `calls${++prefixes}:`, leaseMs: LEASE_MS }),
  });
  const kana = env.trackTest(kanaMeter(options));
  const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/calls', (_req, res) => res.json({})));
  const hit = async (user: string) => (await request(app).get('/calls').set('x-user', user)).status;
  return { kana, calls, hit };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(redisSkipReason)('store calls for a key with a request now and then', () => {
  it('far from the end: a reservation and a report; Kana’s confirmation waits, and the idle block goes back at its renewal, carrying it', async () => {
    const { kana, calls, hit } = instance();
    expect(await hit('far')).toBe(200);
    await sleep(250); // the spending is reported
    await kana.flush(); // then Kana confirms the unit
    await sleep(1300); // idle past a second: near the end, the block would be back by now
    expect(calls.map((call) => [call.script, call.mode])).toEqual([
      ['reserve', undefined],
      ['report', 'keep'], // the spending, within the report interval
    ]);
    expect(calls[1]?.confirmed).toBe(0);
    expect(kana.stats().storeLeases).toBe(1);

    // A second request takes a unit of the same block: no reservation. Its report carries the first confirmation.
    expect(await hit('far')).toBe(200);
    await sleep(250);
    await kana.flush();
    await sleep(LEASE_MS / 2 + 1000);
    const scripts = calls.map((call) => [call.script, call.mode]);
    expect(scripts).toEqual([
      ['reserve', undefined],
      ['report', 'keep'],
      ['report', 'keep'],
      ['report', 'release'],
    ]);
    expect(calls[2]?.confirmed).toBe(1);
    // The release told the store of the second: nothing is counted twice once it answered.
    expect(calls[3]?.confirmed).toBe(2);
    expect(kana.stats().storeLeases).toBe(0);
    expect(env.emulator.usage('far', 'api-calls')).toBe(2);
  });

  it('far from the end: close() gives back a block at rest at once, with its confirmation', async () => {
    const { kana, calls, hit } = instance();
    expect(await hit('far')).toBe(200);
    await sleep(250);
    await kana.flush();
    await sleep(1300); // at rest until its renewal
    expect(kana.stats().storeLeases).toBe(1);
    await kana.close();
    expect(calls.map((call) => [call.script, call.mode, call.confirmed])).toEqual([
      ['reserve', undefined, 0],
      ['report', 'keep', 0],
      ['report', 'release', 1],
    ]);
  });

  it("record() on a key this instance never checked: the turn's records go to the store at once, in one report; more while the ticks report it wait for the next tick", async () => {
    const { kana, calls } = instance();
    for (let i = 0; i < 5; i++) kana.record('far', 'api-calls');
    await new Promise((resolve) => setImmediate(resolve)); // well before a report interval (100 ms)
    expect(calls.map((call) => [call.script, call.mode, call.spent])).toEqual([['report', 'keep', 5]]);

    await sleep(20); // answered
    for (let i = 0; i < 3; i++) kana.record('far', 'api-calls');
    await new Promise((resolve) => setImmediate(resolve));
    expect(calls).toHaveLength(1);
    await sleep(250);
    expect(calls.map((call) => [call.script, call.mode, call.spent])).toEqual([
      ['report', 'keep', 5],
      ['report', 'keep', 8],
    ]);
  });

  it('near the end: Kana’s confirmation is reported within the interval, and the idle block goes back after a second', async () => {
    const { kana, calls, hit } = instance();
    expect(await hit('near')).toBe(200);
    await sleep(250);
    await kana.flush();
    await sleep(1500);
    expect(calls.map((call) => [call.script, call.mode, call.confirmed])).toEqual([
      ['reserve', undefined, 0],
      ['report', 'keep', 0], // the spending
      ['report', 'keep', 1], // Kana's confirmation
      ['report', 'release', 1], // idle for a second
    ]);
    const [, spent, confirmed] = calls as [LedgerCall, LedgerCall, LedgerCall];
    expect(confirmed.at - spent.at).toBeLessThan(1000); // not kept for the release
    expect(kana.stats().storeLeases).toBe(0);
  });
});
