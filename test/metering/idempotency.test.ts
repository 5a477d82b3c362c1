// Idempotency-Key: a keyed request runs once; a retry of it gets the stored response (handler not run, not billed), another request under its key 422, one while it runs 409.

import { randomBytes, randomUUID } from 'node:crypto';
import type { Express, Request, RequestHandler, Response } from 'express';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { type KanaMeterOptions, kanaMeter, meter } from '../../src/index.js';
import { MemoryIdempotencyWindow, type StoredResponse } from '../../src/metering/idempotency-window.js';
import { basicSeed, expressVersions, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed({
    ...basicSeed,
    features: [...basicSeed.features, { id: 'limited', type: 'CONSUMABLE' }],
    packages: [...basicSeed.packages, { id: 'small', features: [{ id: 'limited', limit: 3 }] }],
    subscriptions: [...basicSeed.subscriptions, { userId: 'u1', packageId: 'small' }],
  });
});

const [, express5] = expressVersions[0];

/**
 * An app with kanaMeter (idempotencyKey on) and express.json() after it. Handlers answer with a
 * fresh id, so that a replayed body can be told from a second run. `runs` counts handler runs.
 */
function idempotentApp(overrides: Partial<KanaMeterOptions> = {}, createExpress = express5) {
  const { options } = meterOptions(env.emulator, {
    idempotencyKey: true,
    routes: {
      'POST /api/search': 'api-calls',
      'POST /api/limited': { feature: 'limited', enforce: true },
      'POST /api/fails': 'api-calls',
      'POST /api/big': 'api-calls',
    },
    ...overrides,
  });
  const kana = env.trackTest(kanaMeter(options));
  const runs: { path: string; body: unknown }[] = [];
  let gate: Promise<void> | undefined;
  let release: () => void = () => {};
  const app = createExpress();
  app.use(kana);
  app.use(expressJson(createExpress));
  const answer = async (req: Request, res: Response) => {
    runs.push({ path: req.path, body: req.body });
    if (gate) await gate;
    res.setHeader('X-Order', 'kept');
    res.cookie('session', 'not-replayed');
    res.status(201).json({ id: randomUUID(), got: req.body });
  };
  app.post('/api/search', answer);
  app.post('/api/limited', answer);
  app.post('/api/metered-only', meter('reports'), answer);
  app.post('/api/fails', (req, res) => {
    runs.push({ path: req.path, body: req.body });
    res.status(503).json({});
  });
  app.post('/api/big', (req, res) => {
    runs.push({ path: req.path, body: req.body });
    res.type('text/plain').send('x'.repeat(1_048_577));
  });
  const post = (path: string, user: string | undefined, key: string | undefined, body: object = { q: 1 }) => {
    let sent = request(app).post(path);
    if (user !== undefined) sent = sent.set('x-user', user);
    if (key !== undefined) sent = sent.set('Idempotency-Key', key);
    return sent.send(body);
  };
  /** Handlers wait until the returned function is called. */
  const hold = () => {
    gate = new Promise((resolve) => {
      release = resolve;
    });
    return () => {
      gate = undefined;
      release();
    };
  };
  return { kana, app, post, runs, hold };
}

function expressJson(createExpress: () => Express): RequestHandler {
  return (createExpress as unknown as { json: () => RequestHandler }).json();
}

