// Issue 16, point 2: an enforced route without a user is refused (401 problem+json, handler not run), unless `anonymous: 'allow'`.

import { Registry } from 'prom-client';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { type KanaMeterOptions, kanaMeter, logCodes, meter } from '../../src/index.js';
import { prometheusMetrics } from '../../src/integrations/prometheus.js';
import { basicSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(basicSeed);
});

/** An app with an enforced mapped route, an enforced meter() route and a metered-only route; counts handler runs. */
function setup(overrides: Partial<KanaMeterOptions> = {}) {
  const register = new Registry();
  const { options, sink } = meterOptions(env.emulator, {
    routes: { 'GET /api/search': { feature: 'api-calls', enforce: true } },
    metrics: prometheusMetrics({ register }),
    ...overrides,
  });
  const kana = env.trackTest(kanaMeter(options));
  const runs = { search: 0, report: 0, export: 0 };
  const app = meteredApp(expressVersions[0][1], kana, (app) => {
    app.get('/api/search', (_req, res) => {
      runs.search++;
      res.json({ hits: [] });
    });
    app.get('/api/reports/:id', meter('reports', { enforce: true }), (_req, res) => {
      runs.report++;
      res.json({});
    });
    app.get('/api/exports', meter('exports'), (_req, res) => {
      runs.export++;
      res.json({});
    });
  });
  return { kana, sink, app, runs, register };
}

const checks = () => env.emulator.requests().filter((sent) => sent.fieldNames.includes('canUseFeature'));

describe("anonymous: 'refuse' (the default)", () => {
  it('refuses an enforced mapped route without a user with 401 problem+json; the handler does not run; counted, logged once, in Prometheus', async () => {
    const { kana, sink, app, runs, register } = setup();

    const response = await request(app).get('/api/search').expect(401);
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(response.body).toMatchObject({
      type: 'about:blank',
      title: 'Unauthorized',
      status: 401,
      featureId: 'api-calls',
    });
    expect(response.body.detail).toMatch(/not authenticated/);
    await request(app).get('/api/search').set('x-user', '').expect(401);
    await kana.flush();

    expect(runs.search).toBe(0);
    expect(checks()).toEqual([]);
    expect(env.emulator.usageCalls()).toEqual([]);
    expect(kana.stats()).toMatchObject({ refusedNoUser: 2, unchecked: 0, allowed: 0, captured: 0 });
    expect(sink.withCode(logCodes.refusedNoUser)).toEqual([
      expect.objectContaining({ level: 40, featureId: 'api-calls', path: '/api/search' }),
    ]);
    expect(await register.metrics()).toMatch(/^kana_meter_enforcement_refused_no_user_total 2$/m);
  });

  it('refuses an enforced meter() route too, and still serves and bills a user', async () => {
    const { kana, app, runs } = setup();
    await request(app).get('/api/reports/1').expect(401);
    await request(app).get('/api/reports/1').set('x-user', 'u1').expect(200);
    await kana.flush();
    expect(runs.report).toBe(1);
    expect(env.emulator.usage('u1', 'reports')).toBe(1);
    expect(kana.stats()).toMatchObject({ refusedNoUser: 1, allowed: 1 });
  });

  it('refuses a request whose userId hook throws or rejects: a broken authentication does not open the API', async () => {
    for (const userId of [
      () => {
        throw new Error('session store down');
      },
      () => Promise.reject(new Error('session store down')),
    ]) {
      const { kana, app, runs } = setup({ userId });
      await request(app).get('/api/search').expect(401);
      expect(runs.search).toBe(0);
      expect(kana.stats()).toMatchObject({ refusedNoUser: 1, userIdErrors: 1 });
    }
  });

  it('leaves routes that are only metered unchanged: served, nothing to bill, logged once', async () => {
    const { kana, app, runs, sink } = setup();
    await request(app).get('/api/exports').expect(200);
    await request(app).get('/api/exports').expect(200);
    await kana.flush();
    expect(runs.export).toBe(2);
    expect(kana.stats()).toMatchObject({ skippedNoUser: 2, refusedNoUser: 0, captured: 0 });
    expect(sink.withCode(logCodes.skippedNoUser)).toEqual([
      expect.objectContaining({ level: 40, path: '/api/exports' }),
    ]);
  });

  it('in shadow mode, changes nothing clients see: served, unbilled, counted as shadowDenied', async () => {
    const { kana, app, runs, sink } = setup({ enforce: 'shadow', routes: { 'GET /api/search': 'api-calls' } });
    await request(app).get('/api/search').expect(200);
    await kana.flush();
    expect(runs.search).toBe(1);
    expect(env.emulator.usageCalls()).toEqual([]);
    expect(kana.stats()).toMatchObject({ refusedNoUser: 0, shadowDenied: 1, unchecked: 1 });
    expect(sink.withCode(logCodes.refusedNoUser)).toEqual([expect.objectContaining({ shadow: true })]);
  });
});

describe("anonymous: 'allow'", () => {
  it('keeps the old behaviour: served, not checked, not billed, logged once', async () => {
    const { kana, app, runs, sink } = setup({ anonymous: 'allow' });
    await request(app).get('/api/search').expect(200);
    await request(app).get('/api/search').expect(200);
    await kana.flush();
    expect(runs.search).toBe(2);
    expect(checks()).toEqual([]);
    expect(env.emulator.usageCalls()).toEqual([]);
    expect(kana.stats()).toMatchObject({ unchecked: 2, refusedNoUser: 0 });
    expect(sink.withCode(logCodes.uncheckedNoUser)).toHaveLength(1);
  });

  it('is checked at creation: a bad value throws a TypeError naming it', () => {
    const { options } = meterOptions(env.emulator);
    expect(() => kanaMeter({ ...options, anonymous: 'deny' as never })).toThrow(TypeError);
    expect(() => kanaMeter({ ...options, anonymous: 'deny' as never })).toThrow(/anonymous/);
  });
});
