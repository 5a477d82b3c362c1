// enforce: 'shadow' end to end: the whole decision is made, nothing is refused, would-be refusals are counted and logged (rate-limited).

import type { Request, Response } from 'express';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { type EntitlementDecision, type KanaMeterOptions, kanaMeter, logCodes, meter } from '../../src/index.js';
import { expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const HOUR = 3_600_000;
const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  const startedAt = new Date(Date.now() - 23 * HOUR).toISOString();
  env.emulator.seed({
    users: ['u1', 'u2'].map((id) => ({ id })),
    features: [
      { id: 'api-calls', type: 'CONSUMABLE' },
      { id: 'reports', type: 'CONSUMABLE' },
      { id: 'premium', type: 'CONSUMABLE' },
    ],
    packages: [
      {
        id: 'small',
        features: [
          { id: 'api-calls', limit: 5, resetPeriod: 'DAY' },
          { id: 'reports', limit: 1, resetPeriod: 'DAY' },
        ],
      },
    ],
    subscriptions: ['u1', 'u2'].map((userId) => ({ userId, packageId: 'small', startedAt })),
  });
});
function shadowApp(overrides: Partial<KanaMeterOptions> = {}, routes?: (app: import('express').Express) => void) {
  const { options, sink } = meterOptions(env.emulator, {
    enforce: 'shadow',
    routes: { 'GET /api/calls': 'api-calls', 'GET /api/premium': 'premium' },
    ...overrides,
  });
  const kana = env.trackTest(kanaMeter(options));
  const seen: (EntitlementDecision | undefined)[] = [];
  let ran = 0;
  const handler = (req: Request, res: Response) => {
    ran++;
    seen.push(req.kana);
    res.json({});
  };
  const app = meteredApp(expressVersions[0][1], kana, (app) => {
    app.get('/api/calls', handler);
    app.get('/api/premium', handler);
    routes?.(app);
  });
  return { kana, sink, app, seen, ran: () => ran };
}

describe("enforce: 'shadow'", () => {
  it('serves and bills what enforcement would refuse, with req.kana saying what it would have decided, and no refusal headers', async () => {
    env.emulator.seed({ usage: [{ userId: 'u1', featureId: 'api-calls', used: 5 }] });
    const { kana, sink, app, seen, ran } = shadowApp();

    const overBudget = await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
    await request(app).get('/api/premium').set('x-user', 'u1').expect(200);
    const allowed = await request(app).get('/api/calls').set('x-user', 'u2').expect(200);
    await kana.flush();

    expect(ran()).toBe(3);
    expect(seen[0]).toMatchObject({
      allowed: false,
      status: 429,
      reason: 'limit-reached',
      used: 5,
      budget: 5,
      source: 'kana',
    });
    expect(seen[1]).toMatchObject({ allowed: false, status: 402, reason: 'not-in-plan' });
    expect(seen[2]).toMatchObject({ allowed: true, remaining: 4 });
    for (const response of [overBudget, allowed]) {
      expect(response.headers['retry-after']).toBeUndefined();
      expect(response.headers['ratelimit-policy']).toBeUndefined();
      expect(response.headers.ratelimit).toBeUndefined();
    }
    expect(env.emulator.usage('u1', 'api-calls')).toBe(6); // billed as usual
    expect(env.emulator.usage('u1', 'premium')).toBe(1);
    expect(kana.stats()).toMatchObject({ shadowDenied: 2, denied: 0, allowed: 1 });
    expect(sink.withCode(logCodes.shadowDenied)).toEqual([
      expect.objectContaining({ level: 30, userId: 'u1', featureId: 'api-calls', status: 429, path: '/api/calls' }),
    ]); // the 402 a moment later is counted, not logged: one line per interval
  });

  it('holds units like true: 20 requests at once against 5 left make 15 would-be refusals, all served', async () => {
    const { kana, sink, app } = shadowApp();
    const responses = await Promise.all(
      Array.from({ length: 20 }, () => request(app).get('/api/calls').set('x-user', 'u2')),
    );
    await kana.flush();
    expect(responses.every((response) => response.status === 200)).toBe(true);
    expect(kana.stats()).toMatchObject({ shadowDenied: 15, allowed: 5, checks: 1 });
    expect(env.emulator.usage('u2', 'api-calls')).toBe(20);
    expect(sink.withCode(logCodes.shadowDenied)).toEqual([expect.objectContaining({ notLogged: 0, shadowDenied: 1 })]);
  });

  it("never refuses when Kana is unreachable either, with onKanaError: 'deny'", async () => {
    const { kana, app, seen } = shadowApp({ onKanaError: 'deny' });
    await env.emulator.setOffline(true);
    try {
      await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
    } finally {
      await env.emulator.setOffline(false);
    }
    expect(seen[0]).toMatchObject({ allowed: false, status: 503, source: 'fallback' });
    expect(kana.stats()).toMatchObject({ shadowDenied: 1, denied: 0 });
  });

  it('applies per route map entry and per meter(), beside routes enforced for real', async () => {
    env.emulator.seed({ usage: [{ userId: 'u1', featureId: 'api-calls', used: 5 }] });
    const { kana, app } = shadowApp(
      {
        enforce: true,
        routes: { 'GET /api/calls': { feature: 'api-calls', enforce: 'shadow' }, 'GET /api/strict': 'api-calls' },
      },
      (app) => {
        app.get('/api/strict', (_req, res) => res.json({}));
        app.get('/api/reports', meter('reports', { enforce: 'shadow' }), (_req, res) => res.json({}));
        app.get('/api/reports-strict', meter('reports', { enforce: true }), (_req, res) => res.json({}));
      },
    );
    await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
    await request(app).get('/api/strict').set('x-user', 'u1').expect(429);
    await request(app).get('/api/reports').set('x-user', 'u1').expect(200); // uses the one report
    await request(app).get('/api/reports').set('x-user', 'u1').expect(200); // would be refused
    await request(app).get('/api/reports-strict').set('x-user', 'u1').expect(429);
    expect(kana.stats()).toMatchObject({ shadowDenied: 2, denied: 2 });
  });

  it('logs at most one line per interval under load, counting every would-be refusal', async () => {
    env.emulator.seed({ usage: [{ userId: 'u1', featureId: 'api-calls', used: 5 }] });
    const { kana, sink, app } = shadowApp();
    for (let i = 0; i < 50; i++) await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
    expect(kana.stats().shadowDenied).toBe(50);
    expect(sink.withCode(logCodes.shadowDenied)).toHaveLength(1);
  });
});
