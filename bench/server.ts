// One benchmark variant in its own process (bench/variant-app.ts builds its app).
// Driven by bench/run.ts over IPC: it reports its port, its CPU time and peak RSS, and flushes on request.

import type { AddressInfo } from 'node:net';
import { buildVariantApp, type Variant } from './variant-app.js';

const [variant, endpoint, apiKey, redisUrl] = process.argv.slice(2);
const { app, kana, served, close } = await buildVariantApp(variant as Variant, {
  endpoint: endpoint as string,
  apiKey: apiKey as string,
  redisUrl: redisUrl || undefined,
});

const server = app.listen(0, '127.0.0.1', () => {
  process.send?.({ type: 'listening', port: (server.address() as AddressInfo).port });
});

process.on('message', async (message: { type: string }) => {
  if (message.type === 'cpu') {
    // maxRSS is in kilobytes: the process's peak resident set so far.
    process.send?.({ type: 'cpu', cpu: process.cpuUsage(), maxRssKb: process.resourceUsage().maxRSS });
  } else if (message.type === 'flush') {
    await kana?.flush();
    process.send?.({ type: 'flushed', served: served(), stats: kana?.stats() });
  } else if (message.type === 'exit') {
    server.close();
    await close();
    process.exit(0);
  }
});
