// Delivery against the emulator: retries and their limits, coalescing, concurrency, flush, close, logs.

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Express } from 'express';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { KanaError, type KanaMeterOptions, kanaMeter, logCodes, type UndeliveredUsage } from '../../src/index.js';
import { basicSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(basicSeed);
});

function setup(overrides: Partial<KanaMeterOptions> = {}) {
  const failures: [UndeliveredUsage, KanaError][] = [];
  const { options, sink } = meterOptions(env.emulator, {
    routes: { 'GET /r': 'reports' },
    onDeliveryFailure: (usage, error) => void failures.push([usage, error]),
    ...overrides,
  });
  const kana = kanaMeter(options);
  env.track(kana);
  const app: Express = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
  const hit = (user = 'u1') => request(app).get('/r').set('x-user', user).expect(200);
  return { kana, app, hit, sink, failures };
}

describe('retries (the retry table, end to end)', () => {
  it.each([
    ['HTTP 503', { status: 503 }],
    ['HTTP 502', { status: 502 }],
    ['HTTP 429', { status: 429 }],
    ['HTTP 408', { status: 408 }],
    ['a dropped connection', { drop: true }],
    ['a resolver error at HTTP 200', { graphqlError: { message: 'db down', code: 'INTERNAL_SERVER_ERROR' } }],
    ['HTML from a proxy', { status: 200, body: '<html>gateway</html>' }],
  ] as const)('retries %s and then delivers', async (_name, fault) => {
    const { kana, hit } = setup();
    env.emulator.failNext(fault, { times: 2 });
    await hit();
    await kana.flush();
    expect(env.emulator.usage('u1', 'reports')).toBe(1);
    expect(kana.stats()).toMatchObject({ delivered: 1, failed: 0, retries: 2, calls: 3 });
  });

  it('retries a call that timed out', async () => {
    const { kana, hit } = setup({ timeoutMs: 100 });
    env.emulator.failNext({ delayMs: 400, apply: false });
    await hit();
    await kana.flush();
    expect(env.emulator.usage('u1', 'reports')).toBe(1);
    expect(kana.stats()).toMatchObject({ delivered: 1, retries: 1 });
  });

  it('waits at least Retry-After before retrying a 429', async () => {
    const { kana, hit } = setup({ flushInterval: 0 });
    env.emulator.failNext({ status: 429, retryAfter: 1 });
    await hit();
    const started = Date.now();
    await kana.flush();
    const calls = env.emulator.requests().filter((r) => r.fieldNames.includes('createUsageEvent'));
    expect(calls).toHaveLength(2);
    expect((calls[1]?.at as number) - (calls[0]?.at as number)).toBeGreaterThanOrEqual(990);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it.each([
    ['HTTP 401', { status: 401 }, 'KANA_UNAUTHENTICATED'],
    [
      'an Unauthenticated GraphQL error',
      { graphqlError: { message: 'Unauthenticated', code: 'UNAUTHENTICATED', name: 'AuthenticationError' } },
      'KANA_UNAUTHENTICATED',
    ],
    [
      'a GraphQL validation error',
      { graphqlError: { message: 'invalid', code: 'GRAPHQL_VALIDATION_FAILED' }, httpStatus: 400 },
      'KANA_REJECTED',
    ],
    ['HTTP 404', { status: 404 }, 'KANA_HTTP_ERROR'],
  ] as const)('does not retry %s: the usage fails at once, logged and reported', async (_name, fault, code) => {
    const { kana, hit, sink, failures } = setup();
    env.emulator.failNext(fault);
    await hit();
    await kana.flush();
    expect(kana.stats()).toMatchObject({ calls: 1, retries: 0, failed: 1, delivered: 0, pending: 0 });
    expect(failures).toHaveLength(1);
    expect(failures[0]?.[0]).toMatchObject({ userId: 'u1', featureId: 'reports', delta: 1, events: 1 });
    expect(failures[0]?.[1]).toBeInstanceOf(KanaError);
    expect(failures[0]?.[1].code).toBe(code);
    const [line] = sink.withCode(logCodes.deliveryFailed);
    expect(line).toMatchObject({ level: 50, userId: 'u1', featureId: 'reports', delta: 1, err: { code } });
  });

  it('keeps an event whose retries run out on a transient error, and delivers it once Kana answers', async () => {
    const { kana, hit, failures, sink } = setup({ retry: { retries: 2, minTimeout: 1, maxTimeout: 5 } });
    env.emulator.failNext({ status: 500 }, { times: 10 });
    await hit();
    await kana.flush();
    expect(env.emulator.usage('u1', 'reports')).toBe(1);
    // 3 attempts by p-retry, then one probe at a time until the 11th call gets through.
    expect(kana.stats()).toMatchObject({ calls: 11, retries: 2, failed: 0, delivered: 1, kanaAvailable: true });
    expect(failures).toEqual([]);
    expect(sink.withCode(logCodes.kanaUnavailable)).toEqual([
      expect.objectContaining({ level: 40, err: expect.objectContaining({ code: 'KANA_SERVER_ERROR', status: 500 }) }),
    ]);
    expect(sink.withCode(logCodes.kanaAvailable)).toEqual([expect.objectContaining({ level: 30 })]);
    expect(sink.lines().filter((line) => line.level >= 50)).toEqual([]);
  });

  it('a wrong API key fails without retrying, and an onDeliveryFailure that throws is logged', async () => {
    const { options, sink } = meterOptions(env.emulator, {
      apiKey: 'prv_test_wrongwrongwrong',
      routes: { 'GET /r': 'reports' },
      onDeliveryFailure: () => {
        throw new Error('hook broke');
      },
    });
    const kana = kanaMeter(options);
    env.track(kana);
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    await request(app).get('/r').set('x-user', 'u1').expect(200);
    await kana.flush();
    expect(kana.stats()).toMatchObject({ calls: 1, failed: 1, hookErrors: 1 });
    expect(sink.withCode(logCodes.deliveryFailed)[0]).toMatchObject({ err: { code: 'KANA_UNAUTHENTICATED' } });
    expect(sink.withCode(logCodes.hookFailed)[0]).toMatchObject({ hook: 'onDeliveryFailure' });
  });
});

describe('coalescing and concurrency', () => {
  it('merges waiting events per (user, feature): 51 requests, two events, one call', async () => {
    const { kana, hit } = setup();
    for (let i = 0; i < 50; i++) await hit();
    await hit('u2');
    expect(kana.stats()).toMatchObject({ captured: 51, pending: 51, pendingKeys: 2, calls: 0 });
    await kana.flush();
    const events = env.emulator.usageCalls();
    expect(events).toHaveLength(2);
    expect(events.find((event) => event.userId === 'u1')?.delta).toBe(50);
    expect(env.emulator.usage('u1', 'reports')).toBe(50);
    expect(env.emulator.requests()).toHaveLength(1);
    expect(kana.stats()).toMatchObject({ delivered: 51, calls: 1, pending: 0, pendingKeys: 0 });
  });

  it('sends at most one call per key per flush interval', async () => {
    const { kana, hit } = setup({ flushInterval: 200 });
    const until = Date.now() + 1000;
    let requests = 0;
    while (Date.now() < until) {
      await hit();
      requests++;
    }
    await kana.flush();
    expect(env.emulator.usage('u1', 'reports')).toBe(requests);
    // 1000 ms of traffic at one call per 200 ms, plus the final flush.
    expect(env.emulator.usageCalls().length).toBeLessThanOrEqual(7);
    expect(requests).toBeGreaterThan(env.emulator.usageCalls().length);
  });

  it('keeps at most `concurrency` calls in flight', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const countingFetch: typeof fetch = async (input, init) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        return await fetch(input, init);
      } finally {
        inFlight--;
      }
    };
    const { kana, hit } = setup({ concurrency: 2, fetch: countingFetch });
    env.emulator.failNext({ delayMs: 50 }, { times: 20 });
    // 50 keys: two calls of 20 in flight, then one of 10.
    for (let i = 0; i < 50; i++) await hit(`user-${i}`);
    env.emulator.seed({ users: Array.from({ length: 50 }, (_, i) => ({ id: `user-${i}` })) });
    await kana.flush();
    expect(maxInFlight).toBe(2);
    expect(kana.stats()).toMatchObject({ delivered: 50, calls: 3 });
  });

  it('splits a coalesced delta above the GraphQL Int range into several calls', async () => {
    const big = 2_000_000_000;
    const { options } = meterOptions(env.emulator, { routes: { 'GET /r': { feature: 'reports', delta: big } } });
    const kana = kanaMeter(options);
    env.track(kana);
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    await request(app).get('/r').set('x-user', 'u1');
    await request(app).get('/r').set('x-user', 'u1');
    await kana.flush();
    const deltas = env.emulator.usageCalls().map((call) => call.delta);
    expect(deltas.every((delta) => delta <= 2_147_483_647)).toBe(true);
    expect(deltas.reduce((a, b) => a + b, 0)).toBe(2 * big);
    expect(kana.stats()).toMatchObject({ delivered: 2, failed: 0 });
  });
});

