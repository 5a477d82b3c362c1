// kana-meter/opentelemetry against the emulator: the SDK's in-memory exporters read what a metered app reported, through real traffic and faults.

import { type Attributes, context, SpanKind, SpanStatusCode, type Tracer, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  type DataPoint,
  type Histogram,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import type { RequestHandler } from 'express';
import { openTelemetry } from 'kana-meter/opentelemetry';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type KanaMeterOptions, kanaMeter, logCodes } from '../../src/index.js';
import { expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();

beforeEach(async () => {
  await env.emulator.setOffline(false);
  env.emulator.reset();
  // u1 and u2 may use reports without limit, and searches twice (enforced).
  env.emulator.seed({
    users: [{ id: 'u1' }, { id: 'u2' }],
    features: [
      { id: 'reports', type: 'CONSUMABLE' },
      { id: 'searches', type: 'CONSUMABLE' },
    ],
    packages: [
      {
        id: 'small',
        features: [
          { id: 'reports', limit: null },
          { id: 'searches', limit: 2 },
        ],
      },
    ],
    subscriptions: [
      { userId: 'u1', packageId: 'small' },
      { userId: 'u2', packageId: 'small' },
    ],
  });
});

/** The SDK, as a test sets it up: a meter provider read on demand, a tracer provider exporting to memory. */
function sdk() {
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const spanExporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spanExporter)] });
  /** Collects now: every data point by metric name. */
  const collect = async () => {
    metricExporter.reset();
    await reader.forceFlush();
    const points = new Map<string, { unit: string; points: DataPoint<unknown>[] }>();
    for (const resource of metricExporter.getMetrics()) {
      for (const scope of resource.scopeMetrics) {
        expect(scope.scope.name).toBe('kana-meter');
        for (const metric of scope.metrics) {
          points.set(metric.descriptor.name, { unit: metric.descriptor.unit, points: metric.dataPoints });
        }
      }
    }
    return points;
  };
  const spans = () => spanExporter.getFinishedSpans();
  const tracer = tracerProvider.getTracer('test-app');
  return { meterProvider, tracerProvider, collect, spans, tracer };
}

type Collected = Awaited<ReturnType<ReturnType<typeof sdk>['collect']>>;

/** The value of a metric's data point whose attributes include `attributes` (undefined when there is none). */
function pointValue(collected: Collected, name: string, attributes: Attributes = {}): unknown {
  const point = collected
    .get(name)
    ?.points.find((candidate) =>
      Object.entries(attributes).every(([key, value]) => candidate.attributes[key] === value),
    );
  return point?.value;
}

/** An app's own server span around each request, as HTTP instrumentation makes one. */
function traceRequests(tracer: Tracer): RequestHandler {
  return (req, res, next) => {
    const span = tracer.startSpan(`GET ${req.path}`, { kind: SpanKind.SERVER });
    res.on('finish', () => span.end());
    context.with(trace.setSpan(context.active(), span), next);
  };
}

function setup(telemetry: ReturnType<typeof sdk> | undefined, overrides: Partial<KanaMeterOptions> = {}) {
  const { options, sink } = meterOptions(env.emulator, {
    routes: {
      'GET /r': 'reports',
      'GET /five': { feature: 'reports', delta: 5 },
      'GET /search': { feature: 'searches', enforce: true },
    },
    metrics:
      telemetry === undefined
        ? openTelemetry()
        : openTelemetry({ meterProvider: telemetry.meterProvider, tracerProvider: telemetry.tracerProvider }),
    ...overrides,
  });
  const kana = env.trackTest(kanaMeter(options));
  const createExpress = expressVersions[0][1];
  const app = createExpress();
  if (telemetry) app.use(traceRequests(telemetry.tracer));
  app.use(kana);
  for (const path of ['/r', '/five', '/search']) app.get(path, (_req, res) => res.json({}));
  const hit = (path = '/r', status = 200, user = 'u1') => request(app).get(path).set('x-user', user).expect(status);
  return { kana, hit, sink };
}

const contextManager = new AsyncLocalStorageContextManager();

