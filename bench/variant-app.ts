// One benchmark variant's Express 5 app: bare, a no-op middleware, metered, enforced (in process or over Redis),
// express-rate-limit (memory store, or rate-limit-redis), enforced with idempotencyKey on, metered with the audit trail
// or OpenTelemetry, or the floor of what counting each request costs (floor-middleware.ts). Shared by the HTTP bench
// (server.ts) and the in-process one (in-process.ts), so both measure the same app.

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { context, metrics, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, BatchSpanProcessor, InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import express, { type Express, type RequestHandler } from 'express';
import { rateLimit } from 'express-rate-limit';
import { type KanaMeter, type KanaMeterOptions, kanaMeter } from 'kana-meter';
import { openTelemetry } from 'kana-meter/opentelemetry';
import { RedisStore } from 'kana-meter/redis';
import { RedisStore as RateLimitRedisStore } from 'rate-limit-redis';
import { createClient } from 'redis';
import { floorMiddleware } from './floor-middleware.js';

export const ALL_VARIANTS = [
  'bare',
  'noop',
  'metered',
  'enforced',
  'rate-limit',
  'rate-limit-redis',
  'enforced-redis',
  'idempotency-on',
  'idempotent-keyed',
  'metered-audit',
  'metered-otel',
  'metered-otel-sdk',
  'floor-metered',
  'floor-enforced',
] as const;
export type Variant = (typeof ALL_VARIANTS)[number];
/** Variants that need a Redis server. */
export const REDIS_VARIANTS: readonly Variant[] = ['rate-limit-redis', 'enforced-redis'];
/** Variants whose usage reaches Kana: the bench checks that every 2xx was delivered. */
export const KANA_VARIANTS: readonly Variant[] = [
  'metered',
  'enforced',
  'enforced-redis',
  'idempotency-on',
  'idempotent-keyed',
  'metered-audit',
  'metered-otel',
  'metered-otel-sdk',
];
/** Registers a real OpenTelemetry SDK globally: only in a process of its own (the HTTP bench's server). */
export const GLOBAL_SDK_VARIANTS: readonly Variant[] = ['metered-otel-sdk'];
/** Each request carries a new Idempotency-Key: the whole first-request path (fingerprint, claim, capture, store). */
export const KEYED_VARIANTS: readonly Variant[] = ['idempotent-keyed'];
/** The route every variant serves, and the users the load spreads over (each has a plan in bench/kana-server.ts). */
export const ROUTE_PATH = '/api/items/42';
export const USERS = Array.from({ length: 10 }, (_, i) => `u${i}`);

export interface VariantApp {
  app: Express;
  /** The variant's kanaMeter, when it has one (flushed and closed by the bench). */
  kana: KanaMeter | undefined;
  /** Responses fully sent: what kana-meter must bill. */
  served(): number;
  /** Releases the variant's Redis client, if any. */
  close(): Promise<void>;
}

export interface VariantEnvironment {
  endpoint: string;
  apiKey: string;
  redisUrl?: string;
}

/** Parses BENCH_VARIANTS (a comma-separated subset; bare always runs), or throws naming the unknown ones. */
export function chosenVariants(env: string | undefined, known: readonly Variant[] = ALL_VARIANTS): Variant[] {
  const chosen = env?.split(',').map((name) => name.trim());
  const unknown = chosen?.filter((name) => !(known as readonly string[]).includes(name));
  if (unknown?.length) throw new Error(`BENCH_VARIANTS: unknown ${unknown.join(', ')}; known: ${known.join(', ')}`);
  return known.filter((name) => name === 'bare' || !chosen || chosen.includes(name));
}

/** node-redis, connected to the bench's redis-server; each store gets `sendCommand` as its guide shows. */
async function connectRedis(variant: Variant, redisUrl: string | undefined) {
  if (!redisUrl) throw new Error(`bench ${variant}: needs a Redis server`);
  const client = createClient({ url: redisUrl });
  client.on('error', (error) => console.error(`bench ${variant}: redis`, error));
  await client.connect();
  return client;
}

/** A real SDK, registered globally as the Node SDK does (with its async context manager); exported to memory. */
function registerInMemorySdk(): void {
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

export async function buildVariantApp(variant: Variant, environment: VariantEnvironment): Promise<VariantApp> {
  let kana: KanaMeter | undefined;
  let limiter: RequestHandler | undefined;
  let redis: Awaited<ReturnType<typeof connectRedis>> | undefined;
  const idempotent = variant === 'idempotency-on' || variant === 'idempotent-keyed';
  const otel = variant === 'metered-otel' || variant === 'metered-otel-sdk';
  if (variant === 'metered-otel-sdk') registerInMemorySdk();
  const metered = variant === 'metered' || variant === 'metered-audit' || otel;
  if (metered || variant === 'enforced' || variant === 'enforced-redis' || idempotent) {
    const options: KanaMeterOptions = {
      apiKey: environment.apiKey,
      endpoint: environment.endpoint,
      userId: (req) => req.get('x-user'),
      routes: { 'GET /api/items/:id': 'api-calls' },
      // 'enforced': every request is checked first (a warm cache after the first one per user), and takes a
      // unit of a large but finite allowance: from a lease on it (in this process, or reserved in Redis).
      enforce: !metered,
      logger: { error: console.error, warn: console.error, info() {}, debug() {} },
      // 'idempotency-on': enforced, the option on, requests without a key; 'idempotent-keyed': each with a new key.
      ...(idempotent && { idempotencyKey: true }),
      // 'metered-audit': metered, with the audit trail on (a line per request, written in batches).
      ...(variant === 'metered-audit' && {
        audit: { path: join(mkdtempSync(join(tmpdir(), 'bench-audit-')), 'audit.jsonl') },
      }),
      // 'metered-otel': openTelemetry() with no provider registered (the API's no-op); '-sdk': a real SDK.
      ...(otel && { metrics: openTelemetry() }),
    };
    if (variant === 'enforced-redis') {
      const client = await connectRedis(variant, environment.redisUrl);
      redis = client;
      options.store = new RedisStore({
        sendCommand: (...args: string[]) => client.sendCommand(args),
        prefix: 'bench-kana:',
      });
    }
    kana = kanaMeter(options);
  } else if (variant === 'rate-limit' || variant === 'rate-limit-redis') {
    // The ecosystem's standard: express-rate-limit, in memory or with one Redis round trip (EVALSHA) per request.
    let store: RateLimitRedisStore | undefined;
    if (variant === 'rate-limit-redis') {
      const client = await connectRedis(variant, environment.redisUrl);
      redis = client;
      store = new RateLimitRedisStore({
        sendCommand: (...args: string[]) => client.sendCommand(args),
        prefix: 'bench-rl:',
      });
    }
    limiter = rateLimit({
      windowMs: 60_000,
      limit: Number.MAX_SAFE_INTEGER,
      keyGenerator: (req) => req.get('x-user') ?? 'anonymous',
      standardHeaders: 'draft-8',
      legacyHeaders: false,
      store,
    });
  }

  const app = express();
  if (kana) app.use(kana as RequestHandler);
  if (limiter) app.use(limiter);
  // The floor any middleware pays: one more Express layer that does nothing.
  if (variant === 'noop') app.use((_req, _res, next) => next());
  if (variant === 'floor-metered' || variant === 'floor-enforced')
    app.use(floorMiddleware(variant === 'floor-enforced'));
  let served = 0;
  const countServed = () => {
    served++;
  };
  app.get('/api/items/:id', (req, res) => {
    res.once('finish', countServed);
    res.json({ id: req.params.id, name: 'item' });
  });
  return {
    app,
    kana,
    served: () => served,
    async close() {
      await kana?.close();
      await redis?.quit();
    },
  };
}
