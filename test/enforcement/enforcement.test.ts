// Entitlement enforcement end to end: real Express apps (4 and 5) through supertest, against the emulator.

import { connect } from 'node:net';
import type { Request, Response } from 'express';
import request from 'supertest';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import type { EmulatorSeed } from '../../src/emulator/index.js';
import { type EntitlementDecision, type KanaMeterOptions, kanaMeter, logCodes, meter } from '../../src/index.js';
import { expressVersions, meteredApp, meterOptions, sleep } from '../helpers/app.js';
import { deferred } from '../helpers/deferred.js';
import { useEmulator } from '../helpers/emulator.js';

const HOUR = 3_600_000;
const QUOTA_EXCEEDED = 'https://iana.org/assignments/http-problem-types#quota-exceeded';

/**
 * Users u1..u4 on "small": api-calls 5 a day (the day started 23 hours ago, so it resets in an
 * hour), reports 3 that never reset, sso (BINARY), exports unlimited, overage-calls 2 with overage.
 * "nobody" has no subscription; "premium" is in no package.
 */
const seed: EmulatorSeed = {
  users: ['u1', 'u2', 'u3', 'u4', 'nobody'].map((id) => ({ id })),
  features: [
    { id: 'api-calls', type: 'CONSUMABLE' },
    { id: 'reports', type: 'CONSUMABLE' },
    { id: 'exports', type: 'CONSUMABLE' },
    { id: 'overage-calls', type: 'CONSUMABLE' },
    { id: 'premium', type: 'CONSUMABLE' },
    { id: 'sso', type: 'BINARY' },
  ],
  packages: [
    {
      id: 'small',
      features: [
        { id: 'api-calls', limit: 5, resetPeriod: 'DAY' },
        { id: 'reports', limit: 3 },
        { id: 'exports', limit: null },
        { id: 'overage-calls', limit: 2, overageEnabled: true },
        { id: 'sso' },
      ],
    },
  ],
};

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  const startedAt = new Date(Date.now() - 23 * HOUR).toISOString();
  env.emulator.seed({
    ...seed,
    subscriptions: ['u1', 'u2', 'u3', 'u4'].map((userId) => ({ userId, packageId: 'small', startedAt })),
  });
});

function setUsage(userId: string, featureId: string, used: number): void {
  env.emulator.seed({ usage: [{ userId, featureId, used }] });
}

function enforced(overrides: Partial<KanaMeterOptions> = {}) {
  const { options, sink } = meterOptions(env.emulator, { enforce: true, ...overrides });
  const kana = env.trackTest(kanaMeter(options));
  return { kana, sink };
}

/** Kana calls that checked an entitlement. */
function checks() {
  return env.emulator.requests().filter((sent) => sent.fieldNames.includes('canUseFeature'));
}

/** A handler that answers 200 with what the gate decided, and counts its runs. */
function recordingHandler() {
  const seen: (EntitlementDecision | undefined)[] = [];
  const handler = (req: Request, res: Response) => {
    seen.push(req.kana);
    res.json({ remaining: req.kana?.remaining ?? null });
  };
  return { seen, handler };
}

