// kana.hold(): units kept aside for work billed once done, counted against the allowance until committed or released.

import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { type KanaMeterOptions, kanaMeter, type UndeliveredUsage } from '../src/index.js';
import { expressVersions, meteredApp, meterOptions } from './helpers/app.js';
import { useEmulator } from './helpers/emulator.js';

const HOUR = 3_600_000;
const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  const startedAt = new Date(Date.now() - 23 * HOUR).toISOString();
  env.emulator.seed({
    users: ['u1', 'u2'].map((id) => ({ id })),
    features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
    packages: [{ id: 'small', features: [{ id: 'api-calls', limit: 5, resetPeriod: 'DAY' }] }],
    subscriptions: ['u1', 'u2'].map((userId) => ({ userId, packageId: 'small', startedAt })),
  });
});

function meterFor(overrides: Partial<KanaMeterOptions> = {}) {
  const { options } = meterOptions(env.emulator, {
    routes: { 'GET /api/calls': 'api-calls' },
    enforce: true,
    ...overrides,
  });
  const kana = env.trackTest(kanaMeter(options));
  const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/api/calls', (_req, res) => res.json({})));
  return { kana, app };
}

describe('kana.hold()', () => {
  it('holds units against the allowance until commit(): requests and other holds see them; commit bills what was used', async () => {
    const { kana, app } = meterFor();
    const hold = await kana.hold('u1', 'api-calls', 3);
    expect(hold).toMatchObject({ allowed: true, decision: { allowed: true, delta: 3, used: 0, remaining: 2 } });
    expect((await kana.hold('u1', 'api-calls', 3)).allowed).toBe(false);
    await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
    await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
    await request(app).get('/api/calls').set('x-user', 'u1').expect(429);
    hold.commit(2); // fewer than held: the third unit comes back
    await request(app).get('/api/calls').set('x-user', 'u1').expect(200);
    await request(app).get('/api/calls').set('x-user', 'u1').expect(429);
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(5);
  });

  it('release() bills nothing and gives the units back; commit and release after the first do nothing', async () => {
    const { kana } = meterFor();
    const hold = await kana.hold('u1', 'api-calls', 5);
    expect((await kana.check('u1', 'api-calls')).allowed).toBe(false);
    hold.release();
    hold.release();
    hold.commit(5);
    expect((await kana.check('u1', 'api-calls', 5)).allowed).toBe(true);
    const second = await kana.hold('u1', 'api-calls', 2);
    second.commit();
    second.release(); // the `finally` of a job that committed
    second.commit();
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(2);
  });

  it('commit() of more than held bills the excess and counts it at once', async () => {
    const { kana } = meterFor();
    const hold = await kana.hold('u1', 'api-calls', 1);
    hold.commit(4);
    expect(await kana.check('u1', 'api-calls', 1)).toMatchObject({ allowed: true, used: 4, remaining: 0 });
    expect((await kana.check('u1', 'api-calls', 2)).allowed).toBe(false);
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(4);
  });

  it('a refused hold holds nothing: commit() throws a TypeError naming record(), release() does nothing', async () => {
    const { kana } = meterFor();
    const refused = await kana.hold('u1', 'api-calls', 6);
    expect(refused).toMatchObject({ allowed: false, decision: { reason: 'limit-reached', status: 429 } });
    expect(() => refused.commit(6)).toThrow(/commit\(\) on a refused hold.*kana\.record\(\)/);
    refused.release();
    expect((await kana.check('u1', 'api-calls', 5)).allowed).toBe(true);
  });

  it('throws a TypeError for bad arguments: hold() and commit()', async () => {
    const { kana } = meterFor();
    await expect(kana.hold('u1', 'api-calls', 0)).rejects.toThrow(/hold\(\): argument `delta` must be an integer/);
    await expect(kana.hold('', 'api-calls')).rejects.toThrow(/hold\(\): argument `userId`/);
    const hold = await kana.hold('u1', 'api-calls', 2);
    expect(() => hold.commit(-1)).toThrow(/commit\(\): argument `units` must be an integer in 0\.\.2147483647; got -1/);
    expect(() => hold.commit(1.5)).toThrow(TypeError);
    hold.commit(0); // bills nothing, like release()
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(0);
  });

  it('after close(), a commit is reported undelivered like record() after close(), never dropped silently', async () => {
    const failures: [UndeliveredUsage, string][] = [];
    const { kana } = meterFor({ onDeliveryFailure: (usage, error) => void failures.push([usage, error.code]) });
    const hold = await kana.hold('u2', 'api-calls', 2);
    await kana.close();
    hold.commit(2);
    expect(failures).toEqual([
      [expect.objectContaining({ userId: 'u2', featureId: 'api-calls', delta: 2 }), 'KANA_CLOSED'],
    ]);
    expect(env.emulator.usage('u2', 'api-calls')).toBe(0);
  });
});
