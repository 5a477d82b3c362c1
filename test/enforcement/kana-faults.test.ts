// Enforcement against a misbehaving Kana (scripted emulator faults): showUsage failing, stale answers, the breaker, bursts of new users.

import type { AddressInfo } from 'node:net';
import type { Express, Request, Response } from 'express';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EmulatorSeed } from '../../src/emulator/index.js';
import { type EntitlementDecision, type KanaMeterOptions, kanaMeter, logCodes } from '../../src/index.js';
import { expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const HOUR = 3_600_000;
const createExpress = expressVersions[0][1];
const users = Array.from({ length: 300 }, (_, i) => `n${i}`);

/** u1..u3 and n0..n299 on "small": api-calls 5 a day (the day resets in an hour). */
const seed: EmulatorSeed = {
  users: ['u1', 'u2', 'u3', ...users].map((id) => ({ id })),
  features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
  packages: [{ id: 'small', features: [{ id: 'api-calls', limit: 5, resetPeriod: 'DAY' }] }],
};

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  const startedAt = new Date(Date.now() - 23 * HOUR).toISOString();
  env.emulator.seed({
    ...seed,
    subscriptions: ['u1', 'u2', 'u3', ...users].map((userId) => ({ userId, packageId: 'small', startedAt })),
  });
});
afterEach(() => {
  env.emulator.clearFaults();
});

function setUsage(userId: string, used: number): void {
  env.emulator.seed({ usage: [{ userId, featureId: 'api-calls', used }] });
}

/** An enforced app on GET /api/calls whose handler answers what the gate decided; refusals are recorded too. */
function enforcedApp(overrides: Partial<KanaMeterOptions> = {}) {
  const refused: EntitlementDecision[] = [];
  const { options, sink } = meterOptions(env.emulator, {
    enforce: true,
    routes: { 'GET /api/calls': 'api-calls' },
    onDenied: (_req, res, decision) => {
      refused.push(decision);
      res.status(decision.status).json({ refused: decision.status, source: decision.source });
    },
    ...overrides,
  });
  const kana = env.trackTest(kanaMeter(options));
  const app = meteredApp(createExpress, kana, (app) =>
    app.get('/api/calls', (req: Request, res: Response) =>
      res.json({ source: req.kana?.source, remaining: req.kana?.remaining, error: req.kana?.error?.code }),
    ),
  );
  const get = (user: string) => request(app).get('/api/calls').set('x-user', user);
  return { kana, sink, app, get, refused };
}

/** Requests to Kana that checked entitlements, with the root fields each selected. */
function checkCalls() {
  return env.emulator.requests().filter((sent) => sent.fieldNames.includes('canUseFeature'));
}

describe('1. the decision depends on canUseFeature alone', () => {
  it('refuses an over-budget user when showUsage fails, logs it once, and stops asking for the period', async () => {
    setUsage('u1', 5);
    env.emulator.failNext(
      { fieldError: { field: 'showUsage', message: 'This key may not read usage', code: 'FORBIDDEN' } },
      { times: Number.POSITIVE_INFINITY },
    );
    const { kana, sink, get } = enforcedApp({ entitlementTtl: 0 });

    const refused = await get('u1').expect(429);
    await get('u2').expect(200, { source: 'kana', remaining: 4 });
    await get('u2').expect(200, { source: 'kana', remaining: 3 });

    expect(refused.body).toEqual({ refused: 429, source: 'kana' });
    expect(refused.headers['retry-after']).toBeUndefined(); // the period end is unknown
    // The first check learns that showUsage fails (and asks canUseFeature again on its own); later ones leave it out.
    expect(checkCalls().map((sent) => sent.fieldNames)).toEqual([
      ['canUseFeature', 'showUsage'],
      ['canUseFeature'],
      ['canUseFeature'],
      ['canUseFeature'],
    ]);
    expect(sink.withCode(logCodes.periodUnavailable)).toEqual([
      expect.objectContaining({
        level: 40,
        err: expect.objectContaining({ message: expect.stringContaining('This key may not read usage') }),
      }),
    ]);
    expect(sink.withCode(logCodes.checkFailed)).toEqual([]);
    expect(kana.stats()).toMatchObject({ checkErrors: 0, failedOpen: 0, denied: 1, allowed: 2 });
  });

  it('a failed canUseFeature is a failed check', async () => {
    env.emulator.failNext({ fieldError: { field: 'canUseFeature' } });
    const { kana, get } = enforcedApp({ onKanaError: 'deny' });
    await get('u1').expect(503, { refused: 503, source: 'fallback' });
    expect(kana.stats()).toMatchObject({ checkErrors: 1, denied: 1 });
  });
});

