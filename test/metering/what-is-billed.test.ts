// What is billed, row by row: mounts, responses, a request seen by several kanaMeter instances, against the emulator's totals.
// Express 4 and 5 through supertest (a raw socket where a client must abort); docs/metering.md's "What is billed" list follows these rows.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Express, NextFunction, Request, Response } from 'express';
import request from 'supertest';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { EmulatorSeed } from '../../src/emulator/index.js';
import { type KanaMeter, type KanaMeterOptions, kanaMeter, meter } from '../../src/index.js';
import { expressVersions, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';
import { listen } from '../helpers/raw-http.js';

type ExpressModule = typeof import('express');

const FEATURES = ['api-calls', 'reports', 'exports'] as const;
type Feature = (typeof FEATURES)[number];

/** u1 on a plan of 100 of each feature, so `remaining` in req.kana shows how many units a request holds. */
const seed: EmulatorSeed = {
  users: [{ id: 'u1' }],
  features: FEATURES.map((id) => ({ id, type: 'CONSUMABLE' as const })),
  packages: [{ id: 'p', features: FEATURES.map((id) => ({ id, limit: 100 })) }],
  subscriptions: [{ userId: 'u1', packageId: 'p' }],
};

interface RowContext {
  express: ExpressModule;
  /** The row's kanaMeter (its `options` applied). */
  kana: KanaMeter;
  /** Another kanaMeter instance, for the rows that mount several. */
  another(options: Partial<KanaMeterOptions>): KanaMeter;
  /** A directory holding `a.txt`, for express.static and res.sendFile. */
  files: string;
}

interface Row {
  name: string;
  /** Rows that only hold on one Express major (a rejected promise is an error only in Express 5). */
  only?: 'express 5';
  options?: Partial<KanaMeterOptions>;
  app(context: RowContext): Express;
  /** Sends the row's requests (as u1) and checks what the client saw. */
  send(server: Server): Promise<void>;
  /** What Kana recorded for u1 afterwards, feature by feature (features not named: 0). */
  billed: Partial<Record<Feature, number>>;
  /** Entitlement checks Kana received, when the row is enforced. */
  checks?: number;
  /** Usage events each kanaMeter captured (`stats().captured`), in the order they were created. */
  capturedBy?: number[];
}

const json = (_req: Request, res: Response) => res.json({ ok: true });
const remaining = (req: Request, res: Response) => res.json({ remaining: req.kana?.remaining });
const get = (server: Server, path: string) => request(server).get(path).set('x-user', 'u1');
/** What method-override does: a POST with `X-HTTP-Method-Override` is routed as that method. */
function overrideMethod(req: Request, _res: Response, next: NextFunction): void {
  const method = req.get('x-http-method-override');
  if (req.method === 'POST' && method) req.method = method.toUpperCase();
  next();
}
/** A path alias: `/v2/...` is served by the `/v1` routes. */
function aliasV2(req: Request, _res: Response, next: NextFunction): void {
  if (req.url.startsWith('/v2/')) req.url = `/v1/${req.url.slice(4)}`;
  next();
}
/** DELETE /items/1 sent as a POST with the override, and /v1/reports/1 read as /v2/reports/1. */
async function deleteByOverrideAndReadByAlias(server: Server): Promise<void> {
  await request(server).post('/items/1').set('x-user', 'u1').set('x-http-method-override', 'DELETE').expect(200);
  await get(server, '/v2/reports/1').expect(200);
}

/**
 * An app with kanaMeter and a sub-app at /v1 serving GET /v1/search and GET /v1/reports/:id (with
 * meter('reports')); `again`: the sub-app mounts the same kanaMeter too.
 */
function appWithV1({ express, kana }: RowContext, again: boolean, handler = json): Express {
  const v1 = express();
  if (again) v1.use(kana);
  v1.get('/search', handler);
  v1.get('/reports/:id', meter('reports'), handler);
  const app = express();
  app.use(kana);
  app.use('/v1', v1);
  return app;
}

/** Resolves when `signal()` has been called: lets a test order steps by events, not sleeps. */
function signal() {
  let fire!: () => void;
  const fired = new Promise<void>((resolve) => {
    fire = resolve;
  });
  return { fire, fired };
}

const rows: Row[] = [
  // Mounts
  {
    name: 'a sub-app at a path, kanaMeter on the parent: meter() in the sub-app and the route map (full paths) each bill once',
    options: { routes: { 'GET /v1/search': 'api-calls' } },
    app: (context) => appWithV1(context, false),
    async send(server) {
      await get(server, '/v1/search').expect(200);
      await get(server, '/v1/reports/7').expect(200);
    },
    billed: { 'api-calls': 1, reports: 1 },
  },
  {
    name: 'Router({ mergeParams }) at a path with a parameter: billed once per route, params intact',
    options: { routes: { 'GET /users/:uid/profile': 'api-calls' } },
    app({ express, kana }) {
      const router = express.Router({ mergeParams: true });
      router.get('/profile', json);
      router.get('/reports/:id', meter('reports'), (req, res) => res.json({ params: req.params }));
      const app = express();
      app.use(kana);
      app.use('/users/:uid', router);
      return app;
    },
    async send(server) {
      await get(server, '/users/42/profile').expect(200);
      await get(server, '/users/42/reports/7').expect(200, { params: { uid: '42', id: '7' } });
    },
    billed: { 'api-calls': 1, reports: 1 },
  },
  {
    name: 'app.route(): each method its own feature',
    options: { routes: { 'POST /book': 'api-calls' } },
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      app.route('/book').get(meter('reports'), json).post(json);
      return app;
    },
    async send(server) {
      await get(server, '/book').expect(200);
      await request(server).post('/book').set('x-user', 'u1').expect(200);
    },
    billed: { 'api-calls': 1, reports: 1 },
  },
  {
    name: "next('route'): a meter() that ran bills, even when a handler after it passes the request on",
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      const skipFree = (req: Request, _res: Response, next: NextFunction) =>
        req.params.id === 'free' ? next('route') : next();
      // Skipped before meter(): only the next route's meter() bills.
      app.get('/docs/:id', skipFree, meter('reports'), json);
      app.get('/docs/:id', meter('exports'), json);
      // Skipped after meter(): meter() already ran, so both bill.
      app.get('/pages/:id', meter('reports'), skipFree, json);
      app.get('/pages/:id', meter('api-calls'), json);
      return app;
    },
    async send(server) {
      await get(server, '/docs/free').expect(200); // exports
      await get(server, '/docs/paid').expect(200); // reports
      await get(server, '/pages/free').expect(200); // reports and api-calls
    },
    billed: { reports: 2, exports: 1, 'api-calls': 1 },
  },
  // Responses
  {
    name: 'an error handler after a metered route answers 500: not billed',
    options: { routes: { 'GET /mapped': 'api-calls' } },
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      const fail = (_req: Request, _res: Response, next: NextFunction) => next(new Error('failed'));
      app.get('/mapped', fail);
      app.get('/tagged', meter('reports'), fail);
      app.use((_error: Error, _req: Request, res: Response, _next: NextFunction) => {
        res.status(500).json({ error: 'failed' });
      });
      return app;
    },
    async send(server) {
      await get(server, '/mapped').expect(500);
      await get(server, '/tagged').expect(500);
    },
    billed: {},
  },
  {
    name: 'an async handler that throws (Express 5 answers 500): not billed',
    only: 'express 5',
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      app.get('/async', meter('reports'), async () => {
        await Promise.resolve();
        throw new Error('failed');
      });
      return app;
    },
    async send(server) {
      await get(server, '/async').expect(500);
    },
    billed: {},
  },
  {
    name: 'res.redirect (302): not billed',
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      app.get('/old', meter('reports'), (_req, res) => res.redirect('/new'));
      return app;
    },
    async send(server) {
      await get(server, '/old').expect(302);
    },
    billed: {},
  },
  {
    name: 'a conditional GET answered 304: not billed (the 200 before it is)',
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      app.get('/doc', meter('reports'), (_req, res) => res.json({ body: 'same every time' }));
      return app;
    },
    async send(server) {
      const first = await get(server, '/doc').expect(200);
      await get(server, '/doc')
        .set('if-none-match', first.headers.etag as string)
        .expect(304);
    },
    billed: { reports: 1 },
  },
  {
    name: 'express.static and res.sendFile on a mapped or meter() path: a 200 is billed, a 404 is not',
    options: { routes: { 'GET /static/*file': 'exports' } },
    app({ express, kana, files }) {
      const app = express();
      app.use(kana);
      app.use('/static', express.static(files));
      app.get('/download', meter('reports'), (_req, res) => res.sendFile(join(files, 'a.txt')));
      return app;
    },
    async send(server) {
      await get(server, '/static/a.txt').expect(200, 'a file');
      await get(server, '/static/missing.txt').expect(404);
      await get(server, '/download').expect(200, 'a file');
    },
    billed: { exports: 1, reports: 1 },
  },
  {
    name: 'HEAD runs the GET route: billed; the automatic OPTIONS answer: not billed, unless an ALL key maps it',
    options: { routes: { 'GET /items/:id': 'api-calls', 'ALL /any/*rest': 'exports' } },
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      app.get('/items/:id', json);
      app.get('/reports/:id', meter('reports'), json);
      app.get('/any/thing', json);
      return app;
    },
    async send(server) {
      await request(server).head('/items/1').set('x-user', 'u1').expect(200);
      await request(server).head('/reports/1').set('x-user', 'u1').expect(200);
      await request(server).options('/items/1').set('x-user', 'u1').expect(200).expect('allow', /GET/);
      await request(server).options('/reports/1').set('x-user', 'u1').expect(200).expect('allow', /GET/);
      await request(server).options('/any/thing').set('x-user', 'u1').expect(200).expect('allow', /GET/);
    },
    billed: { 'api-calls': 1, reports: 1, exports: 1 },
  },
  {
    name: 'a method override and a path alias mounted before kanaMeter: the route map matches, checks and bills the request as routed',
    options: { routes: { 'DELETE /items/:id': 'api-calls', 'GET /v1/reports/:id': 'reports' }, enforce: true },
    app({ express, kana }) {
      const app = express();
      app.use(overrideMethod);
      app.use(aliasV2);
      app.use(kana);
      app.delete('/items/:id', json);
      app.get('/v1/reports/:id', json);
      return app;
    },
    send: deleteByOverrideAndReadByAlias,
    billed: { 'api-calls': 1, reports: 1 },
    checks: 2,
  },
  {
    name: 'a method override and a path alias mounted after kanaMeter: meter() on the route sees the request as routed',
    options: { enforce: true },
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      app.use(overrideMethod);
      app.use(aliasV2);
      app.delete('/items/:id', meter('api-calls'), json);
      app.get('/v1/reports/:id', meter('reports'), json);
      return app;
    },
    send: deleteByOverrideAndReadByAlias,
    billed: { 'api-calls': 1, reports: 1 },
    checks: 2,
  },
  {
    name: 'a body the JSON parser rejects (400): not billed; a good one is',
    options: { routes: { 'POST /search': 'api-calls' } },
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      app.use(express.json());
      app.post('/search', json);
      return app;
    },
    async send(server) {
      const post = () => request(server).post('/search').set('x-user', 'u1').set('content-type', 'application/json');
      await post().send('{"broken"').expect(400);
      await post().send('{"q":"cats"}').expect(200);
    },
    billed: { 'api-calls': 1 },
  },
  {
    name: 'a response written in chunks and ended later, and one ended in setImmediate: billed',
    options: { routes: { 'GET /stream': 'api-calls' } },
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      app.get('/stream', (_req, res) => {
        res.write('one,');
        setImmediate(() => {
          res.write('two,');
          setTimeout(() => res.end('three'), 1);
        });
      });
      app.get('/later', meter('reports'), (_req, res) => {
        setImmediate(() => res.json({ later: true }));
      });
      return app;
    },
    async send(server) {
      await get(server, '/stream').expect(200, 'one,two,three');
      await get(server, '/later').expect(200, { later: true });
    },
    billed: { 'api-calls': 1, reports: 1 },
  },
  // One request, several passes through kanaMeter
  {
    name: 'the same kanaMeter on the app and on a sub-app: billed once',
    options: { routes: { 'GET /v1/search': 'api-calls' } },
    app: (context) => appWithV1(context, true),
    async send(server) {
      await get(server, '/v1/search').expect(200);
      await get(server, '/v1/reports/1').expect(200);
    },
    billed: { 'api-calls': 1, reports: 1 },
  },
  {
    name: 'the same kanaMeter on the app and on a Router: billed once',
    options: { routes: { 'GET /r/search': 'api-calls' } },
    app({ express, kana }) {
      const router = express.Router();
      router.use(kana);
      router.get('/search', json);
      const app = express();
      app.use(kana);
      app.use('/r', router);
      return app;
    },
    async send(server) {
      await get(server, '/r/search').expect(200);
    },
    billed: { 'api-calls': 1 },
  },
  {
    name: 'app.use(kana) twice: billed once',
    options: { routes: { 'GET /search': 'api-calls' } },
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      app.use(kana);
      app.get('/search', json);
      app.get('/reports/:id', meter('reports'), json);
      return app;
    },
    async send(server) {
      await get(server, '/search').expect(200);
      await get(server, '/reports/1').expect(200);
    },
    billed: { 'api-calls': 1, reports: 1 },
  },
  {
    name: 'two instances, each mapping its own feature on one route: each bills its own, once',
    options: { routes: { 'GET /both': 'api-calls', 'GET /first-only': 'api-calls' } },
    app({ express, kana, another }) {
      const app = express();
      app.use(kana);
      app.use(another({ routes: { 'GET /both': 'exports' } }));
      app.get('/both', json);
      app.get('/first-only', json);
      return app;
    },
    async send(server) {
      await get(server, '/both').expect(200);
      await get(server, '/first-only').expect(200); // the second instance does not map it: no crash
    },
    billed: { 'api-calls': 2, exports: 1 },
    capturedBy: [2, 1],
  },
  {
    name: 'two instances mapping the same feature: each bills it (they are independent)',
    options: { routes: { 'GET /search': 'api-calls' } },
    app({ express, kana, another }) {
      const app = express();
      app.use(kana);
      app.use(another({ routes: { 'GET /search': 'api-calls' } }));
      app.get('/search', json);
      return app;
    },
    async send(server) {
      await get(server, '/search').expect(200);
    },
    billed: { 'api-calls': 2 },
  },
  {
    name: 'meter() with two instances: the last one the request passed bills it, once; the other bills its route map',
    options: { routes: { 'GET /v1/reports/:id': 'api-calls' } },
    app({ express, kana, another }) {
      const v1 = express();
      v1.use(another({}));
      v1.get('/reports/:id', meter('reports'), json);
      const app = express();
      app.use(kana);
      app.use('/v1', v1);
      return app;
    },
    async send(server) {
      await get(server, '/v1/reports/1').expect(200);
    },
    billed: { 'api-calls': 1, reports: 1 },
    capturedBy: [1, 1], // the app's kanaMeter: api-calls; the sub-app's: reports
  },
  // Enforced: one check and one hold per request and feature
  {
    name: 'enforced, the same kanaMeter on the app and a sub-app: one check, one hold, billed once',
    options: { enforce: true, routes: { 'GET /v1/search': 'api-calls' } },
    app: (context) => appWithV1(context, true, remaining),
    async send(server) {
      await get(server, '/v1/search').expect(200, { remaining: 99 });
      await get(server, '/v1/reports/1').expect(200, { remaining: 99 });
    },
    billed: { 'api-calls': 1, reports: 1 },
    checks: 2,
  },
  {
    name: 'enforced, app.use(kana) twice: one check, one hold, billed once',
    options: { enforce: true, routes: { 'GET /search': 'api-calls' } },
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      app.use(kana);
      app.get('/search', remaining);
      return app;
    },
    async send(server) {
      await get(server, '/search').expect(200, { remaining: 99 });
    },
    billed: { 'api-calls': 1 },
    checks: 1,
  },
  {
    name: 'enforced, the route map and meter() name the same feature, and meter() runs twice: one check, one hold',
    options: { enforce: true, routes: { 'GET /search': 'api-calls' } },
    app({ express, kana }) {
      const app = express();
      app.use(kana);
      app.get('/search', meter('api-calls'), meter('api-calls'), remaining);
      return app;
    },
    async send(server) {
      await get(server, '/search').expect(200, { remaining: 99 });
      await get(server, '/search').expect(200, { remaining: 98 });
    },
    billed: { 'api-calls': 2 },
    checks: 1,
  },
  {
    name: 'enforced, two instances enforcing the same feature: each checks, holds and bills its own',
    options: { enforce: true, routes: { 'GET /search': 'api-calls' } },
    app({ express, kana, another }) {
      const app = express();
      app.use(kana);
      app.use(another({ enforce: true, routes: { 'GET /search': 'api-calls' } }));
      app.get('/search', json);
      return app;
    },
    async send(server) {
      await get(server, '/search').expect(200);
    },
    billed: { 'api-calls': 2 },
    checks: 2,
  },
];

