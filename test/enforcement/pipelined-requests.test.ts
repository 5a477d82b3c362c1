// HTTP/1.1 pipelining: many requests written at once on one connection are each checked, so the allowance holds,
// and each one served is billed. Express 4 and 5, against the emulator.

import type { Server } from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { kanaMeter } from '../../src/index.js';
import { apiCallsSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';
import { listen, pipelinedRequests } from '../helpers/raw-http.js';

const env = useEmulator();
let server: Server | undefined;

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(apiCallsSeed(20));
});

afterEach(() => {
  server?.close();
  server = undefined;
});

describe.each(expressVersions)('%s', (_version, createExpress) => {
  it.each([
    ['answered at once', 0],
    ['answered 20 ms later', 20],
  ])('30 pipelined requests, budget 20, handlers %s: 20 served and billed, then 429', async (_name, delayMs) => {
    const kana = env.track(
      kanaMeter(meterOptions(env.emulator, { routes: { 'POST /api/work': 'api-calls' }, enforce: true }).options),
    );
    let ran = 0;
    server = await listen(
      meteredApp(createExpress, kana, (app) =>
        app.post('/api/work', (_req, res) => {
          ran++;
          setTimeout(() => res.json({ ok: true }), delayMs);
        }),
      ),
    );

    const statuses = await pipelinedRequests(server, 30, 'POST', '/api/work', { 'x-user': 'u1' });
    await kana.flush();

    expect(statuses).toEqual([...Array(20).fill(200), ...Array(10).fill(429)]);
    expect(ran).toBe(20);
    expect(env.emulator.usage('u1', 'api-calls')).toBe(20);
  });
});
