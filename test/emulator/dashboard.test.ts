// The dashboard over HTTP: the page, dashboard.json computed by the entitlement rules, and who may read it.
import { request } from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type EmulatorSeed, type KanaEmulator, startKanaEmulator } from '../../src/emulator/index.js';
import { CAN_USE_FEATURE, CREATE_USAGE_EVENT, post } from './graphql-client.js';

const T0 = Date.parse('2026-03-10T12:00:00.000Z');
let clock = T0;
let emulator: KanaEmulator;

const seed: EmulatorSeed = {
  users: [{ id: 'u1', name: 'Ada' }, { id: 'u2' }, { id: 'u3', name: 'Nobody' }],
  features: [
    { id: 'api-calls', name: 'API Calls', type: 'CONSUMABLE', unitLabel: 'call', unitLabelPlural: 'calls' },
    { id: 'exports', name: 'Exports', type: 'CONSUMABLE' },
    { id: 'reports', name: 'Reports', type: 'CONSUMABLE' },
    { id: 'sso', name: 'SSO', type: 'BINARY' },
  ],
  packages: [
    {
      id: 'pro',
      name: 'Pro',
      features: [
        { id: 'api-calls', limit: 100, resetPeriod: 'MONTH' },
        { id: 'exports', limit: 10, resetPeriod: 'DAY', overageEnabled: true },
        { id: 'reports', limit: null },
        { id: 'sso' },
      ],
    },
    { id: 'more-calls', isAddon: true, features: [{ id: 'api-calls', limit: 500, resetPeriod: 'MONTH' }] },
    { id: 'free', features: [{ id: 'api-calls', limit: 5, resetPeriod: 'MONTH' }] },
  ],
  subscriptions: [
    { userId: 'u1', packageId: 'pro', startedAt: '2026-03-01T00:00:00.000Z' },
    { userId: 'u1', packageId: 'more-calls', startedAt: '2026-03-05T00:00:00.000Z' },
    { userId: 'u2', packageId: 'free', status: 'CANCELLED' },
  ],
  usage: [
    { userId: 'u1', featureId: 'exports', used: 12 },
    { userId: 'u2', featureId: 'api-calls', used: 7 },
  ],
};

beforeAll(async () => {
  emulator = await startKanaEmulator({ seed, now: () => clock });
});
afterAll(() => emulator.close());
beforeEach(() => {
  clock = T0;
  emulator.reset();
});

async function dashboardJson(headers: Record<string, string> = {}): Promise<any> {
  const response = await fetch(new URL('/dashboard.json', emulator.url), { headers });
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toBe('application/json; charset=utf-8');
  return response.json();
}