describe('2. stale-if-error: a known user is not forgotten in an outage', () => {
  it('keeps refusing an over-budget user when the refresh fails (not served for free)', async () => {
    setUsage('u1', 5);
    const { kana, get, refused } = enforcedApp({ entitlementTtl: 0 }); // every request asks Kana again
    await get('u1').expect(429, { refused: 429, source: 'kana' });

    await env.emulator.setOffline(true);
    try {
      await get('u1').expect(429, { refused: 429, source: 'stale' });
    } finally {
      await env.emulator.setOffline(false);
    }
    expect(refused[1]).toMatchObject({
      reason: 'limit-reached',
      used: 5,
      budget: 5,
      error: { code: 'KANA_UNREACHABLE' },
    });
    expect(kana.stats()).toMatchObject({ staleHits: 1, failedOpen: 0, denied: 2 });
  });

  it("keeps serving a user with allowance left, even with onKanaError: 'deny', counting local usage since", async () => {
    setUsage('u1', 3);
    const { kana, get } = enforcedApp({ entitlementTtl: 0, onKanaError: 'deny' });
    await get('u1').expect(200, { source: 'kana', remaining: 1 });

    await env.emulator.setOffline(true);
    try {
      // Kana said 3 used; this process has used 1 since: one unit is left, then none.
      await get('u1').expect(200, { source: 'stale', remaining: 0, error: 'KANA_UNREACHABLE' });
      await get('u1').expect(429, { refused: 429, source: 'stale' });
      // A user Kana never answered for is the only one left to onKanaError.
      await get('u2').expect(503, { refused: 503, source: 'fallback' });
    } finally {
      await env.emulator.setOffline(false);
    }
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(5);
    expect(kana.stats()).toMatchObject({ staleHits: 2, allowed: 2, denied: 2 });
  });

  it('staleIfError: 0 sends every failed check to onKanaError', async () => {
    setUsage('u1', 5);
    const { get } = enforcedApp({ entitlementTtl: 0, staleIfError: 0 });
    await get('u1').expect(429);
    await env.emulator.setOffline(true);
    try {
      await get('u1').expect(200, { source: 'fallback', remaining: null, error: 'KANA_UNREACHABLE' });
    } finally {
      await env.emulator.setOffline(false);
    }
  });
});

