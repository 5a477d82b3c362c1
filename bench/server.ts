// One benchmark variant in its own process: the same tiny Express 5 app, bare, with a no-op middleware, metered, or enforced.
// Driven by bench/run.ts over IPC: it reports its port, its CPU time, and flushes on request.

import type { AddressInfo } from 'node:net';
import express, { type RequestHandler } from 'express';
import { type KanaMeter, kanaMeter } from 'kana-meter';

const [variant, endpoint, apiKey] = process.argv.slice(2);

let kana: KanaMeter | undefined;
if (variant === 'metered' || variant === 'enforced') {
  kana = kanaMeter({
    apiKey,
    endpoint,
    userId: (req) => req.get('x-user'),
    routes: { 'GET /api/items/:id': 'api-calls' },
    // 'enforced': every request is checked first (a warm cache after the first one per user).
    enforce: variant === 'enforced',
    logger: { error: console.error, warn: console.error, info() {}, debug() {} },
  });
}

const app = express();
if (kana) app.use(kana as RequestHandler);
// The floor any middleware pays: one more Express layer that does nothing.
if (variant === 'noop') app.use((_req, _res, next) => next());
// Responses fully sent: what kana-meter must bill (a response cut off by the client is not billed).
let served = 0;
const countServed = () => {
  served++;
};
app.get('/api/items/:id', (req, res) => {
  res.once('finish', countServed);
  res.json({ id: req.params.id, name: 'item' });
});

const server = app.listen(0, '127.0.0.1', () => {
  process.send?.({ type: 'listening', port: (server.address() as AddressInfo).port });
});

process.on('message', async (message: { type: string }) => {
  if (message.type === 'cpu') {
    process.send?.({ type: 'cpu', cpu: process.cpuUsage() });
  } else if (message.type === 'flush') {
    await kana?.flush();
    process.send?.({ type: 'flushed', served, stats: kana?.stats() });
  } else if (message.type === 'exit') {
    server.close();
    await kana?.close();
    process.exit(0);
  }
});
