// Idempotency-Key: a retry already billed for the same user and feature is served but not billed, nor charged against the allowance.

import type { Request, Response } from 'express';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { type EntitlementDecision, type KanaMeterOptions, kanaMeter } from '../../src/index.js';
import { MemoryIdempotencyWindow, onWindowAnswer } from '../../src/metering/idempotency-window.js';
import { basicSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed({
    ...basicSeed,
    features: [...basicSeed.features, { id: 'limited', type: 'CONSUMABLE' }],
    packages: [...basicSeed.packages, { id: 'small', features: [{ id: 'limited', limit: 5 }] }],
    subscriptions: [...basicSeed.subscriptions, { userId: 'u1', packageId: 'small' }],
  });
});
function idempotentApp(overrides: Partial<KanaMeterOptions> = {}) {
  const { options } = meterOptions(env.emulator, {
    idempotencyKey: true,
    routes: { 'POST /api/search': 'api-calls', 'POST /api/limited': 'limited', 'POST /api/fails': 'api-calls' },
    ...overrides,
  });
  const kana = env.trackTest(kanaMeter(options));
  const seen: (EntitlementDecision | undefined)[] = [];
  let release: () => void = () => {};
  let gate: Promise<void> | undefined;
  const app = meteredApp(expressVersions[0][1], kana, (app) => {
    app.post('/api/search', async (req: Request, res: Response) => {
      seen.push(req.kana);
      if (gate) await gate;
      res.json({});
    });
    app.post('/api/limited', (req: Request, res: Response) => {
      seen.push(req.kana);
      res.json({ source: req.kana?.source });
    });
    app.post('/api/fails', (_req, res) => res.status(503).json({}));
  });
  const post = (path: string, user: string, key?: string, header = 'Idempotency-Key') => {
    const sent = request(app).post(path).set('x-user', user);
    return key === undefined ? sent : sent.set(header, key);
  };
  /** Handlers of /api/search wait until `open()`. */
  const hold = () => {
    gate = new Promise((resolve) => {
      release = resolve;
    });
    return () => release();
  };
  return { kana, post, seen, hold };
}

describe('idempotencyKey', () => {
  it('bills a key once per user and feature; the same key from another user is another request', async () => {
    const { kana, post } = idempotentApp();
    await post('/api/search', 'u1', 'order-1').expect(200);
    await post('/api/search', 'u1', 'order-1').expect(200);
    await post('/api/search', 'u1', 'order-2').expect(200);
    await post('/api/search', 'u2', 'order-1').expect(200);
    await post('/api/search', 'u1').expect(200); // no key: billed
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(3);
    expect(env.emulator.usage('u2', 'api-calls')).toBe(1);
    expect(kana.stats()).toMatchObject({ idempotentReplays: 1, captured: 4 });
  });

  it('bills two requests with the same key in flight at once once', async () => {
    const { kana, post, hold, seen } = idempotentApp();
    const open = hold();
    const both = Promise.all([post('/api/search', 'u1', 'k').then(), post('/api/search', 'u1', 'k').then()]);
    await expect.poll(() => seen.length).toBe(2); // both handlers are running
    open();
    const responses = await both;
    await kana.flush();
    expect(responses.map((response) => response.status)).toEqual([200, 200]);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
    expect(kana.stats().idempotentReplays).toBe(1);
  });

  it('a failed attempt is not billed, so its retry is', async () => {
    const { kana, post } = idempotentApp();
    await post('/api/fails', 'u1', 'k').expect(503);
    await post('/api/search', 'u1', 'k').expect(200);
    await post('/api/search', 'u1', 'k').expect(200);
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
  });

  it('is off by default: every successful request is billed', async () => {
    const { kana, post } = idempotentApp({ idempotencyKey: undefined });
    await post('/api/search', 'u1', 'k').expect(200);
    await post('/api/search', 'u1', 'k').expect(200);
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(2);
  });

  it('reads the header given, and keeps at most maxKeys keys (oldest out, counted)', async () => {
    const { kana, post } = idempotentApp({ idempotencyKey: { header: 'X-Request-Id', maxKeys: 2 } });
    for (const key of ['a', 'b', 'a', 'c', 'a']) await post('/api/search', 'u1', key, 'X-Request-Id').expect(200);
    await post('/api/search', 'u1', 'c', 'Idempotency-Key').expect(200); // not the configured header: billed
    await kana.flush();
    // a, b, c billed; c pushed a out, so the last a is billed again.
    expect(env.emulator.usage('u1', 'api-calls')).toBe(5);
    expect(kana.stats()).toMatchObject({ idempotentReplays: 1, idempotencyEvictions: 2 });
  });

  it('with enforcement, a retry of a billed request is served and not charged again, even at the limit', async () => {
    env.emulator.seed({ usage: [{ userId: 'u1', featureId: 'limited', used: 4 }] });
    const { kana, post, seen } = idempotentApp({ enforce: true });
    await post('/api/limited', 'u1', 'k').expect(200, { source: 'kana' }); // the last unit
    const retry = await post('/api/limited', 'u1', 'k').expect(200, { source: 'replay' });
    await post('/api/limited', 'u1', 'other').expect(429);
    await kana.flush();

    expect(seen[1]).toMatchObject({
      allowed: true,
      reason: 'allowed',
      delta: 0,
      source: 'replay',
      used: 5,
      budget: 5,
      remaining: 0,
    });
    expect(retry.headers.ratelimit).toBeUndefined();
    expect(env.emulator.usage('u1', 'limited')).toBe(5);
    expect(env.emulator.requests().filter((sent) => sent.fieldNames.includes('canUseFeature'))).toHaveLength(1);
    expect(kana.stats()).toMatchObject({ idempotentReplays: 1, allowed: 2, denied: 1 });
  });
});

describe('MemoryIdempotencyWindow', () => {
  it('forgets a key after its TTL, and evicts the oldest when full', () => {
    const clock = { now: 0 };
    let evictions = 0;
    const window = new MemoryIdempotencyWindow({
      ttlMs: 1000,
      maxKeys: 2,
      onEvict: () => {
        evictions++;
      },
      now: () => clock.now,
    });
    expect(window.claim('a')).toBe(true);
    expect(window.claim('a')).toBe(false);
    clock.now = 999;
    expect(window.has('a')).toBe(true);
    clock.now = 1000;
    expect(window.has('a')).toBe(false);
    expect(window.claim('a')).toBe(true); // expired: billed again
    expect(window.claim('b')).toBe(true);
    expect(window.claim('c')).toBe(true); // full: a goes
    expect(evictions).toBe(1);
    expect(window.has('a')).toBe(false);
    expect(window.size).toBe(2);
    clock.now = 2000; // b and c expire: dropped, not evicted
    expect(window.claim('d')).toBe(true);
    expect(window.size).toBe(1);
    expect(evictions).toBe(1);
  });
});

describe('onWindowAnswer (how the gate and the billing read a window that may answer later)', () => {
  it('runs at once for an answer at once, after the promise for a promise, and reports a rejection', async () => {
    const seen: unknown[] = [];
    const then = (value: boolean) => void seen.push(value);
    const failed = (error: unknown) => void seen.push((error as Error).message);
    expect(onWindowAnswer(true, then, failed)).toBeUndefined();
    expect(seen).toEqual([true]);
    const later = onWindowAnswer(Promise.resolve(false), then, failed);
    expect(seen).toEqual([true]);
    await later;
    await onWindowAnswer(Promise.reject(new Error('store down')), then, failed);
    expect(seen).toEqual([true, false, 'store down']);
  });
});
