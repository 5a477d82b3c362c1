// kanaMeter() + meter() through the real HTTP stack (supertest) against the emulator, on Express 4 and 5.

import { connect } from 'node:net';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { getDefaultLogger } from '../src/config/logger.js';
import { type KanaMeter, kanaMeter, logCodes, meter } from '../src/index.js';
import { basicSeed, expressVersions, meteredApp, meterOptions, sleep } from './helpers/app.js';
import { deferred } from './helpers/deferred.js';
import { useEmulator } from './helpers/emulator.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(basicSeed);
});

function track(kana: KanaMeter): KanaMeter {
  env.track(kana);
  return kana;
}

describe.each(expressVersions)('%s', (_name, createExpress) => {
  it('bills a mapped route once per 2xx, with ids as Strings and the route delta', async () => {
    const { options } = meterOptions(env.emulator, {
      routes: { 'POST /api/search': 'api-calls', 'GET /api/items/:id': { feature: 'item-reads', delta: 2 } },
    });
    const kana = track(kanaMeter(options));
    const app = meteredApp(createExpress, kana, (app) => {
      app.post('/api/search', (_req, res) => res.json({ hits: [] }));
      app.get('/api/items/:id', (_req, res) => res.json({ id: 1 }));
      app.get('/api/free', (_req, res) => res.json({}));
    });

    await request(app).post('/api/search').set('x-user', 'u1').expect(200);
    await request(app).post('/api/search?q=cats').set('x-user', 'u1').expect(200);
    await request(app).get('/api/items/7').set('x-user', 'u2').expect(200);
    await request(app).get('/api/free').set('x-user', 'u2').expect(200);
    await kana.flush();

    expect(env.emulator.usage('u1', 'api-calls')).toBe(2);
    expect(env.emulator.usage('u2', 'item-reads')).toBe(2);
    expect(env.emulator.usageCalls().every((call) => call.operation === 'createUsageEvent')).toBe(true);
    expect(kana.stats()).toMatchObject({ captured: 3, delivered: 3, failed: 0, pending: 0 });
  });

  it('does not bill 4xx, 5xx, errors thrown by handlers, or requests without a user', async () => {
    const { options } = meterOptions(env.emulator, { routes: { 'ALL /api/*rest': 'api-calls' } });
    const kana = track(kanaMeter(options));
    const app = meteredApp(createExpress, kana, (app) => {
      app.get('/api/bad', (_req, res) => res.status(400).json({}));
      app.get('/api/missing', (_req, res) => res.status(404).end());
      app.get('/api/broken', (_req, res) => res.status(503).end());
      app.get('/api/throws', () => {
        throw new Error('handler failed');
      });
      app.get('/api/redirect', (_req, res) => res.redirect('/api/ok'));
      app.get('/api/ok', (_req, res) => res.json({}));
    });

    await request(app).get('/api/bad').set('x-user', 'u1').expect(400);
    await request(app).get('/api/missing').set('x-user', 'u1').expect(404);
    await request(app).get('/api/broken').set('x-user', 'u1').expect(503);
    await request(app).get('/api/throws').set('x-user', 'u1').expect(500);
    await request(app).get('/api/redirect').set('x-user', 'u1').expect(302);
    await request(app).get('/api/ok').expect(200); // no user
    await request(app).get('/api/ok').set('x-user', '').expect(200);
    await request(app).get('/api/ok').set('x-user', 'u1').expect(200);
    await kana.flush();

    expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
    expect(kana.stats()).toMatchObject({ captured: 1, delivered: 1, skippedNoUser: 2 });
  });

  it('does not bill a request whose client aborted before the response finished', async () => {
    const { options } = meterOptions(env.emulator, { routes: { 'GET /api/slow': 'api-calls' } });
    const kana = track(kanaMeter(options));
    const handlerFinished = deferred();
    let statusAtEnd = 0;
    const handlerEntered = deferred();
    const connectionClosed = deferred();
    let respond!: () => void;
    const app = meteredApp(createExpress, kana, (app) => {
      app.get('/api/slow', (_req, res) => {
        res.once('close', connectionClosed.resolve);
        respond = () => {
          statusAtEnd = res.statusCode;
          res.json({ late: true });
          handlerFinished.resolve();
        };
        handlerEntered.resolve();
      });
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const { port } = server.address() as { port: number };
    const socket = connect(port, '127.0.0.1');
    socket.write('GET /api/slow HTTP/1.1\r\nHost: x\r\nx-user: u1\r\n\r\n');
    await handlerEntered.promise; // the handler runs: the client leaves before it answers
    socket.destroy();
    await connectionClosed.promise; // 'close' without 'finish': kanaMeter saw it too (its listener came first)
    respond();
    await handlerFinished.promise;
    await kana.flush();
    server.close();

    expect(statusAtEnd).toBe(200); // the status still says 200: only the missing 'finish' tells
    expect(env.emulator.usage('u1', 'api-calls')).toBe(0);
    expect(kana.stats().captured).toBe(0);
  });

  it('meter() tags a route, wins over the route map, and bills each feature once', async () => {
    const { options } = meterOptions(env.emulator, { routes: { 'ALL /api/*rest': 'api-calls' } });
    const kana = track(kanaMeter(options));
    const app = meteredApp(createExpress, kana, (app) => {
      app.get('/api/reports/:id', meter('reports'), (_req, res) => res.json({}));
      app.get('/api/twice', meter('reports'), meter('reports', { delta: 3 }), (_req, res) => res.json({}));
      app.get('/api/both', meter('reports'), meter('exports'), (_req, res) => res.json({}));
      app.get('/unmapped', meter('exports'), (_req, res) => res.json({}));
      app.get('/api/plain', (_req, res) => res.json({}));
    });

    await request(app).get('/api/reports/1').set('x-user', 'u1').expect(200);
    await request(app).get('/api/twice').set('x-user', 'u2').expect(200);
    await request(app).get('/api/both').set('x-user', 'u3').expect(200);
    await request(app).get('/unmapped').set('x-user', 'u1').expect(200);
    await request(app).get('/api/plain').set('x-user', 'u1').expect(200);
    await kana.flush();

    expect(env.emulator.usage('u1', 'reports')).toBe(1);
    expect(env.emulator.usage('u1', 'exports')).toBe(1);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1); // only /api/plain
    expect(env.emulator.usage('u2', 'reports')).toBe(3); // the last meter() on a route wins, billed once
    expect(env.emulator.usage('u2', 'api-calls')).toBe(0);
    expect(env.emulator.usage('u3', 'reports')).toBe(1);
    expect(env.emulator.usage('u3', 'exports')).toBe(1);
  });

  it('meter() computes its delta from the finished response', async () => {
    const { options } = meterOptions(env.emulator);
    const kana = track(kanaMeter(options));
    const app = meteredApp(createExpress, kana, (app) => {
      app.post('/api/export', meter('exports', { delta: (_req, res) => res.locals.rows }), (_req, res) => {
        res.locals.rows = 42;
        res.json({ rows: 42 });
      });
      app.post('/api/export-async', meter('exports', { delta: async () => 8 }), (_req, res) => res.json({}));
    });

    await request(app).post('/api/export').set('x-user', 'u1').expect(200);
    await request(app).post('/api/export-async').set('x-user', 'u1').expect(200);
    await kana.flush();

    expect(env.emulator.usage('u1', 'exports')).toBe(50);
  });

  it('meter() without kanaMeter() logs one error with a stable code and leaves the request alone', async () => {
    const logged: unknown[] = [];
    const defaultLogger = getDefaultLogger();
    const original = defaultLogger.error;
    defaultLogger.error = (object: object) => void logged.push(object);
    try {
      const app = createExpress();
      app.get('/r', meter('reports'), (_req, res) => res.json({ ok: true }));
      await request(app).get('/r').expect(200, { ok: true });
      await request(app).get('/r').expect(200, { ok: true });
    } finally {
      defaultLogger.error = original;
    }
    expect(logged).toEqual([expect.objectContaining({ code: logCodes.meterWithoutMiddleware, featureId: 'reports' })]);
  });
});

describe('user ids and deltas', () => {
  it('sends numeric user ids as Strings (Kana rejects any other type)', async () => {
    const { options } = meterOptions(env.emulator, { userId: () => 124, routes: { 'GET /r': 'reports' } });
    const kana = track(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    await request(app).get('/r').expect(200);
    await kana.flush();
    expect(env.emulator.usage('124', 'reports')).toBe(1);
    expect(env.emulator.usageCalls()[0]).toMatchObject({ userId: '124', featureId: 'reports', delta: 1 });
    expect(kana.stats().failed).toBe(0);
  });

  it('accepts an async userId', async () => {
    const { options } = meterOptions(env.emulator, {
      userId: async (req) => {
        await sleep(5);
        return req.get('x-user');
      },
      routes: { 'GET /r': 'reports' },
    });
    const kana = track(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    await request(app).get('/r').set('x-user', 'u2').expect(200);
    await kana.flush();
    expect(env.emulator.usage('u2', 'reports')).toBe(1);
  });

  it('logs and counts a userId that throws, without touching the response', async () => {
    const { options, sink } = meterOptions(env.emulator, {
      userId: () => {
        throw new Error('no session');
      },
      routes: { 'GET /r': 'reports' },
    });
    const kana = track(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({ ok: 1 })));
    await request(app).get('/r').expect(200, { ok: 1 });
    await kana.flush();
    expect(kana.stats().userIdErrors).toBe(1);
    expect(sink.withCode(logCodes.userIdFailed)).toEqual([expect.objectContaining({ method: 'GET', path: '/r' })]);
  });

  it.each([
    ['NaN', Number.NaN],
    ['1.5', 1.5],
    ['-3', -3],
    ['a string', '3'],
    ['above Int', 2 ** 31],
    ['undefined', undefined],
  ])('does not send a delta of %s: logs it with route and feature, and counts it', async (_label, badDelta) => {
    const { options, sink } = meterOptions(env.emulator);
    const kana = track(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) =>
      app.post('/api/export', meter('exports', { delta: () => badDelta as number }), (_req, res) => res.json({})),
    );
    await request(app).post('/api/export').set('x-user', 'u1').expect(200);
    await kana.flush();
    expect(env.emulator.usageCalls()).toEqual([]);
    expect(kana.stats()).toMatchObject({ invalidDelta: 1, captured: 0 });
    expect(sink.withCode(logCodes.invalidDelta)).toEqual([
      expect.objectContaining({
        route: 'meter("exports")',
        featureId: 'exports',
        userId: 'u1',
        delta: String(badDelta),
      }),
    ]);
  });
});

it('bills nothing and logs nothing when a delta function returns 0 (nothing was used)', async () => {
  const { options, sink } = meterOptions(env.emulator);
  const kana = track(kanaMeter(options));
  const app = meteredApp(expressVersions[0][1], kana, (app) =>
    app.post('/api/export', meter('exports', { delta: (_req, res) => res.locals.rows }), (_req, res) => {
      res.locals.rows = Number(_req.query.rows);
      res.json({});
    }),
  );
  await request(app).post('/api/export?rows=0').set('x-user', 'u1').expect(200);
  await request(app).post('/api/export?rows=3').set('x-user', 'u1').expect(200);
  await kana.flush();
  expect(env.emulator.usage('u1', 'exports')).toBe(3);
  expect(kana.stats()).toMatchObject({ invalidDelta: 0, captured: 1 });
  expect(sink.lines().filter((line) => line.level >= 40)).toEqual([]);
});

describe('the Kana call', () => {
  it('uses the mutation from Kana usage guide by default', async () => {
    const { options } = meterOptions(env.emulator, { routes: { 'GET /r': 'reports' } });
    const kana = track(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    await request(app).get('/r').set('x-user', 'u1');
    await kana.flush();
    const [sent] = env.emulator.requests();
    expect(sent).toMatchObject({
      operationName: 'createUsageEvent',
      fieldNames: ['createUsageEvent'],
      authorized: true,
    });
    expect(sent?.variables).toEqual({ input: { userId: 'u1', featureId: 'reports', delta: 1 } });
  });

  it("uses recordUsage with mutation: 'recordUsage'", async () => {
    const { options } = meterOptions(env.emulator, { routes: { 'GET /r': 'reports' }, mutation: 'recordUsage' });
    const kana = track(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    await request(app).get('/r').set('x-user', 'u1');
    await kana.flush();
    expect(env.emulator.usageCalls()).toEqual([
      expect.objectContaining({ operation: 'recordUsage', userId: 'u1', delta: 1 }),
    ]);
  });

  it.each(['createUsageEvent', 'recordUsage'] as const)('retries a %s call that returned false', async (mutation) => {
    const { options } = meterOptions(env.emulator, { routes: { 'GET /r': 'reports' }, mutation });
    const kana = track(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    env.emulator.failNext({ result: false }, { times: 2 });
    await request(app).get('/r').set('x-user', 'u1');
    await kana.flush();
    expect(env.emulator.usage('u1', 'reports')).toBe(1);
    expect(kana.stats()).toMatchObject({ delivered: 1, retries: 2, calls: 3 });
  });
});

describe('metering adds no latency', () => {
  it('answers the request while Kana is still taking 2 s to answer', async () => {
    const callStarted = deferred();
    const { options } = meterOptions(env.emulator, {
      routes: { 'GET /r': 'reports' },
      flushInterval: 0,
      fetch: (input, init) => {
        callStarted.resolve();
        return fetch(input, init);
      },
    });
    const kana = track(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({ ok: true })));
    env.emulator.failNext({ delayMs: 2000 });

    await request(app).get('/r').set('x-user', 'u1').expect(200, { ok: true });
    await callStarted.promise; // flushInterval 0: the call starts right after the response
    const during = { usage: env.emulator.usage('u1', 'reports'), stats: kana.stats() };
    await kana.flush();

    expect(during.stats.inFlight).toBe(1);
    expect(during.usage).toBe(0); // Kana had not answered when the response arrived
    expect(env.emulator.usage('u1', 'reports')).toBe(1);
  });
});