describe('idempotencyKey: no free work', () => {
  it('10 different requests under one key with a budget of 3: at most 3 handler runs, each billed', async () => {
    const { kana, post, runs } = idempotentApp();
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) statuses.push((await post('/api/limited', 'u1', 'one-key', { n: i })).status);
    await kana.flush();
    expect(runs.length).toBeLessThanOrEqual(3);
    expect(env.emulator.usage('u1', 'limited')).toBe(runs.length);
    expect(statuses[0]).toBe(201);
    expect(statuses.slice(1)).toEqual(Array(9).fill(422));
  });

  it('5 identical retries: 1 handler run, 1 unit, identical bodies, Idempotent-Replayed: true on the retries', async () => {
    const { kana, post, runs } = idempotentApp();
    const responses = [];
    for (let i = 0; i < 5; i++) responses.push(await post('/api/search', 'u1', 'order-1'));
    await kana.flush();
    expect(runs).toHaveLength(1);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
    expect(new Set(responses.map((response) => response.text)).size).toBe(1);
    expect(responses.map((response) => response.status)).toEqual([201, 201, 201, 201, 201]);
    expect(responses[0]?.headers['idempotent-replayed']).toBeUndefined();
    for (const retry of responses.slice(1)) {
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.headers['x-order']).toBe('kept');
      expect(retry.headers['content-type']).toMatch(/^application\/json/);
      expect(retry.headers['set-cookie']).toBeUndefined();
    }
    expect(responses[0]?.headers['set-cookie']).toBeDefined();
    expect(kana.stats()).toMatchObject({ idempotentReplays: 4, captured: 1 });
  });

  it('two at once: one handler run; the second gets 409 problem+json, and a retry after it replays', async () => {
    const { kana, post, runs, hold } = idempotentApp();
    const open = hold();
    const first = post('/api/search', 'u1', 'k').then();
    await expect.poll(() => runs.length).toBe(1);
    const second = await post('/api/search', 'u1', 'k');
    expect(second.status).toBe(409);
    expect(second.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(second.body).toMatchObject({ status: 409, title: 'Conflict' });
    open();
    expect((await first).status).toBe(201);
    const third = await post('/api/search', 'u1', 'k');
    expect(third.headers['idempotent-replayed']).toBe('true');
    await kana.flush();
    expect(runs).toHaveLength(1);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
  });

  it('the same key with a different body, path or query: 422 problem+json, the handler does not run', async () => {
    const { kana, app, post, runs } = idempotentApp();
    await post('/api/search', 'u1', 'k', { q: 1 }).expect(201);
    const other = await post('/api/search', 'u1', 'k', { q: 2 });
    expect(other.status).toBe(422);
    expect(other.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(other.body).toMatchObject({ status: 422 });
    await post('/api/metered-only', 'u1', 'k', { q: 1 }).expect(422);
    await request(app)
      .post('/api/search?page=2')
      .set('x-user', 'u1')
      .set('Idempotency-Key', 'k')
      .send({ q: 1 })
      .expect(422);
    await kana.flush();
    expect(runs).toHaveLength(1);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
  });

  it('keys are per user: the same key from another user runs; without a user the key is not honoured', async () => {
    const { kana, post, runs } = idempotentApp();
    await post('/api/search', 'u1', 'k').expect(201);
    const other = await post('/api/search', 'u2', 'k').expect(201);
    expect(other.headers['idempotent-replayed']).toBeUndefined();
    await post('/api/search', undefined, 'k').expect(201);
    await post('/api/search', undefined, 'k').expect(201);
    await kana.flush();
    expect(runs).toHaveLength(4);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
    expect(env.emulator.usage('u2', 'api-calls')).toBe(1);
  });

  it('a metered-only route: a retry is replayed without running the handler', async () => {
    const { kana, post, runs } = idempotentApp();
    const first = await post('/api/metered-only', 'u1', 'r').expect(201);
    const retry = await post('/api/metered-only', 'u1', 'r').expect(201);
    expect(retry.text).toBe(first.text);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    await kana.flush();
    expect(runs).toHaveLength(1);
    expect(env.emulator.usage('u1', 'reports')).toBe(1);
  });

  it('a non-2xx response is not stored: the key is released, and the retry runs and is billed', async () => {
    const { kana, post, runs } = idempotentApp();
    await post('/api/fails', 'u1', 'k').expect(503);
    await post('/api/fails', 'u1', 'k').expect(503);
    await kana.flush();
    expect(runs).toHaveLength(2);
    // A refused request (budget used up) is not stored either: its retry is checked again.
    env.emulator.seed({ usage: [{ userId: 'u1', featureId: 'limited', used: 3 }] });
    await post('/api/limited', 'u1', 'late').expect(429);
    await post('/api/limited', 'u1', 'late').expect(429);
    expect(runs).toHaveLength(2);
  });

  it('a response over 1 MiB is not stored: the retry runs again, and is billed again', async () => {
    const { kana, post, runs } = idempotentApp();
    await post('/api/big', 'u1', 'big').expect(200);
    const retry = await post('/api/big', 'u1', 'big').expect(200);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    await kana.flush();
    expect(runs).toHaveLength(2);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(2);
  });

  it('headers given to writeHead() are replayed; a server-sent event stream is not stored (the retry runs, billed)', async () => {
    const { options } = meterOptions(env.emulator, {
      idempotencyKey: true,
      routes: { 'POST /head': 'api-calls', 'POST /events': 'reports' },
    });
    const kana = env.trackTest(kanaMeter(options));
    const app = express5();
    app.disable('x-powered-by'); // no header set before writeHead()
    app.use(kana);
    let runs = 0;
    app.post('/head', (_req, res) => {
      runs++;
      res.writeHead(202, { 'Content-Type': 'text/plain', 'X-Run': String(runs), Connection: 'keep-alive' });
      res.end(`run ${runs}`);
    });
    app.post('/events', (_req, res) => {
      runs++;
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      res.write('data: one\n\n');
      res.end('data: two\n\n');
    });
    const send = (path: string) => request(app).post(path).set('x-user', 'u1').set('Idempotency-Key', path);
    await send('/head').expect(202, 'run 1');
    const replay = await send('/head').expect(202, 'run 1');
    expect(replay.headers).toMatchObject({ 'x-run': '1', 'idempotent-replayed': 'true' });
    expect(replay.headers['content-type']).toMatch(/^text\/plain/);
    await send('/events').expect(200);
    const again = await send('/events').expect(200);
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(runs).toBe(3);
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
    expect(env.emulator.usage('u1', 'reports')).toBe(2);
  });

  it('a client that leaves before the response releases the key: its retry runs', async () => {
    const { kana, app, post, runs, hold } = idempotentApp();
    const open = hold();
    const { listen } = await import('../helpers/raw-http.js');
    const server = await listen(app);
    try {
      const { port } = server.address() as { port: number };
      const { request: httpRequest } = await import('node:http');
      const body = JSON.stringify({ q: 1 });
      const left = httpRequest({
        port,
        host: '127.0.0.1',
        method: 'POST',
        path: '/api/search',
        headers: { 'x-user': 'u1', 'idempotency-key': 'gone', 'content-type': 'application/json' },
      });
      left.on('error', () => {});
      left.end(body);
      await expect.poll(() => runs.length).toBe(1);
      left.destroy();
      await new Promise((resolve) => setTimeout(resolve, 50));
      open();
      const retry = await post('/api/search', 'u1', 'gone').expect(201);
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expect(runs).toHaveLength(2);
      await kana.flush();
    } finally {
      server.close();
    }
  });

  it('on an enforced route at its limit, a retry of the request that took the last unit is replayed, not refused', async () => {
    env.emulator.seed({ usage: [{ userId: 'u1', featureId: 'limited', used: 2 }] });
    const { kana, post, runs } = idempotentApp();
    const first = await post('/api/limited', 'u1', 'k').expect(201);
    const retry = await post('/api/limited', 'u1', 'k').expect(201);
    expect(retry.text).toBe(first.text);
    await post('/api/limited', 'u1', 'other').expect(429);
    await kana.flush();
    expect(runs).toHaveLength(1);
    expect(env.emulator.usage('u1', 'limited')).toBe(3);
    expect(kana.stats()).toMatchObject({ idempotentReplays: 1, allowed: 1, denied: 1 });
  });

  it('is off by default: every request runs and is billed', async () => {
    const { kana, post, runs } = idempotentApp({ idempotencyKey: undefined });
    await post('/api/search', 'u1', 'k').expect(201);
    const second = await post('/api/search', 'u1', 'k', { q: 2 }).expect(201);
    expect(second.headers['idempotent-replayed']).toBeUndefined();
    await kana.flush();
    expect(runs).toHaveLength(2);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(2);
  });

  it('reads the header given, and keeps at most maxKeys keys (oldest out, counted)', async () => {
    const { kana, app, runs } = idempotentApp({ idempotencyKey: { header: 'X-Request-Id', maxKeys: 2 } });
    const send = (key: string, header = 'X-Request-Id') =>
      request(app).post('/api/search').set('x-user', 'u1').set(header, key).send({ q: 1 }).expect(201);
    for (const key of ['a', 'b', 'a', 'c', 'a']) await send(key);
    await send('c', 'Idempotency-Key'); // not the configured header: runs
    await kana.flush();
    // a, b, c ran; c pushed a out, so the last a ran again (and pushed b out).
    expect(runs).toHaveLength(5);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(5);
    expect(kana.stats()).toMatchObject({ idempotentReplays: 1, idempotencyEvictions: 2 });
  });

  it('keeps at most maxBytes of stored responses: the oldest goes', async () => {
    const { kana, post, runs } = idempotentApp({ idempotencyKey: { maxBytes: 300 } });
    await post('/api/search', 'u1', 'a').expect(201);
    await post('/api/search', 'u1', 'b').expect(201); // a's and b's responses do not fit together
    await post('/api/search', 'u1', 'b').expect(201);
    await post('/api/search', 'u1', 'a').expect(201);
    expect(runs).toHaveLength(3);
    expect(kana.stats()).toMatchObject({ idempotentReplays: 1 });
    expect(kana.stats().idempotencyEvictions).toBeGreaterThanOrEqual(1);
  });
});

