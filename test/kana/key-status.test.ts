// Issue 16, point 5: a wrong or revoked API key is loud (ready() rejects, stats().configError, an error line a minute, a gauge) and never quietly free.

import { createServer } from 'node:net';
import { Registry } from 'prom-client';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { KanaError, type KanaMeterOptions, kanaMeter, logCodes } from '../../src/index.js';
import { prometheusMetrics } from '../../src/integrations/prometheus.js';
import { CONFIG_ERROR_LOG_INTERVAL_MS } from '../../src/kana/key-status.js';
import { basicSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();
const WRONG_KEY = 'prv_test_WrongKeyFromAnEarlierEmulatorRun1';

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(basicSeed);
});

afterEach(() => {
  vi.useRealTimers();
});

/** An enforced search (route map) and a metered-only report, with a registry; counts handler runs. */
function setup(overrides: Partial<KanaMeterOptions> = {}) {
  const register = new Registry();
  const { options, sink } = meterOptions(env.emulator, {
    routes: { 'GET /api/search': { feature: 'api-calls', enforce: true }, 'GET /api/reports': 'reports' },
    metrics: prometheusMetrics({ register }),
    ...overrides,
  });
  const kana = env.trackTest(kanaMeter(options));
  let runs = 0;
  const app = meteredApp(expressVersions[0][1], kana, (app) => {
    app.get('/api/search', (_req, res) => {
      runs++;
      res.json({ hits: [] });
    });
    app.get('/api/reports', (_req, res) => res.json({}));
  });
  return { kana, sink, app, register, runs: () => runs };
}

const verifications = () => env.emulator.requests().filter((sent) => sent.operationName === 'kanaMeterVerifyKey');

