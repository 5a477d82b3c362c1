// Type-checked against the installed tarball (NodeNext and Bundler, @types/express 4 and 5): an ESM consumer.
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import express, { type Request, type Response } from 'express';
import {
  type EntitlementDecision,
  type KanaMeterOptions,
  type KanaMeterStats,
  kanaMeter,
  MemoryStore,
  meter,
} from 'kana-meter';
import { type KanaEmulator, startKanaEmulator } from 'kana-meter/emulator';
import { type OpenTelemetryOptions, openTelemetry } from 'kana-meter/opentelemetry';
import { type PrometheusMetricsOptions, prometheusMetrics } from 'kana-meter/prometheus';
import { RedisStore, type RedisStoreOptions } from 'kana-meter/redis';
import { Registry } from 'prom-client';

const options: KanaMeterOptions = {
  apiKey: 'prv_test_x',
  userId: (req) => req.get('x-user'),
  routes: { 'POST /api/search': 'api-calls', 'GET /api/items/:id': { feature: 'item-reads', delta: 2, enforce: true } },
};
const prometheusOptions: PrometheusMetricsOptions = {
  register: new Registry(),
  prefix: 'api_kana_',
  buckets: [0.1, 1],
};
const kana = kanaMeter({ ...options, metrics: prometheusMetrics(prometheusOptions) });
// @ts-expect-error: metrics is a KanaMeterMetrics (bind, observeKanaCall), not a registry
kanaMeter({ ...options, metrics: new Registry() });
// The OpenTelemetry SDK's providers are the API's.
const openTelemetryOptions: OpenTelemetryOptions = { meterProvider: new MeterProvider(), recordUserId: false };
kanaMeter({ ...options, metrics: openTelemetry(openTelemetryOptions) });
// @ts-expect-error: recordUserId is true or false
openTelemetry({ recordUserId: 'yes' });
const app = express();
app.use(kana);
app.get('/r', meter('reports', { delta: (_req, res) => Number(res.locals.rows) }), (_req, res) => {
  res.json({});
});
app.get('/docs/:id', meter('docs', { enforce: true }), (req: Request, res: Response) => {
  // req.kana is typed on Express's Request as soon as kana-meter is imported.
  const decision: EntitlementDecision | undefined = req.kana;
  const remaining: number | null | undefined = req.kana?.remaining;
  // @ts-expect-error: remaining is a number or null, so req.kana is typed (not any)
  const wrong: string | undefined = req.kana?.remaining;
  res.json({ allowed: decision?.allowed, remaining, wrong });
});
// @ts-expect-error: a delta is a number or a function, not a string
meter('reports', { delta: '2' });
const stats: KanaMeterStats = kana.stats();
const delivered: number = stats.delivered;
kana.record(124, 'exports', 3);
const checked: Promise<EntitlementDecision> = kana.check('u1', 'exports');
kanaMeter({
  ...options,
  enforce: 'shadow',
  staleIfError: 60_000,
  checkConcurrency: 4,
  idempotencyKey: { ttlMs: 1000 },
});
// @ts-expect-error: enforce is true, false or 'shadow'
kanaMeter({ ...options, enforce: 'on' });
const shadowDenied: number = stats.shadowDenied;
const storeOptions: RedisStoreOptions = {
  sendCommand: (...args: string[]) => Promise.resolve(args.length),
  prefix: 'api:',
  leaseMs: 5000,
};
kanaMeter({ ...options, store: new RedisStore(storeOptions) });
kanaMeter({ ...options, store: new MemoryStore() });
// @ts-expect-error: store is a KanaMeterStore, not a Redis client
kanaMeter({ ...options, store: { sendCommand: () => 'OK' } });
const storeAvailable: boolean = stats.storeAvailable;
const storeLeases: number = stats.storeLeases;
const emulator: Promise<KanaEmulator> = startKanaEmulator({ port: 0 });

export { checked, delivered, emulator, shadowDenied, storeAvailable, storeLeases };