describe.each(expressVersions)('%s', (_name, createExpress) => {
  it('checks a mapped route before routing, with its delta, and gives the decision to the handler', async () => {
    const { kana } = enforced({ routes: { 'POST /api/search': { feature: 'api-calls', delta: 2 } } });
    const { seen, handler } = recordingHandler();
    const app = meteredApp(createExpress, kana, (app) => app.post('/api/search', handler));

    await request(app).post('/api/search').set('x-user', 'u1').expect(200, { remaining: 3 });
    await request(app).post('/api/search').set('x-user', 'u1').expect(200, { remaining: 1 });
    const refused = await request(app).post('/api/search').set('x-user', 'u1').expect(429);
    await kana.flush();

    expect(checks()).toHaveLength(1);
    expect(checks()[0]?.variables).toEqual({ userId: 'u1', featureId: 'api-calls', delta: 2 });
    expect(seen[0]).toMatchObject({
      allowed: true,
      reason: 'allowed',
      status: undefined,
      userId: 'u1',
      featureId: 'api-calls',
      delta: 2,
      source: 'kana',
      used: 0,
      budget: 5,
      remaining: 3,
      overageEnabled: false,
    });
    expect(seen[0]?.resetAt).toBeInstanceOf(Date);
    expect(seen[1]).toMatchObject({ source: 'cache', used: 2, remaining: 1 });
    expect(seen).toHaveLength(2);
    expect(refused.body).toMatchObject({ used: 4, budget: 5 });
    expect(env.emulator.usage('u1', 'api-calls')).toBe(4);
    expect(kana.stats()).toMatchObject({ allowed: 2, denied: 1, checks: 1, cacheHits: 2, captured: 2 });
  });

  it('req.kana reaches handlers in routers and mounted sub-apps, is undefined elsewhere, and can be assigned', async () => {
    const { kana } = enforced({ routes: { 'GET /sub/calls': 'api-calls', 'GET /router/calls': 'api-calls' } });
    const app = createExpress();
    const subApp = createExpress();
    subApp.get('/calls', (req, res) => res.json({ remaining: req.kana?.remaining }));
    const router = (createExpress as unknown as { Router: () => import('express').Router }).Router();
    router.get('/calls', (req, res) => res.json({ remaining: req.kana?.remaining }));
    app.use(kana);
    app.use('/sub', subApp);
    app.use('/router', router);
    app.get('/free', (req, res) => res.json({ kana: req.kana ?? 'none', own: Object.keys(req).includes('kana') }));
    app.get('/mine', (req, res) => {
      req.kana = { allowed: false } as EntitlementDecision;
      res.json({ kana: req.kana });
    });

    await request(app).get('/sub/calls').set('x-user', 'u1').expect(200, { remaining: 4 });
    await request(app).get('/router/calls').set('x-user', 'u1').expect(200, { remaining: 3 });
    await request(app).get('/free').set('x-user', 'u1').expect(200, { kana: 'none', own: false });
    await request(app)
      .get('/mine')
      .set('x-user', 'u1')
      .expect(200, { kana: { allowed: false } });
    await request(app).get('/free').set('x-user', 'u1').expect(200, { kana: 'none', own: false });
  });

  it('refuses a feature that is not in the plan with 402 problem+json; the handler never runs; nothing is billed', async () => {
    const { kana } = enforced({ routes: { 'GET /api/premium': 'premium', 'GET /api/calls': 'api-calls' } });
    let ran = 0;
    const app = meteredApp(createExpress, kana, (app) => {
      app.get('/api/premium', (_req, res) => {
        ran++;
        res.json({});
      });
      app.get('/api/calls', (_req, res) => {
        ran++;
        res.json({});
      });
    });

    const response = await request(app).get('/api/premium').set('x-user', 'u1').expect(402);
    await request(app).get('/api/calls').set('x-user', 'nobody').expect(402);
    await kana.flush();

    expect(response.headers['content-type']).toBe('application/problem+json');
    expect(response.body).toEqual({
      type: 'about:blank',
      title: 'Payment Required',
      status: 402,
      detail: 'The user\'s plan does not include "premium".',
      featureId: 'premium',
    });
    expect(response.headers.ratelimit).toBeUndefined();
    expect(response.headers['retry-after']).toBeUndefined();
    expect(ran).toBe(0);
    expect(env.emulator.usageCalls()).toEqual([]);
    expect(kana.stats()).toMatchObject({ denied: 2, allowed: 0, captured: 0 });
  });

  it('refuses a used-up allowance with 429, Retry-After from the period end and RateLimit headers', async () => {
    setUsage('u1', 'api-calls', 5);
    const { kana } = enforced({ routes: { 'GET /api/calls': 'api-calls' } });
    let ran = 0;
    const app = meteredApp(createExpress, kana, (app) =>
      app.get('/api/calls', (_req, res) => {
        ran++;
        res.json({});
      }),
    );

    const response = await request(app).get('/api/calls').set('x-user', 'u1').expect(429);
    await kana.flush();

    const retryAfter = Number(response.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(HOUR / 1000 - 60); // the day resets an hour after the test's seed
    expect(retryAfter).toBeLessThanOrEqual(HOUR / 1000);
    expect(response.headers['ratelimit-policy']).toBe('"api-calls";q=5;w=86400');
    expect(response.headers.ratelimit).toBe(`"api-calls";r=0;t=${retryAfter}`);
    expect(response.headers['content-type']).toBe('application/problem+json');
    expect(response.body).toEqual({
      type: QUOTA_EXCEEDED,
      title: 'Request cannot be satisfied as assigned quota has been exceeded',
      status: 429,
      detail: expect.stringMatching(
        /^The allowance of "api-calls" does not cover this request: 5 of 5 used; it resets at \d{4}-/,
      ),
      featureId: 'api-calls',
      used: 5,
      budget: 5,
      'violated-policies': ['api-calls'],
    });
    expect(ran).toBe(0);
    expect(env.emulator.usageCalls()).toEqual([]);
  });

  it('lets exactly the budget through when 20 requests arrive at once (each holds its units)', async () => {
    const { kana } = enforced({ routes: { 'GET /api/calls': 'api-calls' } });
    const app = meteredApp(createExpress, kana, (app) =>
      app.get('/api/calls', async (_req, res) => {
        await sleep(50);
        res.json({});
      }),
    );

    const responses = await Promise.all(
      Array.from({ length: 20 }, () => request(app).get('/api/calls').set('x-user', 'u2')),
    );
    await kana.flush();

    const statuses = responses.map((response) => response.status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(5);
    expect(statuses.filter((status) => status === 429)).toHaveLength(15);
    expect(env.emulator.usage('u2', 'api-calls')).toBe(5);
    expect(checks()).toHaveLength(1);
  });

  it('releases a hold when the response is not a 2xx or the handler throws', async () => {
    setUsage('u3', 'api-calls', 4); // one unit left
    const { kana } = enforced({ routes: { 'ALL /api/*rest': 'api-calls' } });
    let entered!: () => void;
    const slowEntered = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const app = meteredApp(createExpress, kana, (app) => {
      app.get('/api/bad', (_req, res) => res.status(400).json({}));
      app.get('/api/throws', () => {
        throw new Error('handler failed');
      });
      app.get('/api/slow', async (_req, res) => {
        entered();
        await sleep(50);
        res.json({});
      });
      app.get('/api/ok', (_req, res) => res.json({}));
    });

    await request(app).get('/api/bad').set('x-user', 'u3').expect(400);
    await request(app).get('/api/throws').set('x-user', 'u3').expect(500);
    // While one request holds the last unit, a concurrent one is refused.
    const [slow, concurrent] = await Promise.all([
      request(app).get('/api/slow').set('x-user', 'u3'),
      slowEntered.then(() => request(app).get('/api/ok').set('x-user', 'u3')),
    ]);
    const after = await request(app).get('/api/ok').set('x-user', 'u3');
    await kana.flush();

    expect([slow.status, concurrent.status, after.status]).toEqual([200, 429, 429]);
    expect(env.emulator.usage('u3', 'api-calls')).toBe(5);
  });

  it('lets the request through and logs when Kana is unreachable (onKanaError: allow, the default)', async () => {
    const { kana, sink } = enforced({ routes: { 'GET /api/calls': 'api-calls' } });
    const { seen, handler } = recordingHandler();
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/calls', handler));

    await env.emulator.setOffline(true);
    try {
      await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
    } finally {
      await env.emulator.setOffline(false);
    }
    await kana.flush();

    expect(seen[0]).toMatchObject({
      allowed: true,
      reason: 'kana-error',
      source: 'fallback',
      used: null,
      budget: null,
      remaining: null,
    });
    expect(seen[0]?.error?.code).toBe('KANA_UNREACHABLE');
    expect(kana.stats()).toMatchObject({ failedOpen: 1, checkErrors: 1, allowed: 1, checks: 1, checkOutages: 1 });
    // Kana unreachable is an outage of checks: one warning, not a line per failed check.
    expect(sink.withCode(logCodes.checksUnavailable).filter((line) => line.level === 40)).toEqual([
      expect.objectContaining({ userId: 'u1', featureId: 'api-calls', onKanaError: 'allow' }),
    ]);
    expect(sink.withCode(logCodes.checkFailed)).toEqual([]);
    expect(sink.raw.join('\n')).not.toContain(env.emulator.apiKey);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1); // a request let through is billed as usual
  });

  it("refuses with 503 problem+json when Kana is unreachable and onKanaError is 'deny'", async () => {
    const { kana } = enforced({ routes: { 'GET /api/calls': 'api-calls' }, onKanaError: 'deny' });
    let ran = 0;
    const app = meteredApp(createExpress, kana, (app) =>
      app.get('/api/calls', (_req, res) => {
        ran++;
        res.json({});
      }),
    );

    await env.emulator.setOffline(true);
    let response: request.Response;
    try {
      response = await request(app).get('/api/calls').set('x-user', 'u1').expect(503);
    } finally {
      await env.emulator.setOffline(false);
    }
    await kana.flush();

    expect(response.headers['content-type']).toBe('application/problem+json');
    expect(response.body).toEqual({
      type: 'about:blank',
      title: 'Service Unavailable',
      status: 503,
      detail: 'The entitlement to "api-calls" could not be checked.',
      featureId: 'api-calls',
    });
    expect(ran).toBe(0);
    expect(env.emulator.usageCalls()).toEqual([]);
    expect(kana.stats()).toMatchObject({ denied: 1, failedOpen: 0, checkErrors: 1 });
  });

  it('onDenied replaces the refusal; a refused request is not billed even when onDenied answers 200', async () => {
    const decisions: EntitlementDecision[] = [];
    const { kana } = enforced({
      routes: { 'GET /api/premium': 'premium' },
      isSuccess: () => true, // would bill anything that finishes
      onDenied: (_req, res, decision) => {
        decisions.push(decision);
        res.status(200).json({ upgrade: `/pricing?feature=${decision.featureId}` });
      },
    });
    let ran = 0;
    const app = meteredApp(createExpress, kana, (app) =>
      app.get('/api/premium', (_req, res) => {
        ran++;
        res.json({});
      }),
    );

    await request(app).get('/api/premium').set('x-user', 'u1').expect(200, { upgrade: '/pricing?feature=premium' });
    await kana.flush();

    expect(decisions).toEqual([
      expect.objectContaining({ allowed: false, status: 402, reason: 'not-in-plan', featureId: 'premium' }),
    ]);
    expect(ran).toBe(0);
    expect(env.emulator.usageCalls()).toEqual([]);
  });
});

describe('where the gate runs and what it checks', () => {
  const createExpress = expressVersions[0][1];

  it('meter(feature, { enforce }) and a route entry { enforce } override kanaMeter enforce, either way', async () => {
    const { kana } = enforced({
      routes: { 'GET /api/free': { feature: 'api-calls', enforce: false } },
    });
    const { options } = meterOptions(env.emulator, {
      routes: { 'GET /api/mapped': { feature: 'api-calls', enforce: true } },
    });
    const lax = kanaMeter(options);
    env.trackTest(lax);
    const strictApp = meteredApp(createExpress, kana, (app) => {
      app.get('/api/free', (_req, res) => res.json({}));
      app.get('/api/reports', meter('reports', { enforce: false }), (_req, res) => res.json({}));
    });
    const laxApp = meteredApp(createExpress, lax, (app) => {
      app.get('/api/mapped', (_req, res) => res.json({}));
      app.get('/api/unchecked', meter('reports'), (_req, res) => res.json({}));
      app.get('/api/premium', meter('premium', { enforce: true }), (_req, res) => res.json({}));
    });

    await request(strictApp).get('/api/free').set('x-user', 'u1').expect(200);
    await request(strictApp).get('/api/reports').set('x-user', 'u1').expect(200);
    await request(laxApp).get('/api/unchecked').set('x-user', 'u1').expect(200);
    expect(checks()).toEqual([]);
    await request(laxApp).get('/api/mapped').set('x-user', 'u1').expect(200);
    await request(laxApp).get('/api/premium').set('x-user', 'u1').expect(402);
    expect(checks().map((sent) => sent.variables?.featureId)).toEqual(['api-calls', 'premium']);
  });

  it('a mapped route is refused before routing; a meter() route after the middleware before it', async () => {
    const { kana } = enforced({ routes: { 'GET /api/premium': 'premium' }, userId: (req) => req.get('x-user') });
    let routeMiddlewareRuns = 0;
    const app = meteredApp(createExpress, kana, (app) => {
      app.get(
        '/api/premium',
        (_req, _res, next) => {
          routeMiddlewareRuns++;
          next();
        },
        (_req, res) => res.json({}),
      );
      // Route-level authentication before meter(): the gate sees the user it sets.
      app.get(
        '/api/reports',
        (req, _res, next) => {
          req.headers['x-user'] = 'u1';
          next();
        },
        meter('reports'),
        (req, res) => res.json({ remaining: req.kana?.remaining }),
      );
    });

    await request(app).get('/api/premium').set('x-user', 'u1').expect(402);
    await request(app).get('/api/reports').expect(200, { remaining: 2 });
    expect(routeMiddlewareRuns).toBe(0);
  });

  it('checks a delta computed from the response as 1, and bills the computed delta', async () => {
    const { kana } = enforced();
    const app = meteredApp(createExpress, kana, (app) =>
      app.get('/api/reports', meter('reports', { delta: (_req, res) => res.locals.rows }), (_req, res) => {
        res.locals.rows = 2;
        res.json({});
      }),
    );

    await request(app).get('/api/reports').set('x-user', 'u1').expect(200); // 0 used + 1 checked <= 3
    await request(app).get('/api/reports').set('x-user', 'u1').expect(200); // 2 used + 1 checked <= 3
    await request(app).get('/api/reports').set('x-user', 'u1').expect(429); // 4 used + 1 checked > 3
    await kana.flush();

    expect(checks()[0]?.variables).toMatchObject({ delta: 1 });
    // Checked as 1, billed as computed: such a route can end past its budget by one response's delta.
    expect(env.emulator.usage('u1', 'reports')).toBe(4);
  });

  it('checks one feature once when the route map and meter() both enforce it (the first check decides)', async () => {
    setUsage('u1', 'api-calls', 4);
    const { kana } = enforced({ routes: { 'GET /api/calls': 'api-calls' } });
    const app = meteredApp(createExpress, kana, (app) =>
      app.get('/api/calls', meter('api-calls'), (req, res) => res.json({ remaining: req.kana?.remaining })),
    );

    await request(app).get('/api/calls').set('x-user', 'u1').expect(200, { remaining: 0 });
    await request(app).get('/api/calls').set('x-user', 'u1').expect(429);
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(5);
  });

  it('reads userId once per enforced request, before the handler, and bills that id', async () => {
    let calls = 0;
    const { kana } = enforced({
      routes: { 'GET /api/calls': 'api-calls' },
      userId: async (req) => {
        calls++;
        await sleep(1);
        return req.get('x-user');
      },
    });
    const app = meteredApp(createExpress, kana, (app) =>
      app.get('/api/calls', (req, res) => {
        req.headers['x-user'] = 'u4'; // too late to change who is billed
        res.json({});
      }),
    );

    await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
    await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
    await kana.flush();

    expect(calls).toBe(2);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(2);
    expect(env.emulator.usage('u4', 'api-calls')).toBe(0);
  });

  it("with anonymous: 'allow', does not check nor bill an enforced request without a user id, and warns once", async () => {
    const { kana, sink } = enforced({ routes: { 'GET /api/calls': 'api-calls' }, anonymous: 'allow' });
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/calls', (_req, res) => res.json({})));

    await request(app).get('/api/calls').expect(200);
    await request(app).get('/api/calls').set('x-user', '').expect(200);
    await kana.flush();

    expect(checks()).toEqual([]);
    expect(env.emulator.usageCalls()).toEqual([]);
    expect(kana.stats()).toMatchObject({ unchecked: 2, skippedNoUser: 2, allowed: 0 });
    expect(sink.withCode(logCodes.uncheckedNoUser)).toEqual([
      expect.objectContaining({ level: 40, featureId: 'api-calls', path: '/api/calls' }),
    ]);
  });
});

describe('the entitlement cache', () => {
  const createExpress = expressVersions[0][1];

  it('makes one Kana call for 50 requests in a row', async () => {
    const { kana } = enforced({ routes: { 'GET /api/exports': 'exports' } });
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/exports', (_req, res) => res.json({})));

    for (let i = 0; i < 50; i++) await request(app).get('/api/exports').set('x-user', 'u1').expect(200);
    await kana.flush();

    expect(checks()).toHaveLength(1);
    expect(kana.stats()).toMatchObject({ checks: 1, cacheHits: 49, allowed: 50, entitlements: 1 });
    expect(env.emulator.usage('u1', 'exports')).toBe(50);
  });

  it('shares one Kana call between concurrent misses for one (user, feature)', async () => {
    const { kana } = enforced({ routes: { 'GET /api/exports': 'exports' } });
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/exports', (_req, res) => res.json({})));
    env.emulator.failNext({ delayMs: 100 }, { operation: 'canUseFeature' });

    const responses = await Promise.all(
      Array.from({ length: 10 }, () => request(app).get('/api/exports').set('x-user', 'u1')),
    );
    const other = await request(app).get('/api/exports').set('x-user', 'u2');

    expect(responses.every((response) => response.status === 200)).toBe(true);
    expect(other.status).toBe(200);
    expect(checks().map((sent) => sent.variables?.userId)).toEqual(['u1', 'u2']);
  });

  it('stops sequential requests exactly at the budget, also once the usage is delivered', async () => {
    const { kana } = enforced({ routes: { 'GET /api/calls': 'api-calls' } });
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/calls', (_req, res) => res.json({})));

    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) {
      statuses.push((await request(app).get('/api/calls').set('x-user', 'u1')).status);
      await kana.flush(); // delivered: Kana's cached `used` is now behind by what this process sent
    }

    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(5);
    expect(checks()).toHaveLength(1);
  });

  it('counts usage waiting for delivery when it asks Kana', async () => {
    const { kana } = enforced({ routes: { 'GET /api/calls': 'api-calls' }, entitlementTtl: 0 });
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/calls', (_req, res) => res.json({})));

    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await request(app).get('/api/calls').set('x-user', 'u1')).status);

    expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
    expect(checks()).toHaveLength(6); // TTL 0: every request asks Kana, which has seen none of it yet
    expect(env.emulator.usage('u1', 'api-calls')).toBe(0);
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(5);
  });

  it('sees usage recorded elsewhere only once the TTL has expired', async () => {
    // The clock moves when the test says so: no request can be late for the cache.
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      const { kana } = enforced({ routes: { 'GET /api/calls': 'api-calls' }, entitlementTtl: 60_000 });
      const app = meteredApp(createExpress, kana, (app) => app.get('/api/calls', (_req, res) => res.json({})));

      await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
      setUsage('u1', 'api-calls', 5); // another process used the rest
      vi.setSystemTime(Date.now() + 59_000);
      await request(app).get('/api/calls').set('x-user', 'u1').expect(200); // stale: still allowed
      expect(checks()).toHaveLength(1);
      vi.setSystemTime(Date.now() + 1_001);
      await request(app).get('/api/calls').set('x-user', 'u1').expect(429);
      expect(checks()).toHaveLength(2);
    } finally {
      vi.useRealTimers();
    }
  });

  it('keeps at most maxEntitlements entries', async () => {
    const { kana } = enforced({ routes: { 'GET /api/exports': 'exports' }, maxEntitlements: 2 });
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/exports', (_req, res) => res.json({})));

    for (const user of ['u1', 'u2', 'u3', 'u1']) await request(app).get('/api/exports').set('x-user', user).expect(200);

    expect(kana.stats().entitlements).toBe(2);
    expect(checks().map((sent) => sent.variables?.userId)).toEqual(['u1', 'u2', 'u3', 'u1']);
  });
});

