// The server side of bench/outage-memory.ts: an Express app metered by kana-meter with Kana down.
// Reports its own memory (after GC, once idle) and stats over IPC.

import { mkdtempSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { kanaMeter } from 'kana-meter';

const [maxPendingKeys, spool] = process.argv.slice(2);
const kana = kanaMeter({
  apiKey: 'prv_test_unreachable',
  endpoint: 'http://127.0.0.1:9/graphql', // discard port: nothing listens, Kana is down
  userId: (req) => req.get('x-user'),
  routes: { 'GET /r': 'api-calls' },
  maxPendingKeys: Number(maxPendingKeys),
  retry: { retries: 1, minTimeout: 50, maxTimeout: 2000 },
  logger: { error() {}, warn() {}, info() {}, debug() {} },
  ...(spool === 'spool' ? { spool: { path: join(mkdtempSync(join(tmpdir(), 'kana-memory-')), 'usage.spool') } } : {}),
});
const app = express();
if (!process.env.BENCH_NO_KANA) app.use(kana);
app.get('/r', (_req, res) => res.json({ ok: true }));
const server = app.listen(0, '127.0.0.1', () => {
  process.send?.({ port: (server.address() as AddressInfo).port });
});

process.on('message', async (message: { type: string }) => {
  if (message.type === 'memory') {
    const collect = () => {
      globalThis.gc?.();
      globalThis.gc?.();
      return process.memoryUsage();
    };
    const atOnce = collect();
    // Right after a burst V8 still holds committed-but-free heap; its memory reducer returns it
    // once the process idles. What is left after that is what the process keeps.
    await new Promise((resolve) => setTimeout(resolve, Number(process.env.BENCH_SETTLE_MS ?? 10_000)));
    const { heapUsed, heapTotal, rss } = collect();
    process.send?.({ heapUsed, heapTotal, rss, rssAtOnce: atOnce.rss });
  } else if (message.type === 'stats') {
    process.send?.(kana.stats());
  }
});