const env = useEmulator();
let files: string;

beforeAll(async () => {
  files = await mkdtemp(join(tmpdir(), 'kana-meter-static-'));
  await writeFile(join(files, 'a.txt'), 'a file');
});
afterAll(async () => {
  await rm(files, { recursive: true, force: true });
});
beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(seed);
});

function usageOf(feature: Feature): number {
  return env.emulator.usage('u1', feature);
}

function checks(): number {
  return env.emulator.requests().filter((sent) => sent.fieldNames.includes('canUseFeature')).length;
}

describe.each(expressVersions)('%s', (version, createExpress) => {
  const express = createExpress as unknown as ExpressModule;
  const applicable = rows.filter((row) => row.only === undefined || row.only === version);

  it.each(applicable.map((row) => [row.name, row] as const))('%s', async (_name, row) => {
    const meters: KanaMeter[] = [];
    const create = (options: Partial<KanaMeterOptions>) => {
      const kana = env.track(kanaMeter(meterOptions(env.emulator, options).options));
      meters.push(kana);
      return kana;
    };
    const kana = create(row.options ?? {});
    const server = await listen(row.app({ express, kana, another: create, files }));
    try {
      await row.send(server);
      for (const each of meters) await each.flush();
    } finally {
      server.close();
    }

    const recorded = Object.fromEntries(FEATURES.map((feature) => [feature, usageOf(feature)]));
    expect(recorded).toEqual({ 'api-calls': 0, reports: 0, exports: 0, ...row.billed });
    if (row.checks !== undefined) expect(checks()).toBe(row.checks);
    if (row.capturedBy !== undefined) expect(meters.map((each) => each.stats().captured)).toEqual(row.capturedBy);
    for (const each of meters) expect(each.stats()).toMatchObject({ failed: 0, hookErrors: 0 });
  });

  it('a client that aborts mid-stream: not billed', async () => {
    const kana = env.track(kanaMeter(meterOptions(env.emulator, { routes: { 'GET /stream': 'api-calls' } }).options));
    const clientGone = signal();
    const handlerEnded = signal();
    const app = express();
    app.use(kana);
    app.get('/stream', (_req, res) => {
      res.write('first chunk,');
      res.once('close', clientGone.fire);
      void clientGone.fired.then(() => {
        res.end('too late');
        handlerEnded.fire();
      });
    });
    const server = await listen(app);
    try {
      const socket = connect((server.address() as { port: number }).port, '127.0.0.1');
      socket.once('data', () => socket.destroy()); // the first chunk arrived: leave mid-stream
      socket.write('GET /stream HTTP/1.1\r\nHost: x\r\nx-user: u1\r\n\r\n');
      await handlerEnded.fired;
      await kana.flush();
    } finally {
      server.close();
    }

    expect(usageOf('api-calls')).toBe(0);
    expect(kana.stats().captured).toBe(0);
  });
});
