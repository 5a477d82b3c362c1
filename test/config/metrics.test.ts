// The metrics seam against the emulator: bind() at creation, one observeKanaCall per Kana call attempt, a broken metrics object contained.

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type KanaCall,
  type KanaMeterMetrics,
  type KanaMeterOptions,
  type KanaMeterStats,
  kanaMeter,
  logCodes,
} from '../../src/index.js';
import { basicSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

let directory: string;

const env = useEmulator();

beforeEach(async () => {
  await env.emulator.setOffline(false);
  env.emulator.reset();
  env.emulator.seed({
    ...basicSeed,
    features: [...basicSeed.features, { id: 'searches', type: 'CONSUMABLE' as const }],
    packages: [...basicSeed.packages, { id: 'small', features: [{ id: 'searches', limit: 1 }] }],
    subscriptions: [...basicSeed.subscriptions, { userId: 'u1', packageId: 'small' }],
  });
  directory = mkdtempSync(join(tmpdir(), 'kana-metrics-'));
});
afterEach(() => rmSync(directory, { recursive: true, force: true }));

/** A metrics object that keeps what it is given. */
function recordingMetrics() {
  const calls: KanaCall[] = [];
  const bound: (() => KanaMeterStats)[] = [];
  const metrics: KanaMeterMetrics = {
    bind: (stats) => void bound.push(stats),
    observeKanaCall: (call) => void calls.push(call),
  };
  return { metrics, calls, bound };
}

function setup(overrides: Partial<KanaMeterOptions>) {
  const { options, sink } = meterOptions(env.emulator, {
    routes: { 'GET /r': 'reports', 'GET /search': { feature: 'searches', enforce: true } },
    ...overrides,
  });
  const kana = kanaMeter(options);
  env.track(kana);
  const app = meteredApp(expressVersions[0][1], kana, (app) => {
    app.get('/r', (_req, res) => res.json({}));
    app.get('/search', (_req, res) => res.json({}));
  });
  const hit = (path = '/r', status = 200, user = 'u1') => request(app).get(path).set('x-user', user).expect(status);
  return { kana, hit, sink };
}

describe('bind()', () => {
  it('is called once, at creation, with a function that reads stats()', async () => {
    const { metrics, bound } = recordingMetrics();
    const { kana, hit } = setup({ metrics });
    expect(bound).toHaveLength(1);
    await hit();
    await kana.flush();
    const stats = bound[0]?.() as KanaMeterStats;
    expect(stats).toEqual(kana.stats());
    expect(stats).toMatchObject({ captured: 1, delivered: 1 });
  });

  it('a bind() that throws makes kanaMeter() throw it, and releases the spool without sending anything', async () => {
    const path = join(directory, 'usage.spool');
    // An earlier run leaves 3 events in the spool (Kana offline until its close() deadline).
    const { kana: earlier, hit } = setup({ spool: { path } });
    await env.emulator.setOffline(true);
    await Promise.all([hit(), hit(), hit()]);
    await earlier.close({ timeoutMs: 50 });
    await env.emulator.setOffline(false);
    const spooled = readFileSync(path, 'utf8');
    expect(spooled).toContain('"u1"');

    const broken: KanaMeterMetrics = {
      bind() {
        throw new TypeError('already bound');
      },
      observeKanaCall() {},
    };
    const { options } = meterOptions(env.emulator, { spool: { path }, metrics: broken });
    expect(() => kanaMeter(options)).toThrow('already bound');
    expect(existsSync(`${path}.lock`)).toBe(false);
    expect(readFileSync(path, 'utf8')).toBe(spooled);

    // The next kanaMeter() takes the spool and sends what it holds.
    const { metrics } = recordingMetrics();
    const { kana: next } = setup({ spool: { path }, metrics });
    await next.flush();
    expect(env.emulator.usageCalls()).toHaveLength(1);
    expect(env.emulator.usage('u1', 'reports')).toBe(3);
    expect(next.stats()).toMatchObject({ replayed: 3, delivered: 3 });
  });
});

describe('observeKanaCall()', () => {
  it('is told of each usage call attempt: its duration and outcome', async () => {
    const { metrics, calls } = recordingMetrics();
    const { kana, hit } = setup({ metrics });
    env.emulator.failNext({ status: 503 }, { times: 2 });
    await hit();
    await kana.flush();
    expect(calls.map(({ operation, outcome }) => [operation, outcome])).toEqual([
      ['usage', 'KANA_SERVER_ERROR'],
      ['usage', 'KANA_SERVER_ERROR'],
      ['usage', 'ok'],
    ]);
    expect(kana.stats()).toMatchObject({ calls: 3, retries: 2, delivered: 1 });
  });

  it('measures the call itself, not the backoff before it', async () => {
    const { metrics, calls } = recordingMetrics();
    // A 1 s backoff before the second attempt, which itself takes 150 ms: timed with the backoff, it would take >= 1150 ms.
    const retry = { retries: 1, minTimeout: 1000, maxTimeout: 1000, randomize: false };
    const { kana, hit } = setup({ metrics, retry });
    env.emulator.failNext({ status: 500 });
    env.emulator.failNext({ delayMs: 150 });
    await hit();
    await kana.flush();
    expect(calls.map((call) => call.outcome)).toEqual(['KANA_SERVER_ERROR', 'ok']);
    expect(calls[0]?.durationMs).toBeLessThan(150);
    expect(calls[1]?.durationMs).toBeGreaterThanOrEqual(145);
    expect(calls[1]?.durationMs).toBeLessThan(1000);
  });

  it('reports a permanent failure with its code', async () => {
    const { metrics, calls } = recordingMetrics();
    const { kana, hit } = setup({ metrics });
    env.emulator.failNext({ status: 401 });
    await hit();
    await kana.flush();
    expect(calls).toEqual([{ operation: 'usage', outcome: 'KANA_UNAUTHENTICATED', durationMs: expect.any(Number) }]);
    expect(kana.stats().failed).toBe(1);
  });

  it('is told of each outage probe', async () => {
    const { metrics, calls } = recordingMetrics();
    const { kana, hit } = setup({ metrics, retry: { retries: 1, minTimeout: 1, maxTimeout: 5 } });
    env.emulator.failNext({ status: 500 }, { times: 4 });
    await hit();
    await kana.flush();
    // Two attempts by p-retry, then probes until the fifth call gets through.
    expect(calls.map((call) => call.outcome)).toEqual([...Array(4).fill('KANA_SERVER_ERROR'), 'ok']);
    expect(kana.stats().calls).toBe(5);
  });

  it('is told of each entitlement check (not of cache hits)', async () => {
    const { metrics, calls } = recordingMetrics();
    const { kana, hit } = setup({ metrics, entitlementTtl: 60_000, checkTimeoutMs: 100 });
    await hit('/search');
    await hit('/search', 429);
    await kana.flush();
    expect(calls.filter((call) => call.operation === 'check')).toEqual([
      { operation: 'check', outcome: 'ok', durationMs: expect.any(Number) },
    ]);
    expect(kana.stats()).toMatchObject({ checks: 1, cacheHits: 1, allowed: 1, denied: 1 });
  });

  it('reports a failed check with its code, timed to the check timeout', async () => {
    const { metrics, calls } = recordingMetrics();
    const { kana, hit } = setup({ metrics, checkTimeoutMs: 100 });
    env.emulator.failNext({ delayMs: 400 }, { operation: 'canUseFeature' });
    await hit('/search');
    // (The breaker's probe that follows is a call of its own.)
    expect(calls[0]).toEqual({ operation: 'check', outcome: 'KANA_TIMEOUT', durationMs: expect.any(Number) });
    expect(calls[0]?.durationMs).toBeGreaterThanOrEqual(95);
    expect(kana.stats()).toMatchObject({ checkErrors: 1, failedOpen: 1 });
  });
});

describe('a metrics object that throws', () => {
  const throwing = (how: 'throws' | 'rejects'): KanaMeterMetrics => ({
    bind() {},
    observeKanaCall() {
      if (how === 'throws') throw new Error('histogram broke');
      return Promise.reject(new Error('histogram broke')) as unknown as undefined;
    },
  });

  it.each(['throws', 'rejects'] as const)(
    'never breaks a request or a delivery when it %s: counted in hookErrors, logged',
    async (how) => {
      const { kana, hit, sink } = setup({ metrics: throwing(how) });
      env.emulator.failNext({ status: 503 }, { operation: 'createUsageEvent' });
      await hit();
      await hit('/search');
      await kana.flush();
      expect(env.emulator.usage('u1', 'reports')).toBe(1);
      expect(env.emulator.usage('u1', 'searches')).toBe(1);
      const stats = kana.stats();
      expect(stats).toMatchObject({ delivered: 2, checks: 1, allowed: 1, failedOpen: 0 });
      // The usage call that failed carried both keys; their retries (jittered) went in one call or two.
      expect(stats.retries).toBeGreaterThanOrEqual(1);
      // Every call observed failed in the hook: the check's and the usage calls'.
      expect(stats.hookErrors).toBe(stats.checkCalls + stats.calls);
      expect(stats.calls).toBe(1 + stats.retries);
      expect(sink.withCode(logCodes.hookFailed)).toEqual([
        expect.objectContaining({
          level: 50,
          hook: 'metrics.observeKanaCall',
          failures: 1,
          err: expect.objectContaining({ message: 'histogram broke' }),
        }),
      ]);
    },
  );

  it('is logged once per 1000 failures, and every failure is counted', async () => {
    const { kana, hit, sink } = setup({ metrics: throwing('throws') });
    // 1001 requests, each flushed on its own: 1001 calls.
    for (let i = 0; i < 1001; i++) {
      await hit('/r', 200);
      await kana.flush();
    }
    expect(kana.stats()).toMatchObject({ delivered: 1001, calls: 1001, hookErrors: 1001 });
    expect(sink.withCode(logCodes.hookFailed).map((line) => line.failures)).toEqual([1, 1001]);
  });
});
