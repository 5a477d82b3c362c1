// Memory while Kana is down: N metered requests through a real Express server, heap growth measured after GC.
// Usage: node --expose-gc --import tsx bench/outage-memory.ts [requests] [distinctUsers] [maxPendingKeys] [spool]
// Prints one JSON line. Run with no arguments for the full-size scenarios (the README's numbers).

import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { kanaMeter } from '../src/index.js';

interface Scenario {
  requests: number;
  distinctUsers: number;
  maxPendingKeys: number;
  spool: boolean;
}

const gc = globalThis.gc;
if (!gc) throw new Error('run with node --expose-gc');

function heapMb(): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

async function measure({ requests, distinctUsers, maxPendingKeys, spool }: Scenario) {
  const directory = mkdtempSync(join(tmpdir(), 'kana-memory-'));
  const kana = kanaMeter({
    apiKey: 'prv_test_unreachable',
    endpoint: 'http://127.0.0.1:9/graphql', // discard port: nothing listens, Kana is down
    userId: (req) => req.get('x-user'),
    routes: { 'GET /r': 'api-calls' },
    maxPendingKeys,
    retry: { retries: 1, minTimeout: 50, maxTimeout: 2000 },
    logger: { error() {}, warn() {}, info() {}, debug() {} },
    ...(spool ? { spool: { path: join(directory, 'usage.spool') } } : {}),
  });
  const app = express();
  app.use(kana);
  app.get('/r', (_req, res) => res.json({ ok: true }));
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/r`;

  // Warm up the server and the HTTP client before the baseline.
  for (let i = 0; i < 200; i++) await fetch(url, { headers: { 'x-user': 'warm-up' } }).then((r) => r.arrayBuffer());
  const heapBefore = heapMb();
  const { rss: rssBefore, heapTotal: heapTotalBefore } = process.memoryUsage();

  let next = 0;
  const worker = async () => {
    while (next < requests) {
      const i = next++;
      const response = await fetch(url, { headers: { 'x-user': `user-${i % distinctUsers}` } });
      await response.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));

  const heapAfter = heapMb();
  const { rss: rssAfter, heapTotal: heapTotalAfter } = process.memoryUsage();
  const stats = kana.stats();
  server.close();
  await kana.close({ timeoutMs: 1000 });
  rmSync(directory, { recursive: true, force: true });
  return {
    requests,
    distinctUsers,
    maxPendingKeys,
    spool,
    heapGrowthMb: Number((heapAfter - heapBefore).toFixed(2)),
    // What V8 keeps committed (heapTotal) and the whole process (RSS): they follow the garbage
    // churned, not what is retained.
    heapTotalGrowthMb: Number(((heapTotalAfter - heapTotalBefore) / 2 ** 20).toFixed(2)),
    rssGrowthMb: Number(((rssAfter - rssBefore) / 2 ** 20).toFixed(2)),
    captured: stats.captured,
    pendingKeys: stats.pendingKeys,
    pending: stats.pending,
    dropped: stats.dropped,
    spilled: stats.spilled,
  };
}

const [requests, distinctUsers, maxPendingKeys, spool] = process.argv.slice(2);
if (requests) {
  const scenario = {
    requests: Number(requests),
    distinctUsers: Number(distinctUsers ?? 1000),
    maxPendingKeys: Number(maxPendingKeys ?? 50_000),
    spool: spool === 'spool',
  };
  console.log(JSON.stringify(await measure(scenario)));
} else {
  for (const scenario of [
    { requests: 200_000, distinctUsers: 1_000, maxPendingKeys: 50_000, spool: false },
    { requests: 200_000, distinctUsers: 200_000, maxPendingKeys: 50_000, spool: false },
    { requests: 200_000, distinctUsers: 200_000, maxPendingKeys: 50_000, spool: true },
  ]) {
    console.log(JSON.stringify(await measure(scenario)));
  }
}
