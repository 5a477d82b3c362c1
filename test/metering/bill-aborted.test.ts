// billAborted: a streamed response the client abandons is billed for what it delivered, where the route asks; by default not at all.

import { request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Response } from 'express';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { type FeatureOptions, kanaMeter, logCodes, meter } from '../../src/index.js';
import { expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';
import { listen } from '../helpers/raw-http.js';

const env = useEmulator();
const servers: Server[] = [];

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed({
    users: [{ id: 'u1' }],
    features: [{ id: 'tokens', type: 'CONSUMABLE' }],
    packages: [{ id: 'plan', features: [{ id: 'tokens', limit: 10, resetPeriod: 'MONTH' }] }],
    subscriptions: [{ userId: 'u1', packageId: 'plan' }],
  });
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => new Promise((done) => server.close(done))));
});

/**
 * An app whose GET /stream?lines=N writes N lines (counted in res.locals.sent), then keeps the
 * response open until the client leaves; GET /finished?lines=N writes them and ends. Both bill
 * `tokens` by the lines sent, with `options`; `routes` puts the same feature in the route map instead.
 */
async function start(options: FeatureOptions, how: 'meter' | 'routes' = 'meter') {
  let userIdCalls = 0;
  const { options: kanaOptions, sink } = meterOptions(env.emulator, {
    routes: how === 'routes' ? { 'GET /stream': { feature: 'tokens', ...options } } : undefined,
    userId: (req) => {
      userIdCalls++;
      return req.get('x-user');
    },
  });
  const kana = env.trackTest(kanaMeter(kanaOptions));
  let handlerRuns = 0;
  let leftOnServer: Promise<void> = Promise.resolve();
  const sent = { delta: (_req: unknown, res: Response) => res.locals.sent as number };
  const route = how === 'meter' ? [meter('tokens', { ...sent, ...options })] : [];
  const app = meteredApp(expressVersions[0][1], kana, (app) => {
    app.get('/stream', ...route, (req, res) => {
      handlerRuns++;
      leftOnServer = new Promise((done) => res.once('close', () => done()));
      res.setHeader('content-type', 'text/plain');
      res.flushHeaders();
      res.locals.sent = 0;
      for (let i = 0; i < Number(req.query.lines); i++) {
        res.write(`token ${i}\n`);
        res.locals.sent++;
      }
    });
    app.get('/finished', meter('tokens', { ...sent, ...options }), (req, res) => {
      res.locals.sent = Number(req.query.lines);
      res.end('token\n'.repeat(res.locals.sent));
    });
    app.get('/remaining', meter('tokens', { enforce: true }), (req, res) => {
      res.json({ remaining: req.kana?.remaining });
    });
  });
  const server = await listen(app);
  servers.push(server);
  const { port } = server.address() as AddressInfo;

  /** Reads `lines` lines of /stream?lines=N, then destroys the connection; resolves once the server saw it close. */
  async function abandon(lines: number): Promise<number> {
    const received = await new Promise<number>((resolve, reject) => {
      const req = httpRequest({ port, host: '127.0.0.1', path: `/stream?lines=${lines}`, headers: { 'x-user': 'u1' } });
      req.on('error', (error: NodeJS.ErrnoException) => {
        if (error.code !== 'ECONNRESET') reject(error);
      });
      req.on('response', (res) => {
        let text = '';
        const check = () => {
          const count = text.split('\n').length - 1;
          if (count >= lines) {
            req.destroy();
            resolve(count);
          }
        };
        res.setEncoding('utf8').on('data', (chunk: string) => {
          text += chunk;
          check();
        });
        check();
      });
      req.end();
    });
    await leftOnServer;
    await kana.flush();
    return received;
  }

  return {
    kana,
    sink,
    abandon,
    port,
    handlerRuns: () => handlerRuns,
    userIdCalls: () => userIdCalls,
    get: (path: string) => fetch(`http://127.0.0.1:${port}${path}`, { headers: { 'x-user': 'u1' } }),
  };
}

it('bills an abandoned stream for the lines it sent, with billAborted on meter()', async () => {
  const app = await start({ billAborted: true });
  expect(await app.abandon(7)).toBe(7);
  expect(env.emulator.usage('u1', 'tokens')).toBe(7);
  expect(app.kana.stats()).toMatchObject({ captured: 1, delivered: 1 });
});

it('bills an abandoned stream with billAborted on a route map entry', async () => {
  const app = await start({ delta: (_req, res) => res.locals.sent, billAborted: true }, 'routes');
  await app.abandon(4);
  expect(env.emulator.usage('u1', 'tokens')).toBe(4);
});

it('bills nothing for an abandoned stream by default, without asking for its user', async () => {
  const app = await start({});
  await app.abandon(7);
  expect(app.handlerRuns()).toBe(1);
  expect(env.emulator.usage('u1', 'tokens')).toBe(0);
  expect(app.kana.stats().captured).toBe(0);
  // Nothing on the request is billed when it is abandoned: its userId hook has nothing to answer.
  expect(app.userIdCalls()).toBe(0);
});

it('bills nothing, and logs nothing, when the route says 0 was delivered', async () => {
  const app = await start({ billAborted: true });
  await app.abandon(0);
  expect(env.emulator.usage('u1', 'tokens')).toBe(0);
  expect(app.kana.stats()).toMatchObject({ captured: 0, invalidDelta: 0 });
  expect(app.sink.lines()).toEqual([]);
});

it('bills a finished response once, on finish, with billAborted', async () => {
  const app = await start({ billAborted: true });
  const response = await app.get('/finished?lines=3');
  expect(await response.text()).toBe('token\n'.repeat(3));
  await app.kana.flush();
  expect(env.emulator.usage('u1', 'tokens')).toBe(3);
  expect(app.kana.stats().captured).toBe(1);
});

it('on an enforced route: the held unit is released, then what was sent is billed and counted against the plan', async () => {
  const app = await start({ billAborted: true, enforce: true });
  await app.abandon(4);
  expect(env.emulator.usage('u1', 'tokens')).toBe(4);
  // 10 - the 4 billed - this request's own unit: the abandoned request holds nothing any more.
  expect(await (await app.get('/remaining')).json()).toEqual({ remaining: 5 });
});

it('bills nothing when the client leaves before the handler answers (the check still waiting on Kana)', async () => {
  const app = await start({ billAborted: true, enforce: true });
  env.emulator.failNext({ delayMs: 300 }, { operation: 'canUseFeature' });
  await new Promise<void>((resolve) => {
    const req = httpRequest({
      port: app.port,
      host: '127.0.0.1',
      path: '/stream?lines=3',
      headers: { 'x-user': 'u1' },
    });
    req.on('error', () => resolve());
    setTimeout(() => req.destroy(), 50);
    req.end();
  });
  await new Promise((resolve) => setTimeout(resolve, 400));
  await app.kana.flush();
  expect(app.handlerRuns()).toBe(0);
  expect(env.emulator.usage('u1', 'tokens')).toBe(0);
  expect(app.sink.withCode(logCodes.invalidDelta)).toEqual([]);
});

it('refuses a billAborted that is not a boolean, naming it', () => {
  expect(() => meter('tokens', { billAborted: 'yes' as never })).toThrow(
    new TypeError('kana-meter: option `meter() feature.billAborted` must be true or false; got "yes".'),
  );
});