/** A GET with any Host header (fetch does not let a caller set Host). */
function getWithHost(url: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('GET /dashboard.json', () => {
  it('lists every user with their plans and per-feature usage against budgets', async () => {
    const state = await dashboardJson();
    expect(state.users.map((user: { id: string }) => user.id)).toEqual(['u1', 'u2', 'u3']);
    const [ada, u2, nobody] = state.users;
    expect(ada.name).toBe('Ada');
    expect(ada.subscriptions).toEqual([
      {
        id: '1',
        packageId: 'pro',
        packageName: 'Pro',
        isAddon: false,
        status: 'ACTIVE',
        entitling: true,
        startedAt: '2026-03-01T00:00:00.000Z',
      },
      {
        id: '2',
        packageId: 'more-calls',
        packageName: 'more-calls',
        isAddon: true,
        status: 'ACTIVE',
        entitling: true,
        startedAt: '2026-03-05T00:00:00.000Z',
      },
    ]);
    expect(ada.features).toEqual([
      {
        // The add-on's higher limit governs, with its own anniversary period.
        id: 'api-calls',
        name: 'API Calls',
        type: 'CONSUMABLE',
        unitLabel: 'call',
        unitLabelPlural: 'calls',
        packageId: 'more-calls',
        access: true,
        used: 0,
        budget: 500,
        overageEnabled: false,
        periodStart: '2026-03-05T00:00:00.000Z',
        periodEnd: '2026-04-05T00:00:00.000Z',
      },
      expect.objectContaining({
        id: 'exports',
        used: 12,
        budget: 10,
        overageEnabled: true,
        access: true,
        periodStart: '2026-03-10T00:00:00.000Z',
        periodEnd: '2026-03-11T00:00:00.000Z',
      }),
      expect.objectContaining({ id: 'reports', used: 0, budget: null, access: true, periodEnd: null }),
      expect.objectContaining({ id: 'sso', type: 'BINARY', budget: null, access: true, packageId: 'pro' }),
    ]);
    // A cancelled plan grants nothing; the usage recorded without an entitlement is still shown.
    expect(u2.subscriptions).toEqual([
      expect.objectContaining({ packageId: 'free', status: 'CANCELLED', entitling: false }),
    ]);
    expect(u2.features).toEqual([
      expect.objectContaining({
        id: 'api-calls',
        packageId: null,
        access: false,
        used: 7,
        budget: null,
        periodEnd: null,
      }),
    ]);
    expect(nobody).toEqual({ id: 'u3', name: 'Nobody', subscriptions: [], features: [] });
  });

  it('follows usage recorded through the API, and says when a hard limit denies access', async () => {
    for (const delta of [60, 440]) {
      const response = await post(emulator, CREATE_USAGE_EVENT, {
        input: { userId: 'u1', featureId: 'api-calls', delta },
      });
      expect(response.data).toEqual({ createUsageEvent: true });
    }
    const [ada] = (await dashboardJson()).users;
    expect(ada.features[0]).toMatchObject({ id: 'api-calls', used: 500, budget: 500, access: false });
  });

  it('has a feed of the last usage events and checks, newest first, and the usage calls for the chart', async () => {
    await post(emulator, CREATE_USAGE_EVENT, { input: { userId: 'u1', featureId: 'api-calls', delta: 7 } });
    await post(emulator, CAN_USE_FEATURE, { userId: 'u1', featureId: 'api-calls', delta: 1000 });
    emulator.adjustUsage('u1', 'api-calls', -2);
    const state = await dashboardJson();
    const at = new Date(T0).toISOString();
    expect(state.activity).toEqual([
      { at, kind: 'check', userId: 'u1', featureId: 'api-calls', delta: 1000, outcome: 'denied' },
      { at, kind: 'usage', userId: 'u1', featureId: 'api-calls', delta: 7, outcome: 'recorded' },
    ]);
    expect(state.usage).toEqual([{ at, userId: 'u1', featureId: 'api-calls', delta: 7, action: 'ADD' }]);
    // adjustUsage edits the ledger without a usage call.
    expect(state.users[0].features[0]).toMatchObject({ id: 'api-calls', used: 5 });
    expect(emulator.usageCalls()).toHaveLength(1);
  });

  it('moves to the next period when the clock passes periodEnd', async () => {
    clock = Date.parse('2026-03-11T00:00:00.000Z');
    const [ada] = (await dashboardJson()).users;
    expect(ada.features[1]).toMatchObject({ id: 'exports', used: 0, periodStart: '2026-03-11T00:00:00.000Z' });
  });

  it('never contains the API key', async () => {
    const response = await fetch(new URL('/dashboard.json', emulator.url));
    expect(await response.text()).not.toContain(emulator.apiKey);
  });

  it('refuses a Host header that is not a loopback name (DNS rebinding), on a loopback emulator', async () => {
    const url = new URL('/dashboard.json', emulator.url).href;
    expect(await getWithHost(url, `127.0.0.1:${emulator.port}`)).toBe(200);
    expect(await getWithHost(url, `localhost:${emulator.port}`)).toBe(200);
    expect(await getWithHost(url, `[::1]:${emulator.port}`)).toBe(200);
    expect(await getWithHost(url, `attacker.example:${emulator.port}`)).toBe(403);
    expect(await getWithHost(url, '10.0.0.5')).toBe(403);
  });
});

describe('GET /', () => {
  it('serves one self-contained HTML page with a strict Content-Security-Policy', async () => {
    const response = await fetch(emulator.dashboardUrl);
    expect(emulator.dashboardUrl).toBe(`http://127.0.0.1:${emulator.port}/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = response.headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(/default-src 'none'/);
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).toMatch(/connect-src 'self'/);
    const html = await response.text();
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).toContain('dashboard.json');
    // No external assets: nothing is loaded from another origin.
    expect(html).not.toMatch(/\b(src|href)="(https?:)?\/\//);
    expect(html).not.toContain(emulator.apiKey);
  });

  it('answers HEAD without a body, and other methods with 405', async () => {
    const head = await fetch(emulator.dashboardUrl, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    const postRoot = await fetch(emulator.dashboardUrl, { method: 'POST', body: '{}' });
    expect(postRoot.status).toBe(405);
    expect(postRoot.headers.get('allow')).toBe('GET, HEAD');
  });

  it('does not log dashboard requests as GraphQL requests', async () => {
    await fetch(emulator.dashboardUrl);
    await fetch(new URL('/dashboard.json', emulator.url));
    expect(emulator.requests()).toEqual([]);
  });
});

describe('beyond loopback', () => {
  it('asks for the API key on dashboard.json, and still serves the page', async () => {
    // 0.0.0.0 is every interface; the test only connects through loopback.
    const open = await startKanaEmulator({ host: '0.0.0.0', seed: { users: [{ id: 'u1' }] } });
    try {
      const json = new URL('/dashboard.json', open.url);
      expect((await fetch(json)).status).toBe(401);
      expect((await fetch(json, { headers: { authorization: 'prv_test_wrong' } })).status).toBe(401);
      const withKey = await fetch(json, { headers: { authorization: open.apiKey } });
      expect(withKey.status).toBe(200);
      expect(((await withKey.json()) as any).users).toEqual([
        { id: 'u1', name: null, subscriptions: [], features: [] },
      ]);
      const bearer = await fetch(json, { headers: { authorization: `Bearer ${open.apiKey}` } });
      expect(bearer.status).toBe(200);
      expect((await fetch(open.dashboardUrl)).status).toBe(200);
    } finally {
      await open.close();
    }
  });
});