describe('idempotencyKey: the body fingerprint, with body parsers before and after kanaMeter()', () => {
  type Parser = 'json' | 'raw' | 'urlencoded';
  const bodies: Record<Parser, { type: string; same: string; other: string }> = {
    json: { type: 'application/json', same: '{"a":1,"b":[1,2]}', other: '{"a":2,"b":[1,2]}' },
    raw: { type: 'application/octet-stream', same: 'bytes-one', other: 'bytes-two' },
    urlencoded: { type: 'application/x-www-form-urlencoded', same: 'a=1&b=2', other: 'a=1&b=3' },
  };
  const cases = expressVersions.flatMap(([version, createExpress]) =>
    (['json', 'raw', 'urlencoded'] as const).flatMap((parser) =>
      (['before', 'after'] as const).map((where) => ({ version, createExpress, parser, where })),
    ),
  );

  it.each(cases)('$version, express.$parser() $where kanaMeter()', async ({ createExpress, parser, where }) => {
    const { options } = meterOptions(env.emulator, { idempotencyKey: true, routes: { 'POST /echo': 'api-calls' } });
    const kana = env.trackTest(kanaMeter(options));
    const app = createExpress();
    const parse = (createExpress as unknown as Record<Parser, (options?: object) => RequestHandler>)[parser](
      parser === 'urlencoded' ? { extended: false } : {},
    );
    if (where === 'before') app.use(parse);
    app.use(kana);
    if (where === 'after') app.use(parse);
    let runs = 0;
    app.post('/echo', (req, res) => {
      runs++;
      res.json({ run: runs, body: Buffer.isBuffer(req.body) ? req.body.toString() : req.body });
    });
    const { type, same, other } = bodies[parser];
    const send = (body: string) =>
      request(app).post('/echo').set('x-user', 'u1').set('Idempotency-Key', 'k').set('Content-Type', type).send(body);

    const first = await send(same).expect(200);
    const expected = parser === 'raw' ? same : parser === 'json' ? JSON.parse(same) : { a: '1', b: '2' };
    expect(first.body).toEqual({ run: 1, body: expected });
    const retry = await send(same).expect(200);
    expect(retry.text).toBe(first.text);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    await send(other).expect(422);
    expect(runs).toBe(1);
    await kana.flush();
    expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
  });

  it('a chunked body reaches the handler intact, chunk for chunk, while the gate waits on Kana', async () => {
    const { options } = meterOptions(env.emulator, {
      idempotencyKey: true,
      enforce: true,
      routes: { 'POST /upload': 'api-calls', 'POST /upload-raw': 'api-calls' },
    });
    const kana = env.trackTest(kanaMeter(options));
    const app = express5();
    app.use(kana);
    app.post('/upload', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () =>
        res.json({ sizes: chunks.map((chunk) => chunk.length), hex: Buffer.concat(chunks).toString('hex') }),
      );
    });
    app.post('/upload-raw', (express5 as unknown as { raw: () => RequestHandler }).raw(), (req, res) => {
      res.json({ sizes: [], hex: (req.body as Buffer).toString('hex') });
    });
    const { listen } = await import('../helpers/raw-http.js');
    const server = await listen(app);
    try {
      const { port } = server.address() as { port: number };
      const { request: httpRequest } = await import('node:http');
      const send = (user: string, path: string, key: string | undefined, pieces: Buffer[]) =>
        new Promise<{ status: number; body: { sizes: number[]; hex: string } }>((resolve, reject) => {
          const headers: Record<string, string> = { 'x-user': user, 'content-type': 'application/octet-stream' };
          if (key) headers['idempotency-key'] = key;
          const sent = httpRequest({ port, host: '127.0.0.1', method: 'POST', path, headers }, (response) => {
            let text = '';
            response.setEncoding('utf8');
            response.on('data', (chunk: string) => {
              text += chunk;
            });
            response.on('end', () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(text) }));
          });
          sent.on('error', reject);
          void (async () => {
            for (const piece of pieces) {
              sent.write(piece);
              await new Promise((wait) => setTimeout(wait, 20));
            }
            sent.end();
          })();
        });
      // Each request from a new user: the gate misses the cache and waits on a slow Kana.
      for (const [user, path, key] of [
        ['u1', '/upload', 'upload-1'],
        ['u2', '/upload-raw', 'upload-2'],
        ['u3', '/upload', undefined],
      ] as const) {
        const pieces = [randomBytes(1000), randomBytes(70_000), randomBytes(5), randomBytes(30_000)];
        env.emulator.failNext({ delayMs: 150 }, { operation: 'canUseFeature' });
        const answer = await send(user, path, key, pieces);
        expect(answer.status).toBe(200);
        expect(answer.body.hex).toBe(Buffer.concat(pieces).toString('hex'));
        if (path === '/upload') expect(answer.body.sizes.length).toBeGreaterThanOrEqual(pieces.length);
      }
      // The same key with another body: its first body was fingerprinted whole.
      const retry = await send('u1', '/upload', 'upload-1', [Buffer.from('other')]);
      expect(retry.status).toBe(422);
      expect(env.emulator.requests().filter((sent) => sent.fieldNames.includes('canUseFeature'))).toHaveLength(3);
    } finally {
      server.close();
    }
  });
});

