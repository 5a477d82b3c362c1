// kanaMeter's `store` option and the stores' own options: checked at creation, one store per kanaMeter(); the default
// MemoryStore keeps a ledger only for the keys the cache holds.

import request from 'supertest';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { REPORT_INTERVAL_MS } from '../../src/enforcement/leases.js';
import { kanaMeter, MemoryStore } from '../../src/index.js';
import { RedisStore } from '../../src/stores/redis-store.js';
import { apiCallsSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const base = { apiKey: 'prv_test_abc123', userId: () => 'u1' };
const sendCommand = async () => 'OK';

describe('the store option', () => {
  it.each([
    [{}, /option `store` must be a store such as new RedisStore\(\{ sendCommand \}\).*; got an object/],
    [{ sendCommand }, /option `store` must be a store.*; got an object/], // RedisStore's options, not a store

    ['redis://localhost', /option `store` must be a store.*; got "redis:\/\/localhost"/],
  ])('rejects %j, naming the option', (store, message) => {
    expect(() => kanaMeter({ ...base, store } as never)).toThrow(TypeError);
    expect(() => kanaMeter({ ...base, store } as never)).toThrow(message);
  });

  it('takes a MemoryStore or a RedisStore, each for one kanaMeter() only', () => {
    const memory = new MemoryStore();
    kanaMeter({ ...base, store: memory });
    expect(() => kanaMeter({ ...base, store: memory })).toThrow(
      /option `store` must be a store no other kanaMeter\(\) uses; got a MemoryStore already bound/,
    );
    const redis = new RedisStore({ sendCommand });
    kanaMeter({ ...base, store: redis });
    expect(() => kanaMeter({ ...base, store: redis })).toThrow(/create one RedisStore per kanaMeter\(\)/);
  });

  it.each([
    [undefined, /option `RedisStore` must be an object such as \{ sendCommand \}; got undefined/],
    [{}, /option `RedisStore.sendCommand` must be a function sending one command.*; got undefined/],
    [{ sendCommand, prefix: 7 }, /option `RedisStore.prefix` must be a string; got 7/],
    [{ sendCommand, timeoutMs: 0 }, /option `RedisStore.timeoutMs` must be an integer >= 1; got 0/],
    [{ sendCommand, leaseMs: 50 }, /option `RedisStore.leaseMs` must be an integer >= 100; got 50/],
    [{ sendCommand, maxBlock: 1.5 }, /option `RedisStore.maxBlock` must be an integer >= 1; got 1.5/],
    [{ sendCommand, leaseMs: 20_000, retainMs: 10_000 }, /option `RedisStore.retainMs` must be an integer >= 20000/],
    [{ sendCommand, url: 'redis://x' }, /option `RedisStore.url` must be absent \(known: sendCommand, prefix/],
  ])('new RedisStore(%j) throws a TypeError naming the option', (options, message) => {
    expect(() => new RedisStore(options as never)).toThrow(TypeError);
    expect(() => new RedisStore(options as never)).toThrow(message);
  });
});

describe('the default MemoryStore', () => {
  const env = useEmulator();
  beforeEach(() => {
    env.emulator.reset();
    const users = Array.from({ length: 10 }, (_, i) => `u${i}`);
    env.emulator.seed(apiCallsSeed(100, users));
  });

  it('keeps a ledger only for the keys the cache holds: an evicted key is forgotten with it', async () => {
    const store = new MemoryStore();
    const { options } = meterOptions(env.emulator, {
      routes: { 'GET /calls': 'api-calls' },
      enforce: true,
      maxEntitlements: 3,
      store,
    });
    const kana = env.trackTest(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/calls', (_req, res) => res.json({})));
    for (let i = 0; i < 10; i++) await request(app).get('/calls').set('x-user', `u${i}`).expect(200);
    expect(kana.stats().entitlements).toBe(3);
    expect(store.size).toBe(3);
    expect(kana.stats()).toMatchObject({ storeAvailable: true, storeCommands: 0, storeFallbacks: 0, storeLeases: 3 });
  });
});

describe('the report interval', () => {
  const env = useEmulator();
  beforeEach(() => {
    env.emulator.reset();
    env.emulator.seed(apiCallsSeed(1_000_000));
  });

  it('runs one report timer, however long the key stays busy', async () => {
    // An in-process store answers at once: a report made by a tick used to start a second timer
    // beside the tick's own, so there was one more timer after every interval, all of them ticking.
    const timers: number[] = [];
    const setTimer = globalThis.setTimeout;
    const spy = vi.spyOn(globalThis, 'setTimeout').mockImplementation(((callback: () => void, ms?: number) => {
      if (ms === REPORT_INTERVAL_MS) timers.push(Date.now());
      return setTimer(callback, ms);
    }) as typeof setTimeout);
    try {
      const { options } = meterOptions(env.emulator, {
        routes: { 'GET /calls': 'api-calls' },
        enforce: true,
        store: new MemoryStore(),
      });
      const kana = env.trackTest(kanaMeter(options));
      const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/calls', (_req, res) => res.json({})));
      const started = Date.now();
      while (Date.now() - started < 2_000) await request(app).get('/calls').set('x-user', 'u1').expect(200);
      const lastSecond = timers.filter((at) => at > Date.now() - 1_000).length;
      // One tick per REPORT_INTERVAL_MS: about 10 a second (the bug: 10 more every second).
      expect(lastSecond).toBeGreaterThan(3);
      expect(lastSecond).toBeLessThanOrEqual(15);
    } finally {
      spy.mockRestore();
    }
  });
});