describe('kana.ready()', () => {
  it('resolves once Kana accepts the key, with one cheap call; configError stays null', async () => {
    const { kana } = setup();
    await expect(kana.ready()).resolves.toBeUndefined();
    await kana.ready(); // known now: no second call
    expect(verifications()).toHaveLength(1);
    expect(verifications()[0]?.fieldNames).toEqual(['features']);
    expect(kana.stats().configError).toBeNull();
  });

  it('rejects with KANA_UNAUTHENTICATED for a wrong key, naming the problem and never the key', async () => {
    const { kana, sink } = setup({ apiKey: WRONG_KEY });
    const error = await kana.ready().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(KanaError);
    expect(error).toMatchObject({ code: 'KANA_UNAUTHENTICATED', retryable: false });
    expect((error as Error).message).toMatch(/Kana refused the API key/);
    expect((error as Error).message).not.toContain(WRONG_KEY.slice('prv_test_'.length));
    expect(kana.stats().configError).toBe('KANA_UNAUTHENTICATED');
    expect(sink.withCode(logCodes.configError)).toEqual([
      expect.objectContaining({ level: 50, err: expect.objectContaining({ code: 'KANA_UNAUTHENTICATED' }) }),
    ]);
    expect(sink.raw.join('\n')).not.toContain(WRONG_KEY.slice('prv_test_'.length));
  });

  it('rejects with a distinct, retryable code when Kana cannot be reached within timeoutMs', async () => {
    // A port nobody listens on.
    const port = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    const { kana } = setup({ endpoint: `http://127.0.0.1:${port}/graphql` });
    const started = Date.now();
    const error = await kana.ready({ timeoutMs: 600 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(KanaError);
    expect(error).toMatchObject({ retryable: true });
    // Connection refused; on a loaded machine the last attempt may run out of time instead.
    expect(['KANA_UNREACHABLE', 'KANA_TIMEOUT']).toContain((error as KanaError).code);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250); // it kept trying meanwhile
    expect(kana.stats().configError).toBeNull();
  });

  it('takes a bad timeoutMs as a programmer error, thrown at once like close()', () => {
    const { kana } = setup();
    expect(() => kana.ready({ timeoutMs: -1 })).toThrow(/ready\(\) timeoutMs/);
  });
});

describe('enforced requests while Kana refuses the key', () => {
  it("are refused with 503 problem+json by default (onConfigError: 'deny'), even with onKanaError: 'allow'; configError and its gauge are set", async () => {
    const { kana, app, runs, register } = setup({ apiKey: WRONG_KEY, onKanaError: 'allow' });

    for (let i = 0; i < 3; i++) {
      const response = await request(app).get('/api/search').set('x-user', 'u1').expect(503);
      expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(response.body).toMatchObject({ status: 503, title: 'Service Unavailable', featureId: 'api-calls' });
      expect(response.body.detail).toMatch(/billing is misconfigured/);
    }
    expect(runs()).toBe(0);
    expect(kana.stats()).toMatchObject({ configError: 'KANA_UNAUTHENTICATED', denied: 3, failedOpen: 0, allowed: 0 });
    expect(await register.metrics()).toMatch(/^kana_meter_config_error 1$/m);
    // kana.check() (a queue worker, a WebSocket) gets the same answer.
    expect(await kana.check('u1', 'api-calls')).toMatchObject({ allowed: false, status: 503 });
  });

  it("are served with onConfigError: 'allow' (counted in failedOpen); the usage Kana refuses is reported failed, not dropped", async () => {
    const failed: string[] = [];
    const { kana, app, runs } = setup({
      apiKey: WRONG_KEY,
      onConfigError: 'allow',
      onDeliveryFailure: (usage, error) => void failed.push(`${usage.featureId}:${error.code}`),
    });
    await request(app).get('/api/search').set('x-user', 'u1').expect(200);
    await request(app).get('/api/reports').set('x-user', 'u1').expect(200);
    await kana.flush();
    expect(runs()).toBe(1);
    expect(kana.stats()).toMatchObject({ failedOpen: 1, failed: 2, configError: 'KANA_UNAUTHENTICATED' });
    expect(failed.sort()).toEqual(['api-calls:KANA_UNAUTHENTICATED', 'reports:KANA_UNAUTHENTICATED']);
  });

  it('log one error line a minute while it lasts, not one per request nor one for the life of the process', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const { kana, app, sink } = setup({ apiKey: WRONG_KEY });
    for (let i = 0; i < 5; i++)
      await request(app)
        .get('/api/search')
        .set('x-user', `u${(i % 3) + 1}`)
        .expect(503);
    expect(sink.withCode(logCodes.configError)).toHaveLength(1);

    vi.setSystemTime(Date.now() + CONFIG_ERROR_LOG_INTERVAL_MS - 1000);
    await request(app).get('/api/reports').set('x-user', 'u1').expect(200);
    await request(app).get('/api/search').set('x-user', 'u1').expect(503);
    expect(sink.withCode(logCodes.configError)).toHaveLength(1);

    vi.setSystemTime(Date.now() + 2000);
    await request(app).get('/api/reports').set('x-user', 'u2').expect(200);
    await kana.flush();
    expect(sink.withCode(logCodes.configError)).toHaveLength(2);
    // No check failure line per request: the refused key is said once a minute.
    expect(sink.withCode(logCodes.checkFailed)).toEqual([]);
  });

  it('clear once Kana accepts the key again: ready() asks again, and requests are served', async () => {
    const { kana, app, sink, register } = setup();
    env.emulator.failNext({ graphqlError: { message: 'Unauthenticated: key revoked', code: 'UNAUTHENTICATED' } });
    await request(app).get('/api/search').set('x-user', 'u1').expect(503);
    expect(kana.stats().configError).toBe('KANA_UNAUTHENTICATED');

    await kana.ready();
    expect(kana.stats().configError).toBeNull();
    expect(await register.metrics()).toMatch(/^kana_meter_config_error 0$/m);
    expect(sink.withCode(logCodes.keyAccepted)).toHaveLength(1);
    // A user whose last check did not fail: served and checked as usual.
    await request(app).get('/api/search').set('x-user', 'u2').expect(200);
    expect(kana.stats()).toMatchObject({ configError: null, allowed: 1 });
  });
});
