// kana.record() and kana.check(): usage and entitlement checks outside an HTTP request, through the same queue, cache and Kana calls.

import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { type KanaMeterOptions, kanaMeter, logCodes, type UndeliveredUsage } from '../src/index.js';
import { expressVersions, meteredApp, meterOptions } from './helpers/app.js';
import { useEmulator } from './helpers/emulator.js';

const HOUR = 3_600_000;
const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  const startedAt = new Date(Date.now() - 23 * HOUR).toISOString();
  env.emulator.seed({
    users: ['u1', 'u2', '124'].map((id) => ({ id })),
    features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
    packages: [{ id: 'small', features: [{ id: 'api-calls', limit: 5, resetPeriod: 'DAY' }] }],
    subscriptions: ['u1', 'u2', '124'].map((userId) => ({ userId, packageId: 'small', startedAt })),
  });
});
function meterFor(overrides: Partial<KanaMeterOptions> = {}) {
  const { options, sink } = meterOptions(env.emulator, { routes: { 'GET /api/calls': 'api-calls' }, ...overrides });
  const kana = env.trackTest(kanaMeter(options));
  const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/api/calls', (_req, res) => res.json({})));
  return { kana, sink, app };
}

const checkCalls = () => env.emulator.requests().filter((sent) => sent.fieldNames.includes('canUseFeature'));

describe('kana.record()', () => {
  it('queues usage like a response would: ids as Strings, delta 1 by default, coalesced with the middleware usage', async () => {
    const { kana, app } = meterFor();
    await request(app).get('/api/calls').set('x-user', '124').expect(200);
    kana.record(124, 'api-calls');
    kana.record('124', 'api-calls', 3);
    kana.record('u2', 'api-calls', 2);
    await kana.flush();

    expect(env.emulator.usage('124', 'api-calls')).toBe(5);
    expect(env.emulator.usage('u2', 'api-calls')).toBe(2);
    expect(env.emulator.usageCalls().map((call) => [call.userId, call.delta])).toEqual([
      ['124', 5],
      ['u2', 2],
    ]);
    expect(kana.stats()).toMatchObject({ captured: 4, delivered: 4 });
  });

  it.each([
    [[null, 'api-calls'], /record\(\): argument `userId` must be a non-empty string or a finite number; got null/],
    [['', 'api-calls'], /argument `userId`.*got ""/],
    [[Number.NaN, 'api-calls'], /argument `userId`.*got NaN/],
    [[{ id: 'u1' }, 'api-calls'], /argument `userId`.*got an object/],
    [['u1', ''], /record\(\): argument `featureId` must be a non-empty feature id string; got ""/],
    [['u1', 7], /argument `featureId`.*got 7/],
    [['u1', 'api-calls', 0], /record\(\): argument `delta` must be an integer in 1\.\.2147483647; got 0/],
    [['u1', 'api-calls', 1.5], /argument `delta`.*got 1.5/],
    [['u1', 'api-calls', 2 ** 31], /argument `delta`.*got 2147483648/],
    [['u1', 'api-calls', '2'], /argument `delta`.*got "2"/],
  ])('throws a TypeError naming the bad argument: record(%j)', (args, message) => {
    const { kana } = meterFor();
    const record = kana.record as (...values: unknown[]) => void;
    expect(() => record(...args)).toThrow(TypeError);
    expect(() => record(...args)).toThrow(message);
    expect(kana.stats().captured).toBe(0);
  });

  it('after close(), reports the usage undelivered, as a response finishing late', async () => {
    const failures: [UndeliveredUsage, string][] = [];
    const { kana, sink } = meterFor({ onDeliveryFailure: (usage, error) => void failures.push([usage, error.code]) });
    await kana.close();
    kana.record('u1', 'api-calls', 2);
    expect(failures).toEqual([
      [expect.objectContaining({ userId: 'u1', featureId: 'api-calls', delta: 2 }), 'KANA_CLOSED'],
    ]);
    expect(kana.stats()).toMatchObject({ captured: 1, failed: 1 });
    expect(sink.withCode(logCodes.capturedAfterClose)).toHaveLength(1);
    expect(env.emulator.usageCalls()).toEqual([]);
  });

  it('counts against the allowance locally, as middleware usage does', async () => {
    const { kana, app } = meterFor({ enforce: true });
    await request(app).get('/api/calls').set('x-user', 'u1').expect(200); // checked: 0 of 5 used, then 1
    kana.record('u1', 'api-calls', 4);
    await request(app).get('/api/calls').set('x-user', 'u1').expect(429);
    expect(checkCalls()).toHaveLength(1);
  });
});

describe('kana.check()', () => {
  it('answers from Kana, then from the same cache enforced requests use; it holds nothing', async () => {
    env.emulator.seed({ usage: [{ userId: 'u1', featureId: 'api-calls', used: 4 }] });
    const { kana, app } = meterFor({ enforce: true });

    const first = await kana.check('u1', 'api-calls');
    const second = await kana.check('u1', 'api-calls');
    const tooMuch = await kana.check('u1', 'api-calls', 2);
    await request(app).get('/api/calls').set('x-user', 'u1').expect(200); // the last unit was not held by check()
    const after = await kana.check('u1', 'api-calls');

    expect(first).toMatchObject({
      allowed: true,
      source: 'kana',
      used: 4,
      budget: 5,
      remaining: 0,
      delta: 1,
      userId: 'u1',
    });
    expect(first.resetAt).toBeInstanceOf(Date);
    expect(second).toMatchObject({ allowed: true, source: 'cache', remaining: 0 });
    expect(tooMuch).toMatchObject({ allowed: false, status: 429, reason: 'limit-reached', delta: 2 });
    expect(after).toMatchObject({ allowed: false, status: 429, used: 5, source: 'cache' });
    expect(checkCalls()).toHaveLength(1);
    // Not requests: check() counts in none of the request counters.
    expect(kana.stats()).toMatchObject({ checks: 1, allowed: 1, denied: 0, cacheHits: 1 });
  });

  it('never rejects for a Kana failure: fallback for a user never answered, stale for one answered before', async () => {
    const { kana } = meterFor({ entitlementTtl: 0, onKanaError: 'deny' });
    await kana.check(124, 'api-calls');
    await env.emulator.setOffline(true);
    try {
      const stale = await kana.check(124, 'api-calls');
      const fallback = await kana.check('u2', 'api-calls');
      expect(stale).toMatchObject({
        allowed: true,
        source: 'stale',
        userId: '124',
        error: { code: 'KANA_UNREACHABLE' },
      });
      expect(fallback).toMatchObject({
        allowed: false,
        status: 503,
        source: 'fallback',
        reason: 'kana-error',
        error: { code: 'KANA_UNREACHABLE' },
      });
    } finally {
      await env.emulator.setOffline(false);
    }
  });

  it('rejects with a TypeError naming a bad argument', async () => {
    const { kana } = meterFor();
    const check = kana.check as (...values: unknown[]) => Promise<unknown>;
    await expect(check(undefined, 'api-calls')).rejects.toThrow(/check\(\): argument `userId`/);
    await expect(check('u1', '')).rejects.toThrow(/check\(\): argument `featureId`/);
    await expect(check('u1', 'api-calls', -1)).rejects.toThrow(TypeError);
    expect(checkCalls()).toEqual([]);
  });
});
