// billing.test.ts: an Express app metered with kana-meter, tested against the local Kana emulator.
import type { AddressInfo } from 'node:net';
import express from 'express';
import { kanaMeter, meter } from 'kana-meter';
import { type KanaEmulator, startKanaEmulator } from 'kana-meter/emulator';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';

let kana: KanaEmulator;

beforeAll(async () => {
  // One call: a free port on 127.0.0.1, a fresh prv_test_ key, and the seed.
  kana = await startKanaEmulator({
    seed: {
      users: [{ id: 'u1' }],
      features: [{ id: 'reports', type: 'CONSUMABLE' }],
      packages: [{ id: 'pro', features: [{ id: 'reports', limit: 100, resetPeriod: 'MONTH' }] }],
      subscriptions: [{ userId: 'u1', packageId: 'pro' }],
    },
  });
});
beforeEach(() => kana.reset()); // back to the seed: no usage, no scripted faults, empty logs
afterAll(() => kana.close());

/** The app under test, pointed at the emulator. */
async function startApp() {
  const metering = kanaMeter({
    apiKey: kana.apiKey,
    endpoint: kana.url,
    userId: (req) => req.get('x-user-id'),
  });
  const app = express();
  app.use(metering);
  app.get('/reports/:id', meter('reports'), (req, res) => {
    res.json({ id: req.params.id });
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    get: (path: string) => fetch(`http://127.0.0.1:${port}${path}`, { headers: { 'x-user-id': 'u1' } }),
    flush: () => metering.flush(),
    close: async () => {
      await new Promise((done) => server.close(done)); // the requests in flight finish first
      await metering.close(); // then their usage is delivered
    },
  };
}

it('bills one report per successful request', async () => {
  const app = await startApp();
  await app.get('/reports/1');
  await app.get('/reports/2');
  await app.flush(); // usage is sent after the response; flush() waits for it
  expect(kana.usage('u1', 'reports')).toBe(2);
  await app.close();
});

it('still bills when Kana fails twice, by retrying', async () => {
  const app = await startApp();
  kana.failNext({ status: 503 }, { times: 2 }); // the next two GraphQL requests get HTTP 503
  await app.get('/reports/1');
  await app.flush();
  expect(kana.usage('u1', 'reports')).toBe(1); // not 3: reset() dropped the first test's usage
  expect(kana.requests().map((request) => request.status)).toEqual([503, 503, 200]);
  await app.close();
});