describe('holds end with the response', () => {
  const createExpress = expressVersions[0][1];

  it('releases the hold of a request whose client aborted, as soon as the connection closes', async () => {
    setUsage('u1', 'api-calls', 4); // one unit left
    const { kana } = enforced({ routes: { 'GET /api/*rest': 'api-calls' } });
    const slowFinished = deferred();
    const slowEntered = deferred();
    const slowClosed = deferred();
    let finishSlow!: () => void;
    const app = meteredApp(createExpress, kana, (app) => {
      app.get('/api/slow', (_req, res) => {
        // Registered after the gate's own 'close' listener: when this runs, the hold is released.
        res.once('close', slowClosed.resolve);
        slowEntered.resolve();
        finishSlow = () => {
          res.json({});
          slowFinished.resolve();
        };
      });
      app.get('/api/ok', (_req, res) => res.json({}));
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const { port } = server.address() as { port: number };
      const socket = connect(port, '127.0.0.1');
      socket.write('GET /api/slow HTTP/1.1\r\nHost: x\r\nx-user: u1\r\n\r\n');
      await slowEntered.promise; // checked, and holding the last unit
      await request(server).get('/api/ok').set('x-user', 'u1').expect(429);
      socket.destroy();
      await slowClosed.promise;
      await request(server).get('/api/ok').set('x-user', 'u1').expect(200); // before the slow handler ends
      finishSlow();
      await slowFinished.promise;
      await kana.flush();
    } finally {
      server.close();
    }
    expect(env.emulator.usage('u1', 'api-calls')).toBe(5); // the aborted request was not billed
  });
});

describe('a client that leaves while its check is pending', () => {
  it('is dropped: the handler never runs, nothing is held or billed', async () => {
    setUsage('u1', 'api-calls', 4); // one unit left
    // The check is held until the client has gone: the order is the test's, not the clock's.
    let holding = true;
    const sent = deferred();
    const released = deferred();
    const answered = deferred();
    const { kana } = enforced({
      routes: { 'GET /api/*rest': 'api-calls' },
      fetch: async (input, init) => {
        if (holding) {
          holding = false;
          sent.resolve();
          await released.promise;
        }
        return fetch(input, init);
      },
      metrics: {
        bind() {},
        observeKanaCall: (call) => {
          if (call.operation === 'check') answered.resolve();
        },
      },
    });
    let ran = 0;
    const app = meteredApp(expressVersions[0][1], kana, (app) =>
      app.get('/api/calls', (_req, res) => {
        ran++;
        res.json({});
      }),
    );
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const gone = deferred();
    // After the app's own listener: when this 'close' listener runs, the gate's has run.
    server.once('request', (_req, res) => res.once('close', gone.resolve));
    try {
      const { port } = server.address() as { port: number };
      const socket = connect(port, '127.0.0.1');
      socket.write('GET /api/calls HTTP/1.1\r\nHost: x\r\nx-user: u1\r\n\r\n');
      await sent.promise; // the gate is waiting for Kana
      socket.destroy();
      await gone.promise; // the server saw the client leave, before Kana answered
      released.resolve();
      await answered.promise;
      await new Promise((resolve) => setImmediate(resolve)); // the gate has decided on the answer
      expect(ran).toBe(0);
      expect(kana.stats()).toMatchObject({ checks: 1, allowed: 0, denied: 0 });
      await request(server).get('/api/calls').set('x-user', 'u1').expect(200); // the last unit was not held
      await kana.flush();
    } finally {
      server.close();
    }
    expect(ran).toBe(1);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(5);
    expect(kana.stats()).toMatchObject({ allowed: 1, checks: 1 });
  });
});

describe('feature kinds', () => {
  const createExpress = expressVersions[0][1];

  it('BINARY: access or not, no RateLimit headers, billed when allowed', async () => {
    const { kana } = enforced({ routes: { 'GET /api/sso': 'sso' } });
    const { seen, handler } = recordingHandler();
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/sso', handler));

    const allowed = await request(app).get('/api/sso').set('x-user', 'u1').expect(200);
    await request(app).get('/api/sso').set('x-user', 'nobody').expect(402);
    await kana.flush();

    expect(seen[0]).toMatchObject({ allowed: true, used: null, budget: null, remaining: null, resetAt: null });
    expect(allowed.headers['ratelimit-policy']).toBeUndefined();
    expect(env.emulator.usageCalls()).toEqual([expect.objectContaining({ userId: 'u1', featureId: 'sso', delta: 1 })]);
  });

  it('unlimited budgets always pass, and are billed', async () => {
    setUsage('u1', 'exports', 1_000_000);
    const { kana } = enforced({ routes: { 'GET /api/exports': { feature: 'exports', delta: 500 } } });
    const { seen, handler } = recordingHandler();
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/exports', handler));

    const response = await request(app).get('/api/exports').set('x-user', 'u1').expect(200);
    await kana.flush();

    expect(seen[0]).toMatchObject({ allowed: true, used: 1_000_000, budget: null, remaining: null });
    expect(response.headers.ratelimit).toBeUndefined();
    expect(env.emulator.usage('u1', 'exports')).toBe(1_000_500);
  });

  it('overage-enabled allowances pass past the budget, and are billed', async () => {
    setUsage('u1', 'overage-calls', 5);
    const { kana } = enforced({ routes: { 'GET /api/overage': 'overage-calls' } });
    const { seen, handler } = recordingHandler();
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/overage', handler));

    const response = await request(app).get('/api/overage').set('x-user', 'u1').expect(200);
    await request(app).get('/api/overage').set('x-user', 'u1').expect(200);
    await kana.flush();

    expect(seen[1]).toMatchObject({ used: 6, budget: 2, remaining: 0, overageEnabled: true });
    expect(response.headers.ratelimit).toBeUndefined();
    expect(env.emulator.usage('u1', 'overage-calls')).toBe(7);
  });

  it('two limited features on one request: both policies in the RateLimit fields, in the order checked', async () => {
    setUsage('u1', 'reports', 1);
    const { kana } = enforced({ routes: { 'GET /api/reports': 'api-calls' } });
    const app = meteredApp(createExpress, kana, (app) =>
      app.get('/api/reports', meter('reports'), (_req, res) => res.json({})),
    );

    const response = await request(app).get('/api/reports').set('x-user', 'u1').expect(200);

    expect(response.headers['ratelimit-policy']).toBe('"api-calls";q=5;w=86400, "reports";q=3');
    expect(response.headers.ratelimit).toMatch(/^"api-calls";r=4;t=\d+, "reports";r=1$/);
  });

  it('a finite allowance without a reset period: RateLimit without a window or reset time, no Retry-After', async () => {
    setUsage('u1', 'reports', 2);
    const { kana } = enforced({ routes: { 'GET /api/reports': 'reports' } });
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/reports', (_req, res) => res.json({})));

    const allowed = await request(app).get('/api/reports').set('x-user', 'u1').expect(200);
    const refused = await request(app).get('/api/reports').set('x-user', 'u1').expect(429);

    expect(allowed.headers['ratelimit-policy']).toBe('"reports";q=3');
    expect(allowed.headers.ratelimit).toBe('"reports";r=0');
    expect(refused.headers['retry-after']).toBeUndefined();
    expect(refused.body.detail).toBe('The allowance of "reports" does not cover this request: 3 of 3 used.');
  });

  it('rateLimitHeaders: false sends none', async () => {
    const { kana } = enforced({ routes: { 'GET /api/calls': 'api-calls' }, rateLimitHeaders: false });
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/calls', (_req, res) => res.json({})));
    const response = await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
    expect(response.headers['ratelimit-policy']).toBeUndefined();
    expect(response.headers.ratelimit).toBeUndefined();
  });
});

describe('a slow or failing Kana', () => {
  const createExpress = expressVersions[0][1];

  it.each([
    // Let through: the handler runs and sees why. Refused: a 503 problem, and the handler never runs.
    ['allow', 200, { error: 'KANA_TIMEOUT' }],
    ['deny', 503, expect.objectContaining({ status: 503, featureId: 'api-calls', type: 'about:blank' })],
  ] as const)('a hung check gives up after checkTimeoutMs (onKanaError: %s)', async (onKanaError, status, body) => {
    const { kana, sink } = enforced({ routes: { 'GET /api/calls': 'api-calls' }, checkTimeoutMs: 100, onKanaError });
    const app = meteredApp(createExpress, kana, (app) =>
      app.get('/api/calls', (req, res) => res.json({ error: req.kana?.error?.code })),
    );
    env.emulator.failNext({ delayMs: 1500, apply: false }, { operation: 'canUseFeature' });

    // Had the gate waited for Kana's answer, u1 (0 of 5 used) would have been allowed with no error.
    const response = await request(app).get('/api/calls').set('x-user', 'u1').expect(status);

    expect(response.body).toEqual(body);
    expect(sink.withCode(logCodes.checksUnavailable).filter((line) => line.level === 40)).toEqual([
      expect.objectContaining({ err: expect.objectContaining({ code: 'KANA_TIMEOUT' }) }),
    ]);
  });

  it('an error answer (an unknown user) goes through onKanaError too', async () => {
    const { kana } = enforced({ routes: { 'GET /api/calls': 'api-calls' }, onKanaError: 'deny' });
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/calls', (_req, res) => res.json({})));
    await request(app).get('/api/calls').set('x-user', 'ghost').expect(503);
    expect(kana.stats()).toMatchObject({ checkErrors: 1, denied: 1 });
  });

  it('an onDenied that throws is logged, and the default refusal is sent', async () => {
    const { kana, sink } = enforced({
      routes: { 'GET /api/premium': 'premium' },
      onDenied: () => {
        throw new Error('template missing');
      },
    });
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/premium', (_req, res) => res.json({})));
    const response = await request(app).get('/api/premium').set('x-user', 'u1').expect(402);
    expect(response.body.featureId).toBe('premium');
    expect(kana.stats().hookErrors).toBe(1);
    expect(sink.withCode(logCodes.hookFailed)).toEqual([expect.objectContaining({ hook: 'onDenied' })]);
  });
});