describe('MemoryIdempotencyWindow', () => {
  const response = (bytes: number): StoredResponse => ({ status: 200, headers: [], body: Buffer.alloc(bytes) });

  it('claims, stores and replays a key, forgets it after its TTL, and keeps maxKeys and maxBytes', () => {
    const clock = { now: 0 };
    let evictions = 0;
    const window = new MemoryIdempotencyWindow({
      ttlMs: 1000,
      maxKeys: 2,
      maxBytes: 100,
      onEvict: () => {
        evictions++;
      },
      now: () => clock.now,
    });
    expect(window.begin('a', 'f1')).toEqual({ status: 'claimed' });
    expect(window.begin('a', 'f2')).toEqual({ status: 'in-flight', fingerprint: 'f1' });
    window.complete('a', 'f2', response(10)); // not its claim: ignored
    expect(window.begin('a', 'f1')).toEqual({ status: 'in-flight', fingerprint: 'f1' });
    window.complete('a', 'f1', response(10));
    expect(window.begin('a', 'f1')).toMatchObject({ status: 'done', fingerprint: 'f1', response: { status: 200 } });
    expect(window.bytes).toBe(10);
    clock.now = 1000;
    expect(window.begin('a', 'f1')).toEqual({ status: 'claimed' }); // expired
    window.release('a', 'f1');
    expect(window.size).toBe(0);
    window.begin('b', 'f');
    window.complete('b', 'f', response(60));
    window.begin('c', 'f');
    window.complete('c', 'f', response(60)); // b and c do not fit in 100 bytes: b goes
    expect(evictions).toBe(1);
    expect(window.begin('b', 'f')).toEqual({ status: 'claimed' });
    window.begin('d', 'f'); // three keys: the oldest (c) goes
    expect(evictions).toBe(2);
    window.complete('b', 'f', response(101)); // over maxBytes alone: not stored, released
    expect(window.begin('b', 'f')).toEqual({ status: 'claimed' });
  });

  it('a full window evicts the oldest 1% at once, and a later begin() drops the expired keys', () => {
    const clock = { now: 0 };
    let evictions = 0;
    const window = new MemoryIdempotencyWindow({
      ttlMs: 10_000,
      maxKeys: 500,
      maxBytes: 1_000_000,
      onEvict: () => void evictions++,
      now: () => clock.now,
    });
    for (let i = 0; i < 500; i++) window.begin(`k${i}`, 'f');
    expect(evictions).toBe(0);
    window.begin('k500', 'f'); // full: the oldest 6 go, to make room for this one and 1% (5) more
    expect(evictions).toBe(6);
    expect(window.size).toBe(495);
    expect(window.begin('k0', 'f')).toEqual({ status: 'claimed' }); // evicted: claimed again
    expect(window.begin('k6', 'f')).toEqual({ status: 'in-flight', fingerprint: 'f' }); // kept
    // Claims live 10 s here; expired ones go at the first begin() after, the rest stay.
    clock.now = 10_000;
    window.begin('late', 'f');
    expect(window.size).toBe(1);
  });
});