describe('flush and close', () => {
  it('flush() resolves at once when nothing is waiting', async () => {
    const { kana } = setup();
    await kana.flush();
    expect(kana.stats().calls).toBe(0);
  });

  it('close() sends what is waiting, is idempotent, and reports usage captured afterwards', async () => {
    const { kana, hit, failures, sink } = setup();
    await hit();
    const first = kana.close();
    expect(kana.close()).toBe(first);
    await first;
    expect(env.emulator.usage('u1', 'reports')).toBe(1);

    await hit('u2');
    expect(failures).toEqual([
      [
        expect.objectContaining({ userId: 'u2', featureId: 'reports', delta: 1 }),
        expect.objectContaining({ code: 'KANA_CLOSED' }),
      ],
    ]);
    expect(sink.withCode(logCodes.capturedAfterClose)).toHaveLength(1);
    expect(kana.stats()).toMatchObject({ captured: 2, delivered: 1, failed: 1, pending: 0 });
  });

  it('close() keeps its deadline when Kana hangs, and reports what is left', async () => {
    const { kana, hit, failures, sink } = setup({ timeoutMs: 30_000 });
    env.emulator.failNext({ delayMs: 5000 }, { times: 2 });
    await hit();
    await hit('u2');
    const started = Date.now();
    await kana.close({ timeoutMs: 300 });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(failures.map(([usage, error]) => [usage.userId, error.code]).sort()).toEqual([
      ['u1', 'KANA_CLOSED'],
      ['u2', 'KANA_CLOSED'],
    ]);
    const [line] = sink.withCode(logCodes.undeliveredAtClose);
    expect(line?.undelivered).toEqual(
      expect.arrayContaining([expect.objectContaining({ userId: 'u1', featureId: 'reports', delta: 1 })]),
    );
    expect(kana.stats()).toMatchObject({ failed: 2, pending: 0, inFlight: 0 });
  });

  it('close() still delivers captures under way (async userId), and reports responses that finish after it began', async () => {
    let releaseUserId!: () => void;
    const userIdGate = new Promise<void>((resolve) => {
      releaseUserId = resolve;
    });
    const { kana, hit, failures } = setup({
      userId: async (req) => {
        if (req.get('x-user') === 'u1') await userIdGate;
        return req.get('x-user');
      },
    });
    await hit('u1'); // its userId is still pending when close() starts
    const closing = kana.close({ timeoutMs: 5000 });
    await hit('u2'); // finished after close() began
    releaseUserId();
    await closing;
    expect(env.emulator.usage('u1', 'reports')).toBe(1);
    expect(env.emulator.usage('u2', 'reports')).toBe(0);
    expect(failures.map(([usage, error]) => [usage.userId, error.code])).toEqual([['u2', 'KANA_CLOSED']]);
  });

  it('close() keeps its deadline even when a custom fetch ignores the abort signal and never settles', async () => {
    const { kana, hit, failures } = setup({ fetch: () => new Promise<Response>(() => {}) });
    await hit();
    const started = Date.now();
    await kana.close({ timeoutMs: 300 });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(failures.map(([usage, error]) => [usage.userId, error.code])).toEqual([['u1', 'KANA_CLOSED']]);
  });

  it('close() keeps its deadline even when a userId promise never settles', async () => {
    const { kana, hit } = setup({ userId: () => new Promise<string>(() => {}) });
    await hit();
    const started = Date.now();
    await kana.close({ timeoutMs: 200 });
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('an idle process with pending usage exits by itself (timers are unref()d)', async () => {
    const script = fileURLToPath(new URL('../fixtures/idle-exit.ts', import.meta.url));
    const tsx = fileURLToPath(new URL('../../node_modules/.bin/tsx', import.meta.url));
    const started = Date.now();
    const { stdout } = await promisify(execFile)(tsx, [script, env.emulator.url, env.emulator.apiKey], {
      timeout: 15_000,
    });
    expect(stdout).toContain('captured 1');
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});

describe('the API key is never logged', () => {
  it('appears in no log line, across failures, retries and bad input', async () => {
    const { kana, app, hit, sink } = setup({
      userId: (req) => {
        if (req.get('x-user') === 'boom') throw new Error('bad session');
        return req.get('x-user');
      },
    });
    env.emulator.failNext({ status: 503 }, { times: 2 });
    env.emulator.failNext({ status: 401 });
    await hit('u1');
    await kana.flush();
    await hit('u2');
    await kana.flush();
    await request(app).get('/r').set('x-user', 'boom').expect(200);
    await kana.close();
    expect(sink.raw.length).toBeGreaterThanOrEqual(3);
    expect(sink.raw.join('\n')).not.toContain(env.emulator.apiKey);
    expect(sink.raw.join('\n')).not.toContain(env.emulator.apiKey.slice(9));
  });
});
