// One benchmark variant in its own process: the same tiny Express 5 app, bare, with a no-op middleware, metered,
// enforced, rate-limited by express-rate-limit + rate-limit-redis, or enforced with kanaMeter + RedisStore; metered with
// openTelemetry() and no SDK (the API's no-ops), or with the SDK registered and in-memory exporters.
// Driven by bench/run.ts over IPC: it reports its port, its CPU time, and flushes on request.

import type { AddressInfo } from 'node:net';
import { context, metrics, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, BatchSpanProcessor, InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import express, { type RequestHandler } from 'express';
import { rateLimit } from 'express-rate-limit';
import { type KanaMeter, type KanaMeterOptions, kanaMeter } from 'kana-meter';
import { openTelemetry } from 'kana-meter/opentelemetry';
import { RedisStore } from 'kana-meter/redis';
import { RedisStore as RateLimitRedisStore } from 'rate-limit-redis';
import { createClient } from 'redis';

const [variant, endpoint, apiKey, redisUrl] = process.argv.slice(2);

/** node-redis, connected to the bench's own redis-server; each store gets `sendCommand` as its README shows. */
async function connectRedis() {
  const client = createClient({ url: redisUrl });
  client.on('error', (error) => console.error(`bench ${variant}: redis`, error));
  await client.connect();
  return client;
}

let kana: KanaMeter | undefined;
let rateLimiter: RequestHandler | undefined;
if (variant === 'metered-otel-sdk') {
  // A real SDK, registered globally as the Node SDK does (with its async context manager); exported to memory.
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const reader = new PeriodicExportingMetricReader({
    exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
    exportIntervalMillis: 1000,
  });
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
  trace.setGlobalTracerProvider(
    new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(new InMemorySpanExporter())] }),
  );
}

if (
  variant === 'metered' ||
  variant === 'enforced' ||
  variant === 'enforced-redis' ||
  variant === 'metered-otel' ||
  variant === 'metered-otel-sdk'
) {
  const options: KanaMeterOptions = {
    apiKey,
    endpoint,
    userId: (req) => req.get('x-user'),
    routes: { 'GET /api/items/:id': 'api-calls' },
    // 'enforced': every request is checked first (a warm cache after the first one per user), and takes a
    // unit of a large but finite allowance: from a lease on it (in this process, or reserved in Redis).
    enforce: variant === 'enforced' || variant === 'enforced-redis',
    logger: { error: console.error, warn: console.error, info() {}, debug() {} },
  };
  if (variant === 'enforced-redis') {
    // As the README shows it: the user's node-redis client, kana-meter depending on none.
    const client = await connectRedis();
    options.store = new RedisStore({
      sendCommand: (...args: string[]) => client.sendCommand(args),
      prefix: 'bench-kana:',
    });
  }
  if (variant === 'metered-otel' || variant === 'metered-otel-sdk') options.metrics = openTelemetry();
  kana = kanaMeter(options);
} else if (variant === 'rate-limit-redis') {
  // The ecosystem's standard for shared state: one Redis round trip (EVALSHA) per request.
  const client = await connectRedis();
  rateLimiter = rateLimit({
    windowMs: 60_000,
    limit: Number.MAX_SAFE_INTEGER,
    keyGenerator: (req) => req.get('x-user') ?? 'anonymous',
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    store: new RateLimitRedisStore({
      sendCommand: (...args: string[]) => client.sendCommand(args),
      prefix: 'bench-rl:',
    }),
  });
}

const app = express();
if (kana) app.use(kana as RequestHandler);
if (rateLimiter) app.use(rateLimiter);
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
