// The defaults the options' TSDoc and docs/options.md promise: read from the frozen config, and where it matters, seen in behaviour.

import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { getDefaultLogger } from '../src/config/logger.js';
import { DEFAULT_CLOSE_TIMEOUT_MS } from '../src/delivery/queue.js';
import {
  DEFAULT_CHECK_TIMEOUT_MS,
  DEFAULT_ENDPOINT,
  type KanaMeterOptions,
  type KanaMeterStats,
  kanaMeter,
  logCodes,
} from '../src/index.js';
import type { ClientSettings } from '../src/kana/client.js';
import { parseOptions } from '../src/options.js';
import { basicSeed, createLogSink, expressVersions, meteredApp } from './helpers/app.js';
import { deferred } from './helpers/deferred.js';
import { useEmulator } from './helpers/emulator.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(basicSeed);
});

describe('the defaults, as parsed', () => {
  it('from only apiKey and userId', () => {
    const config = parseOptions({ apiKey: 'prv_test_abc', userId: () => 'u1' });
    expect(Object.isFrozen(config)).toBe(true);
    expect(config).toMatchObject({
      flushInterval: 1000,
      concurrency: 8,
      retry: { retries: 5, minTimeout: 100, maxTimeout: 10_000, factor: 2, randomize: true },
      maxPendingKeys: 50_000,
      spool: undefined,
      matchRoute: undefined, // routes: {}
      isSuccess: undefined, // 2xx
      onDeliveryFailure: undefined,
      onDrop: undefined,
      metrics: undefined,
      enforce: false,
      onDenied: undefined,
      onKanaError: 'allow',
      checkTimeoutMs: 2000,
      entitlementTtl: 30_000,
      maxEntitlements: 10_000,
      rateLimitHeaders: true,
    });
    expect(config.client).toEqual({
      apiKey: 'prv_test_abc',
      endpoint: 'https://api.usekana.com/graphql',
      mutation: 'createUsageEvent',
      timeoutMs: 10_000,
      fetch: undefined, // node:http(s), or globalThis.fetch when the host replaced it: chosen at call time
    } satisfies ClientSettings);
    expect(DEFAULT_ENDPOINT).toBe('https://api.usekana.com/graphql');
    expect(DEFAULT_CHECK_TIMEOUT_MS).toBe(2000);
    expect(DEFAULT_CLOSE_TIMEOUT_MS).toBe(10_000);
  });

  it('the logger: pino at level warn, named kana-meter', () => {
    const { logger } = parseOptions({ apiKey: 'prv_test_abc', userId: () => 'u1' });
    expect(logger).toBe(getDefaultLogger());
    const pino = logger as unknown as { level: string; bindings(): Record<string, unknown> };
    expect(pino.level).toBe('warn');
    expect(pino.bindings()).toMatchObject({ name: 'kana-meter' });
  });

  it('spool.writeAhead is false; each retry option alone keeps the others at their defaults', () => {
    const config = parseOptions({
      apiKey: 'prv_test_abc',
      userId: () => 'u1',
      spool: { path: 'x' },
      retry: { retries: 1 },
    });
    expect(config.spool).toEqual({ path: 'x', writeAhead: false });
    expect(config.retry).toEqual({ retries: 1, minTimeout: 100, maxTimeout: 10_000, factor: 2, randomize: true });
  });
});

describe('the defaults, in behaviour', () => {
  /** A kanaMeter with nothing but what the test sets, a log sink, and a fetch that reports each call. */
  function setup(overrides: Partial<KanaMeterOptions>, onCall: () => Promise<void> | void = () => {}) {
    const sink = createLogSink();
    const kana = env.track(
      kanaMeter({
        apiKey: env.emulator.apiKey,
        endpoint: env.emulator.url,
        userId: (req) => req.get('x-user'),
        routes: { 'GET /r': 'reports' },
        logger: sink.logger,
        fetch: async (input, init) => {
          await onCall();
          return fetch(input, init);
        },
        ...overrides,
      }),
    );
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    return { kana, sink, hit: (user = 'u1') => request(app).get('/r').set('x-user', user).expect(200) };
  }

  it('flushInterval 1000: usage waits about a second to be coalesced, then goes without flush()', async () => {
    const firstCall = deferred<number>();
    const { hit } = setup({}, () => firstCall.resolve(Date.now()));
    await hit();
    const captured = Date.now();
    await hit(); // coalesced into the same call
    expect((await firstCall.promise) - captured).toBeGreaterThanOrEqual(990);
    // It went by itself: no flush() was called. Wait for Kana to apply it.
    while (env.emulator.usage('u1', 'reports') < 2) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(env.emulator.usageCalls()).toHaveLength(1);
  });

  it('retry.retries 5: six attempts before Kana is declared unavailable', async () => {
    const atOutage = deferred<KanaMeterStats>();
    const logger = {
      error() {},
      info() {},
      debug() {},
      // Read at the moment of the warning: probes follow at once with maxTimeout 1.
      warn: (line: { code?: string }) => {
        if (line.code === logCodes.kanaUnavailable) atOutage.resolve(kana.stats());
      },
    };
    const { kana, hit } = setup({ retry: { minTimeout: 1, maxTimeout: 1 }, logger });
    env.emulator.failNext({ status: 503 }, { times: 100 });
    await hit();
    void kana.flush();
    expect(await atOutage.promise).toMatchObject({ calls: 6, retries: 5, kanaAvailable: false });
  });

  it('concurrency 8: eight calls in flight at most, each carrying up to 20 keys', async () => {
    const held: (() => void)[] = [];
    let holding = true;
    const eightInFlight = deferred();
    const { kana, hit } = setup({}, () => {
      if (!holding) return;
      if (held.length === 7) eightInFlight.resolve();
      return new Promise<void>((resolve) => held.push(resolve));
    });
    // 200 keys: eight calls of 20 in flight, then the 40 left in two more.
    env.emulator.seed({ users: Array.from({ length: 200 }, (_, i) => ({ id: `user-${i}` })) });
    for (let i = 0; i < 200; i++) await hit(`user-${i}`);
    const flushed = kana.flush();
    await eightInFlight.promise;
    // Every call that could start has started by the next turn of the event loop.
    await new Promise((resolve) => setImmediate(resolve));
    expect(held).toHaveLength(8);
    expect(kana.stats().inFlight).toBe(8);
    holding = false;
    for (const release of held) release();
    await flushed;
    expect(kana.stats()).toMatchObject({ delivered: 200, inFlight: 0, calls: 10 });
    expect(env.emulator.usageCalls().filter((event) => event.userId.startsWith('user-'))).toHaveLength(200);
  });

  it('enforce false: a mapped route is not checked', async () => {
    const { kana, hit } = setup({});
    await hit();
    await kana.flush();
    expect(env.emulator.requests().map((sent) => sent.fieldNames)).toEqual([['createUsageEvent']]);
  });
});