describe('openTelemetry() with an SDK', () => {
  beforeAll(() => {
    context.setGlobalContextManager(contextManager.enable());
  });
  afterAll(() => {
    context.disable();
  });

  it('counts units captured and delivered by feature, and sends each batch in a span linked to its requests', async () => {
    const telemetry = sdk();
    const { kana, hit } = setup(telemetry);
    for (let i = 0; i < 3; i++) await hit();
    await hit('/five');
    await hit('/r', 200, 'u2');
    let collected = await telemetry.collect();
    expect(collected.get('kana_meter.units.captured')?.unit).toBe('{unit}');
    expect(pointValue(collected, 'kana_meter.units.captured', { 'kana_meter.feature.id': 'reports' })).toBe(9);
    expect(pointValue(collected, 'kana_meter.units.delivered', { 'kana_meter.feature.id': 'reports' })).toBe(0);
    expect(pointValue(collected, 'kana_meter.events.captured')).toBe(5);
    expect(pointValue(collected, 'kana_meter.queue.depth')).toBe(5);
    // No user id on metrics unless asked for.
    for (const point of collected.get('kana_meter.units.captured')?.points ?? []) {
      expect(Object.keys(point.attributes)).toEqual(['kana_meter.feature.id']);
    }

    await kana.flush();
    collected = await telemetry.collect();
    expect(pointValue(collected, 'kana_meter.units.delivered', { 'kana_meter.feature.id': 'reports' })).toBe(9);
    expect(pointValue(collected, 'kana_meter.events.delivered')).toBe(5);
    expect(pointValue(collected, 'kana_meter.queue.depth')).toBe(0);
    expect(pointValue(collected, 'kana_meter.kana.available')).toBe(1);
    const duration = pointValue(collected, 'kana_meter.kana.call.duration', {
      'kana_meter.call.operation': 'usage',
      'kana_meter.call.outcome': 'ok',
    }) as Histogram;
    // Both keys in one call.
    expect(duration.count).toBe(1);
    expect(collected.get('kana_meter.kana.call.duration')?.unit).toBe('s');
    expect(env.emulator.usage('u1', 'reports')).toBe(8);

    const spans = telemetry.spans();
    const requests = spans.filter((span) => span.kind === SpanKind.SERVER);
    expect(requests).toHaveLength(5);
    const deliveries = spans.filter((span) => span.name === 'kana-meter deliver');
    expect(deliveries).toHaveLength(2);
    const u1 = deliveries.find((span) => span.attributes['kana_meter.usage.units'] === 8) as ReadableSpan;
    // Linked to the traces of the four requests of u1, and in a trace of its own.
    const requestTraces = new Set(requests.map((span) => span.spanContext().traceId));
    expect(new Set(u1.links.map((link) => link.context.traceId)).size).toBe(4);
    for (const link of u1.links) expect(requestTraces.has(link.context.traceId)).toBe(true);
    expect(u1.links).toHaveLength(4);
    expect(u1.attributes['kana_meter.delivery.linked_requests']).toBe(4);
    expect(requests.map((span) => span.spanContext().traceId)).not.toContain(u1.spanContext().traceId);
    expect(u1.parentSpanContext).toBeUndefined();
    expect(u1.attributes['user.id']).toBeUndefined();
    // Each batch's call is a client span, its child.
    const call = spans.find(
      (span) => span.name === 'mutation createUsageEvent' && span.parentSpanContext?.spanId === u1.spanContext().spanId,
    ) as ReadableSpan;
    expect(call.kind).toBe(SpanKind.CLIENT);
    expect(call.status.code).toBe(SpanStatusCode.UNSET);
    expect(call.attributes).toMatchObject({
      'graphql.operation.name': 'createUsageEvent',
      'graphql.operation.type': 'mutation',
      'http.request.method': 'POST',
      'server.address': new URL(env.emulator.url).hostname,
      'server.port': Number(new URL(env.emulator.url).port),
      'kana_meter.attempt': 1,
      'kana_meter.call.outcome': 'ok',
    });
  });

  it('links a batch to at most 32 requests, and counts them all', () => {
    const telemetry = sdk();
    const metrics = openTelemetry({ tracerProvider: telemetry.tracerProvider });
    const requests = Array.from({ length: 40 }, (_, i) => telemetry.tracer.startSpan(`GET /r/${i}`));
    for (const span of requests) {
      context.with(trace.setSpan(context.active(), span), () =>
        metrics.observeUsage?.('captured', 'u1', 'reports', 1, undefined),
      );
    }
    // Captured outside any request: nothing to link.
    metrics.observeUsage?.('captured', 'u1', 'reports', 1, undefined);
    metrics.tracing?.startDelivery('u1', 'reports', 41, false)?.end('ok', undefined);
    // The next batch of the key starts afresh.
    metrics.tracing?.startDelivery('u1', 'reports', 1, false)?.end('ok', undefined);
    const [first, second] = telemetry.spans();
    expect(first?.links.map((link) => link.context.spanId)).toEqual(
      requests.slice(0, 32).map((span) => span.spanContext().spanId),
    );
    expect(first?.attributes['kana_meter.delivery.linked_requests']).toBe(40);
    expect(second?.links).toEqual([]);
  });

  it('puts the user id on the unit counters and delivery spans only when asked to (recordUserId)', async () => {
    const telemetry = sdk();
    const { options } = meterOptions(env.emulator, {
      routes: { 'GET /r': 'reports' },
      metrics: openTelemetry({
        meterProvider: telemetry.meterProvider,
        tracerProvider: telemetry.tracerProvider,
        recordUserId: true,
      }),
    });
    const kana = env.trackTest(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    await request(app).get('/r').set('x-user', 'u2').expect(200);
    await kana.flush();
    const collected = await telemetry.collect();
    expect(
      pointValue(collected, 'kana_meter.units.delivered', { 'kana_meter.feature.id': 'reports', 'user.id': 'u2' }),
    ).toBe(1);
    expect(telemetry.spans().find((span) => span.name === 'kana-meter deliver')?.attributes['user.id']).toBe('u2');
  });

  it('traces a retried call as one span per attempt: the 503 an error, the retry its resend', async () => {
    const telemetry = sdk();
    const { kana, hit, sink } = setup(telemetry);
    env.emulator.failNext({ status: 503 }, { operation: 'createUsageEvent' });
    await hit();
    await kana.flush();
    const spans = telemetry.spans();
    const [delivery] = spans.filter((span) => span.name === 'kana-meter deliver');
    const attempts = spans
      .filter((span) => span.name === 'mutation createUsageEvent')
      .sort((a, b) => Number(a.attributes['kana_meter.attempt']) - Number(b.attributes['kana_meter.attempt']));
    expect(attempts).toHaveLength(2);
    for (const attempt of attempts) expect(attempt.parentSpanContext?.spanId).toBe(delivery?.spanContext().spanId);
    expect(attempts[0]?.status.code).toBe(SpanStatusCode.ERROR);
    expect(attempts[0]?.attributes).toMatchObject({
      'kana_meter.attempt': 1,
      'http.response.status_code': 503,
      'error.type': 'KANA_SERVER_ERROR',
    });
    expect(attempts[1]?.status.code).toBe(SpanStatusCode.UNSET);
    expect(attempts[1]?.attributes).toMatchObject({ 'kana_meter.attempt': 2, 'http.request.resend_count': 1 });
    expect(delivery?.status.code).toBe(SpanStatusCode.UNSET);
    expect(delivery?.attributes['kana_meter.delivery.outcome']).toBe('ok');
    // The retry's log line leads to the delivery's trace, not to a request's.
    const [retry] = sink.withCode(logCodes.deliveryRetry);
    expect(retry?.trace_id).toBe(delivery?.spanContext().traceId);

    const collected = await telemetry.collect();
    const failedAttempts = pointValue(collected, 'kana_meter.kana.call.duration', {
      'kana_meter.call.operation': 'usage',
      'kana_meter.call.outcome': 'KANA_SERVER_ERROR',
    }) as Histogram;
    expect(failedAttempts.count).toBe(1);
    expect(pointValue(collected, 'kana_meter.usage.retries')).toBe(1);
    expect(pointValue(collected, 'kana_meter.units.delivered', { 'kana_meter.feature.id': 'reports' })).toBe(1);
  });

  it('shows an outage: Kana and checks unavailable and usage queued, then back', async () => {
    const telemetry = sdk();
    const { kana, hit } = setup(telemetry, {
      retry: { retries: 1, minTimeout: 1, maxTimeout: 50 },
      flushInterval: 0,
      checkTimeoutMs: 200,
    });
    await env.emulator.setOffline(true);
    await hit();
    await hit('/search');
    await expect.poll(() => kana.stats().kanaAvailable).toBe(false);
    let collected = await telemetry.collect();
    expect(pointValue(collected, 'kana_meter.kana.available')).toBe(0);
    expect(pointValue(collected, 'kana_meter.checks.available')).toBe(0);
    expect(pointValue(collected, 'kana_meter.store.available')).toBe(1);
    expect(pointValue(collected, 'kana_meter.queue.depth')).toBe(2);
    expect(collected.get('kana_meter.kana.available')?.unit).toBe('1');
    expect(
      pointValue(collected, 'kana_meter.enforcement.decisions', {
        'kana_meter.feature.id': 'searches',
        'kana_meter.decision.outcome': 'fallback',
        'kana_meter.decision.allowed': true,
      }),
    ).toBe(1);
    const failedDelivery = telemetry.spans().find((span) => span.name === 'kana-meter deliver');
    expect(failedDelivery?.status.code).toBe(SpanStatusCode.ERROR);
    expect(failedDelivery?.attributes['kana_meter.delivery.outcome']).toBe('requeued');

    await env.emulator.setOffline(false);
    await kana.flush();
    await expect.poll(() => kana.stats().checksAvailable, { timeout: 5000 }).toBe(true);
    collected = await telemetry.collect();
    expect(pointValue(collected, 'kana_meter.kana.available')).toBe(1);
    expect(pointValue(collected, 'kana_meter.checks.available')).toBe(1);
    expect(pointValue(collected, 'kana_meter.queue.depth')).toBe(0);
    expect(pointValue(collected, 'kana_meter.units.delivered', { 'kana_meter.feature.id': 'reports' })).toBe(1);
    expect(pointValue(collected, 'kana_meter.units.delivered', { 'kana_meter.feature.id': 'searches' })).toBe(1);
  });

  it("makes an enforced request's wait for its check a span of the request's trace, the Kana call its child", async () => {
    const telemetry = sdk();
    const { hit, sink } = setup(telemetry);
    await hit('/search');
    await hit('/search');
    await hit('/search', 429);
    const spans = telemetry.spans();
    const [first] = spans.filter((span) => span.kind === SpanKind.SERVER);
    const waits = spans.filter((span) => span.name === 'kana-meter check wait');
    // One cache miss: the first request waited; the others were decided from the cache.
    expect(waits).toHaveLength(1);
    const [wait] = waits as [ReadableSpan];
    expect(wait.spanContext().traceId).toBe(first?.spanContext().traceId);
    expect(wait.parentSpanContext?.spanId).toBe(first?.spanContext().spanId);
    expect(wait.attributes).toMatchObject({
      'kana_meter.feature.id': 'searches',
      'kana_meter.decision.source': 'kana',
    });
    const check = spans.find((span) => span.name === 'query checkEntitlement') as ReadableSpan;
    expect(check.kind).toBe(SpanKind.CLIENT);
    expect(check.parentSpanContext?.spanId).toBe(wait.spanContext().spanId);
    expect(check.attributes).toMatchObject({
      'graphql.operation.type': 'query',
      'kana_meter.call.operation': 'check',
      'kana_meter.checks': 1,
    });

    const collected = await telemetry.collect();
    const decided = (outcome: string, allowed: boolean) =>
      pointValue(collected, 'kana_meter.enforcement.decisions', {
        'kana_meter.feature.id': 'searches',
        'kana_meter.decision.outcome': outcome,
        'kana_meter.decision.allowed': allowed,
      });
    expect(decided('allowed', true)).toBe(2);
    expect(decided('limit-reached', false)).toBe(1);
    expect(collected.get('kana_meter.enforcement.decisions')?.unit).toBe('{request}');

    // A log line written in a request carries that request's trace id.
    await hit('/search', 401, '');
    const [noUser] = sink.withCode(logCodes.refusedNoUser);
    const last = telemetry.spans().filter((span) => span.kind === SpanKind.SERVER)[3];
    expect(noUser?.trace_id).toBe(last?.spanContext().traceId);
    expect(noUser?.span_id).toBe(last?.spanContext().spanId);
  });

  it('counts shadow-mode refusals as shadow, served', async () => {
    const telemetry = sdk();
    const { hit } = setup(telemetry, { routes: { 'GET /search': { feature: 'searches', enforce: 'shadow' } } });
    for (let i = 0; i < 3; i++) await hit('/search');
    const collected = await telemetry.collect();
    expect(
      pointValue(collected, 'kana_meter.enforcement.decisions', {
        'kana_meter.decision.outcome': 'shadow',
        'kana_meter.decision.allowed': true,
      }),
    ).toBe(1);
  });
});

describe('openTelemetry() with no SDK registered (the API defaults)', () => {
  afterEach(() => {
    trace.disable();
  });

  it('meters as usual, reports nothing, adds nothing to log lines, and fails nothing', async () => {
    const { kana, hit, sink } = setup(undefined, { flushInterval: 0 });
    env.emulator.failNext({ status: 503 }, { operation: 'createUsageEvent' });
    await hit();
    await hit('/search');
    await hit('/search', 401, '');
    await kana.flush();
    expect(kana.stats()).toMatchObject({ delivered: 2, retries: 1, allowed: 1, hookErrors: 0, internalErrors: 0 });
    expect(env.emulator.usage('u1', 'reports')).toBe(1);
    const lines = sink.lines();
    expect(lines.some((line) => line.code === logCodes.refusedNoUser)).toBe(true);
    expect(lines.filter((line) => 'trace_id' in line)).toEqual([]);
  });

  it('traces nothing while the global tracer is a no-op, and follows an SDK registered later', async () => {
    const metrics = openTelemetry();
    expect(metrics.tracing?.startDelivery('u1', 'reports', 1, false)).toBeUndefined();
    expect(metrics.tracing?.startCheckWait('reports')).toBeUndefined();
    const telemetry = sdk();
    trace.setGlobalTracerProvider(telemetry.tracerProvider);
    const delivery = metrics.tracing?.startDelivery('u1', 'reports', 1, false);
    delivery?.end('ok', undefined);
    expect(telemetry.spans().map((span) => span.name)).toEqual(['kana-meter deliver']);
  });
});