describe('3. a breaker for checks', () => {
  it('30 new users while Kana hangs take well under 30 x checkTimeoutMs; one warning, one info line when Kana is back', async () => {
    env.emulator.failNext({ hang: true }, { operation: 'canUseFeature', times: Number.POSITIVE_INFINITY });
    const { kana, sink, get } = enforcedApp({ checkTimeoutMs: 500 });

    const started = performance.now();
    const sources: unknown[] = [];
    for (const user of users.slice(0, 30)) sources.push((await get(user).expect(200)).body.source);
    const elapsed = performance.now() - started;

    expect(elapsed).toBeLessThan(5000); // 30 x 500 ms = 15 s without the breaker
    expect(sources).toEqual(Array(30).fill('fallback'));
    expect(kana.stats()).toMatchObject({ checkOutages: 1, checksAvailable: false, failedOpen: 30, checks: 1 });
    const warnings = () => sink.withCode(logCodes.checksUnavailable).filter((line) => line.level === 40);
    expect(warnings()).toEqual([expect.objectContaining({ err: expect.objectContaining({ code: 'KANA_TIMEOUT' }) })]);
    expect(sink.withCode(logCodes.checkFailed)).toEqual([]);

    // Kana comes back: a probe finds out, and requests are checked again.
    env.emulator.clearFaults();
    await expect.poll(() => kana.stats().checksAvailable, { timeout: 5000 }).toBe(true);
    await get('u1').expect(200, { source: 'kana', remaining: 4 });
    expect(warnings()).toHaveLength(1);
    expect(sink.withCode(logCodes.checksAvailable)).toEqual([
      expect.objectContaining({ level: 30, unavailableMs: expect.any(Number) }),
    ]);
    expect(kana.stats().checkOutages).toBe(1);
  });

  it('honours 429 + Retry-After: no check reaches Kana before it, and requests meanwhile are decided at once', async () => {
    env.emulator.failNext({ status: 429, retryAfter: 3 }, { operation: 'canUseFeature' });
    const { kana, get } = enforcedApp({ onKanaError: 'deny' });

    await get('u1').expect(503, { refused: 503, source: 'fallback' });
    for (const user of ['u2', 'u3', 'n0', 'n1']) await get(user).expect(503);

    expect(checkCalls()).toHaveLength(1); // the 429; the next probe waits for Retry-After
    expect(kana.stats()).toMatchObject({ checkOutages: 1, checksAvailable: false, checks: 1, denied: 5 });
    await expect.poll(() => kana.stats().checksAvailable, { timeout: 8000 }).toBe(true);
    const [, probe] = checkCalls();
    expect((probe?.at ?? 0) - (checkCalls()[0]?.at ?? 0)).toBeGreaterThanOrEqual(2900);
    await get('u2').expect(200, { source: 'kana', remaining: 4 });
  });

  it('Kana answering with an error about the input does not open the breaker', async () => {
    const { kana, sink, get } = enforcedApp();
    // A user Kana does not know: refused (onConfigError), not served unbilled.
    await get('ghost').expect(503);
    await get('u1').expect(200, { source: 'kana', remaining: 4 });
    expect(kana.stats()).toMatchObject({ checkOutages: 0, checksAvailable: true, checkErrors: 1 });
    expect(sink.withCode(logCodes.checkFailed)).toEqual([
      expect.objectContaining({ level: 50, userId: 'ghost', err: expect.objectContaining({ code: 'KANA_REJECTED' }) }),
    ]);
    expect(sink.withCode(logCodes.checksUnavailable)).toEqual([]);
  });
});

describe('7. a burst of new users is not a burst on Kana', () => {
  /** The app on a real port, with check calls in flight counted at the client's fetch. */
  async function listen(overrides: Partial<KanaMeterOptions>) {
    let inFlight = 0;
    let peak = 0;
    const { app, kana } = enforcedApp({
      ...overrides,
      fetch: async (input, init) => {
        // Entitlement checks only: usage deliveries go through this fetch too.
        if (!String(init?.body).includes('canUseFeature')) return fetch(input, init);
        peak = Math.max(peak, ++inFlight);
        try {
          return await fetch(input, init);
        } finally {
          inFlight--;
        }
      },
    });
    const server = (app as Express).listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const { port } = server.address() as AddressInfo;
    const get = async (user: string) => {
      const response = await fetch(`http://127.0.0.1:${port}/api/calls`, { headers: { 'x-user': user } });
      return { user, status: response.status, body: (await response.json()) as { source?: string } };
    };
    return { kana, get, peak: () => peak, close: () => server.close() };
  }

  it.each([
    [{}, 16],
    [{ checkConcurrency: 4 }, 4],
  ])(
    '300 new users at once, Kana answering in 200 ms (%j): at most %i calls in flight, batched',
    async (options, bound) => {
      for (const user of users.filter((_, i) => i % 10 === 0)) setUsage(user, 5); // 30 of them are over budget
      env.emulator.failNext({ delayMs: 200 }, { operation: 'canUseFeature', times: Number.POSITIVE_INFINITY });
      const app = await listen(options);
      try {
        const started = performance.now();
        const results = await Promise.all(users.map((user) => app.get(user)));
        const elapsed = performance.now() - started;

        expect(app.peak()).toBeLessThanOrEqual(bound);
        expect(checkCalls().length).toBeLessThan(100); // one call per user without batching: 300
        expect(results.filter((result) => result.status === 429).map((result) => result.user)).toEqual(
          users.filter((_, i) => i % 10 === 0),
        );
        expect(results.filter((result) => result.status === 200)).toHaveLength(270);
        expect(results.every((result) => result.body.source === 'kana')).toBe(true);
        expect(app.kana.stats()).toMatchObject({ checks: 300, checkErrors: 0, checkOutages: 0 });
        expect(elapsed).toBeLessThan(20_000);
        // Each call carried at most 20 checks.
        expect(
          Math.max(...checkCalls().map((sent) => sent.fieldNames.filter((f) => f === 'canUseFeature').length)),
        ).toBeLessThanOrEqual(20);
      } finally {
        app.close();
      }
    },
  );
});
