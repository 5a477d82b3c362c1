// No free work for a check Kana refuses: a user (or a feature) Kana does not know is not an outage, and nothing
// served for it could be billed, so `onConfigError` decides it (503 by default), never `onKanaError`'s fail-open.

import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { type KanaMeterOptions, kanaMeter, logCodes } from '../../src/index.js';
import { basicSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';
import { listen, rawRequest } from '../helpers/raw-http.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(basicSeed);
});

/** An enforced mapped route billing `feature`, with a handler that counts its runs and shows req.kana. */
function setup(overrides: Partial<KanaMeterOptions> = {}, feature = 'api-calls') {
  const { options, sink } = meterOptions(env.emulator, {
    routes: { 'GET /api/search': { feature, enforce: true } },
    ...overrides,
  });
  const kana = env.trackTest(kanaMeter(options));
  let runs = 0;
  const app = meteredApp(expressVersions[0][1], kana, (app) =>
    app.get('/api/search', (req, res) => {
      runs++;
      res.json({ source: req.kana?.source, error: req.kana?.error?.code });
    }),
  );
  return { kana, sink, app, runs: () => runs };
}

describe("onConfigError: 'deny' (the default)", () => {
  it('refuses every request of a user Kana does not know with 503 problem+json; the handler never runs, nothing is owed', async () => {
    const { kana, sink, app, runs } = setup();
    for (let i = 0; i < 5; i++) {
      const response = await request(app).get('/api/search').set('x-user', 'ghost').expect(503);
      expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(response.body).toMatchObject({ status: 503, title: 'Service Unavailable', featureId: 'api-calls' });
      expect(response.body.detail).toMatch(/does not know its user/);
    }
    expect(runs()).toBe(0);
    expect(kana.stats()).toMatchObject({ denied: 5, failedOpen: 0, allowed: 0 });
    // Logged per check, with Kana's refusal, as before.
    expect(sink.withCode(logCodes.checkFailed)[0]).toMatchObject({
      userId: 'ghost',
      err: expect.objectContaining({ code: 'KANA_REJECTED' }),
    });
    // A known user is served and billed as usual meanwhile.
    await request(app).get('/api/search').set('x-user', 'u1').expect(200, { source: 'kana' });
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
    expect(runs()).toBe(1);
  });

  it('refuses a user header sent twice (Node joins it into "u1, u1", an id Kana does not know) instead of serving it free', async () => {
    const { kana, app, runs } = setup();
    const server = await listen(app);
    try {
      // Two header lines, exactly as sent (an HTTP client would merge them first).
      expect(await rawRequest(server, 'GET', '/api/search', { 'x-user': 'u1\r\nx-user: u1' })).toBe(503);
    } finally {
      await new Promise((done) => server.close(done));
    }
    expect(runs()).toBe(0);
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(0);
  });

  it('refuses a route whose feature Kana does not know, for every user', async () => {
    const { kana, app, runs } = setup({}, 'no-such-feature');
    await request(app).get('/api/search').set('x-user', 'u1').expect(503);
    expect(runs()).toBe(0);
    expect(kana.stats().denied).toBe(1);
  });

  it('kana.check() and kana.hold() answer the same: refused with 503, nothing held', async () => {
    const { kana } = setup();
    expect(await kana.check('ghost', 'api-calls')).toMatchObject({
      allowed: false,
      status: 503,
      source: 'fallback',
      error: expect.objectContaining({ code: 'KANA_REJECTED' }),
    });
    const hold = await kana.hold('ghost', 'api-calls');
    expect(hold).toMatchObject({ allowed: false });
  });

  it('an outage still goes to onKanaError: a known user is served (fail open) while Kana cannot be reached', async () => {
    const { kana, app, runs } = setup();
    env.emulator.failNext({ status: 503 }, { times: 20 });
    await request(app)
      .get('/api/search')
      .set('x-user', 'u2')
      .expect(200, { source: 'fallback', error: 'KANA_SERVER_ERROR' });
    expect(runs()).toBe(1);
    expect(kana.stats().failedOpen).toBe(1);
  });
});

describe("onConfigError: 'allow'", () => {
  it('serves the user Kana does not know, knowingly unbillable: counted in failedOpen, req.kana says why', async () => {
    const { kana, app, runs } = setup({ onConfigError: 'allow' });
    await request(app)
      .get('/api/search')
      .set('x-user', 'ghost')
      .expect(200, { source: 'fallback', error: 'KANA_REJECTED' });
    expect(runs()).toBe(1);
    expect(kana.stats()).toMatchObject({ failedOpen: 1, denied: 0 });
    expect((await kana.check('ghost', 'api-calls')).allowed).toBe(true);
  });
});

describe("enforce: 'shadow'", () => {
  it('serves it and counts what enforcement would have refused', async () => {
    const { kana, app, runs } = setup({ enforce: 'shadow', routes: { 'GET /api/search': 'api-calls' } });
    await request(app).get('/api/search').set('x-user', 'ghost').expect(200);
    expect(runs()).toBe(1);
    expect(kana.stats()).toMatchObject({ shadowDenied: 1, denied: 0 });
  });
});
