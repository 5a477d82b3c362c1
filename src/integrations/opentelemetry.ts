// kana-meter/opentelemetry: a KanaMeterMetrics on @opentelemetry/api: stats() and usage as metrics, Kana calls as spans, trace ids in log lines.

import {
  type Attributes,
  type Context,
  context,
  isSpanContextValid,
  type Link,
  type Meter,
  type MeterProvider,
  type Observable,
  metrics as otelMetrics,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api';
import type { EntitlementDecision } from '../config/decision.js';
import type { KanaLogger } from '../config/logger.js';
import type { KanaCall, KanaCallOutcome, KanaMeterMetrics } from '../config/metrics.js';
import { knownKeys, optionError, rejectUnknownKeys } from '../config/option-checks.js';
import type { Counter, KanaMeterStats, StoreCounter } from '../config/stats.js';
import type {
  CheckWaitSpan,
  DeliverySpan,
  KanaCallDescription,
  KanaCallSpan,
  KanaMeterTracing,
  UsageKind,
} from '../config/telemetry.js';

export type { KanaCall, KanaMeterMetrics } from '../config/metrics.js';
export type { KanaMeterTracing } from '../config/telemetry.js';

export interface OpenTelemetryOptions {
  /**
   * Where the metrics go. Read once, when kanaMeter() is created: start your SDK before.
   * @default the global MeterProvider (a no-op until an SDK registers one)
   * @example new MeterProvider({ readers: [reader] })
   */
  meterProvider?: MeterProvider;
  /**
   * Where the spans go.
   * @default the global TracerProvider (a no-op until an SDK registers one)
   * @example new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
   */
  tracerProvider?: TracerProvider;
  /**
   * Put the Kana user id (`user.id`) on the usage unit counters and on delivery spans. One time
   * series per user and feature: only with few users, or a backend that copes.
   * @default false (feature ids, outcomes and reasons only)
   * @example true
   */
  recordUserId?: boolean;
}

/** The instrumentation scope of every metric and span. */
export const INSTRUMENTATION_SCOPE = 'kana-meter';

/** Span links a delivery batch keeps: the first requests whose usage it carries (the rest are counted). */
export const MAX_LINKS = 32;

/** (user, feature) keys whose requests' trace contexts are kept for their next delivery, at most. */
const MAX_LINKED_KEYS = 10_000;

/** The semantic conventions' advice for durations in seconds. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

type CounterField = Counter | StoreCounter;

/** The OpenTelemetry name, unit and description of the counter for each counter of stats(). */
const COUNTERS: Readonly<Record<CounterField, readonly [name: string, unit: string, description: string]>> = {
  captured: ['kana_meter.events.captured', '{event}', 'Usage events accepted for delivery.'],
  delivered: ['kana_meter.events.delivered', '{event}', 'Usage events Kana confirmed.'],
  failed: ['kana_meter.events.failed', '{event}', 'Usage events reported undeliverable.'],
  dropped: ['kana_meter.events.dropped', '{event}', 'Usage events dropped: maxPendingKeys reached and no spool.'],
  spilled: ['kana_meter.events.spilled', '{event}', 'Usage events written to the spool: maxPendingKeys reached.'],
  replayed: ['kana_meter.events.replayed', '{event}', 'Usage events read from the spool, left by an earlier run.'],
  calls: ['kana_meter.usage.calls', '{call}', 'Usage calls made to Kana, retries and outage probes included.'],
  retries: ['kana_meter.usage.retries', '{call}', 'Usage calls retried after a transient failure.'],
  skippedNoUser: ['kana_meter.requests.without_user', '{request}', 'Successful metered requests without a user id.'],
  invalidDelta: ['kana_meter.usage.invalid_deltas', '{event}', 'Usage not sent: its delta was not in 1..2147483647.'],
  userIdErrors: ['kana_meter.requests.user_id_errors', '{request}', 'Requests not metered: userId threw or rejected.'],
  hookErrors: ['kana_meter.hooks.errors', '{error}', 'Errors thrown by user hooks and by the metrics integration.'],
  spoolErrors: ['kana_meter.spool.errors', '{error}', 'Failed writes to the spool.'],
  internalErrors: ['kana_meter.internal.errors', '{error}', "Errors of kana-meter's own while sending usage."],
  allowed: ['kana_meter.enforcement.allowed', '{request}', 'Enforced requests allowed, failed-open ones included.'],
  denied: ['kana_meter.enforcement.denied', '{request}', 'Enforced requests refused: 402, 429 or 503.'],
  cacheHits: ['kana_meter.enforcement.cache_hits', '{request}', 'Enforced requests decided from a cached answer.'],
  failedOpen: ['kana_meter.enforcement.failed_open', '{request}', 'Enforced requests let through: their check failed.'],
  unchecked: ['kana_meter.enforcement.unchecked', '{request}', 'Enforced requests not checked: no user id.'],
  checks: ['kana_meter.checks.sent', '{check}', 'Entitlement checks sent to Kana.'],
  checkErrors: ['kana_meter.checks.failed', '{check}', 'Entitlement checks that failed.'],
  checkCalls: ['kana_meter.checks.calls', '{call}', 'GraphQL calls made for entitlement checks.'],
  checkOutages: ['kana_meter.checks.outages', '{outage}', 'Times entitlement checks became unavailable.'],
  staleHits: ['kana_meter.enforcement.stale_hits', '{request}', 'Enforced requests decided from an expired answer.'],
  shadowDenied: ['kana_meter.enforcement.shadow_denied', '{request}', "Requests enforce: 'shadow' would have refused."],
  idempotentReplays: ['kana_meter.idempotency.replays', '{event}', 'Usage not billed again: Idempotency-Key replays.'],
  idempotencyEvictions: ['kana_meter.idempotency.evictions', '{key}', 'Idempotency keys dropped before their TTL.'],
  sharedAnswers: ['kana_meter.store.shared_answers', '{answer}', "Answers taken from the store, another instance's."],
  storeFallbacks: ['kana_meter.store.fallbacks', '{decision}', 'Decisions made alone: the store could not be asked.'],
  storeCommands: ['kana_meter.store.commands', '{command}', 'Commands sent to the store over the network.'],
  storeFailures: ['kana_meter.store.failures', '{command}', 'Store commands that failed or timed out.'],
  storeOutages: ['kana_meter.store.outages', '{outage}', 'Times the store went from available to unreachable.'],
  refusedNoUser: ['kana_meter.enforcement.refused_no_user', '{request}', 'Enforced requests refused: no user id.'],
  auditErrors: ['kana_meter.audit.errors', '{line}', 'Audit trail lines that could not be written.'],
  gateTimeouts: ['kana_meter.enforcement.gate_timeouts', '{request}', "Enforced requests decided at the gate's bound."],
  storeTimeouts: ['kana_meter.store.timeouts', '{command}', 'Store calls that did not settle within their limit.'],
};

type GaugeField = Exclude<keyof KanaMeterStats, CounterField>;

/** The OpenTelemetry name, unit, description and value of the gauge for each gauge of stats(). */
const GAUGES: Readonly<
  Record<
    GaugeField,
    readonly [name: string, unit: string, description: string, value: (stats: KanaMeterStats) => number]
  >
> = {
  pending: [
    'kana_meter.queue.depth',
    '{event}',
    'Usage events captured and not delivered or failed yet: waiting, being retried or in flight.',
    (stats) => stats.pending,
  ],
  pendingKeys: [
    'kana_meter.queue.keys',
    '{key}',
    'Distinct (user, feature) keys waiting.',
    (stats) => stats.pendingKeys,
  ],
  inFlight: ['kana_meter.usage.active_calls', '{call}', 'Usage calls to Kana in flight.', (stats) => stats.inFlight],
  kanaAvailable: [
    'kana_meter.kana.available',
    '1',
    '1 while Kana takes usage; 0 during an outage (sending paused, a probe retries).',
    (stats) => (stats.kanaAvailable ? 1 : 0),
  ],
  checksAvailable: [
    'kana_meter.checks.available',
    '1',
    '1 while entitlement checks are answered; 0 while they are unavailable.',
    (stats) => (stats.checksAvailable ? 1 : 0),
  ],
  entitlements: [
    'kana_meter.entitlements.cached',
    '{entitlement}',
    '(user, feature) entitlements in the cache.',
    (stats) => stats.entitlements,
  ],
  storeAvailable: [
    'kana_meter.store.available',
    '1',
    '1 while the store (Redis) answers; 0 while it is unreachable.',
    (stats) => (stats.storeAvailable ? 1 : 0),
  ],
  storeLeases: [
    'kana_meter.store.leases',
    '{lease}',
    '(user, feature) keys this instance holds a lease on.',
    (stats) => stats.storeLeases,
  ],
  storeLeasedUnits: [
    'kana_meter.store.leased_units',
    '{unit}',
    'Units reserved by this instance and not spent yet.',
    (stats) => stats.storeLeasedUnits,
  ],
  configError: [
    'kana_meter.kana.config_error',
    '1',
    'Whether Kana refuses the API key now (1) or not (0).',
    (stats) => (stats.configError === null ? 0 : 1),
  ],
};

/** Usage units per feature, as kana-meter reports them (`observeUsage`). */
const UNITS: Readonly<Record<UsageKind, readonly [name: string, description: string]>> = {
  captured: ['kana_meter.units.captured', 'Usage units captured for delivery, by feature.'],
  delivered: ['kana_meter.units.delivered', 'Usage units Kana confirmed, by feature.'],
  failed: ['kana_meter.units.failed', 'Usage units reported undeliverable, by feature and error.type.'],
  dropped: ['kana_meter.units.dropped', 'Usage units dropped (maxPendingKeys, no spool), by feature and error.type.'],
};

const DECISIONS_METRIC = 'kana_meter.enforcement.decisions';
const DURATION_METRIC = 'kana_meter.kana.call.duration';

/** An enforced request's decision, as the decisions counter tells it. */
export type DecisionOutcome = 'allowed' | 'limit-reached' | 'not-in-plan' | 'fallback' | 'stale' | 'shadow' | 'replay';
const OUTCOMES: readonly DecisionOutcome[] = [
  'allowed',
  'limit-reached',
  'not-in-plan',
  'fallback',
  'stale',
  'shadow',
  'replay',
];

/** Attribute names (OpenTelemetry's where one exists, `kana_meter.*` otherwise). */
const ATTR = {
  feature: 'kana_meter.feature.id',
  user: 'user.id',
  errorType: 'error.type',
  outcome: 'kana_meter.decision.outcome',
  allowed: 'kana_meter.decision.allowed',
  operation: 'kana_meter.call.operation',
  callOutcome: 'kana_meter.call.outcome',
} as const;

const OPTIONS = knownKeys<OpenTelemetryOptions>({ meterProvider: true, tracerProvider: true, recordUserId: true });

/** Units of one (user, feature) key, or of one feature: what the unit counters report. */
interface UnitTally {
  readonly attributes: Attributes;
  captured: number;
  delivered: number;
  /** By reason (error.type). */
  readonly failed: Map<string, number>;
  readonly dropped: Map<string, number>;
}

/** Trace contexts of captured requests, waiting for their key's next delivery. */
interface PendingLinks {
  readonly contexts: SpanContext[];
  /** Captured with a sampled trace, kept or not (past MAX_LINKS). */
  count: number;
}

/**
 * A `metrics` integration for kanaMeter() on the OpenTelemetry API: counters and gauges read
 * from `stats()` at each collection, usage units and decisions by feature, a histogram of Kana
 * call durations; spans for Kana calls, for an enforced request's wait for its entitlement (in
 * the request's trace) and for delivery batches (linked to the requests' traces); trace ids on
 * kana-meter's log lines. With no SDK registered, every part is a no-op. One per kanaMeter().
 * @example
 * const kana = kanaMeter({ apiKey, userId, metrics: openTelemetry() });
 */
export function openTelemetry(options: OpenTelemetryOptions = {}): KanaMeterMetrics {
  const { meterProvider, tracerProvider, recordUserId } = parseOpenTelemetryOptions(options);
  // The global API's ProxyTracer follows a provider registered later; a MeterProvider is read at bind().
  const tracer: Tracer = (tracerProvider ?? trace.getTracerProvider()).getTracer(INSTRUMENTATION_SCOPE);

  let bound = false;
  /** Units per feature (or per user and feature, with recordUserId). */
  const units = new Map<string, UnitTally>();
  /** Decisions per feature: a count per (outcome, allowed), indexed by outcome * 2 + (allowed ? 1 : 0). */
  const decisions = new Map<string, Float64Array>();
  const decisionAttributes = new Map<string, Attributes[]>();
  /** Attribute sets of the duration histogram, one per (operation, outcome). */
  const callAttributes = new Map<string, Attributes>();
  /** By feature, then user: no key string is built per capture. */
  const pendingLinks = new Map<string, Map<string, PendingLinks>>();
  let linkedKeys = 0;

  /** Takes (removes) the trace contexts kept for a key. */
  function takeLinks(userId: string, featureId: string): PendingLinks | undefined {
    const byUser = pendingLinks.get(featureId);
    const links = byUser?.get(userId);
    if (links !== undefined) {
      (byUser as Map<string, PendingLinks>).delete(userId);
      linkedKeys--;
    }
    return links;
  }
  let durations: ReturnType<Meter['createHistogram']> | undefined;

  function unitTally(userId: string, featureId: string): UnitTally {
    const key = recordUserId ? `${featureId}\u0000${userId}` : featureId;
    let tally = units.get(key);
    if (tally === undefined) {
      const attributes: Attributes = recordUserId
        ? { [ATTR.feature]: featureId, [ATTR.user]: userId }
        : { [ATTR.feature]: featureId };
      tally = { attributes, captured: 0, delivered: 0, failed: new Map(), dropped: new Map() };
      units.set(key, tally);
    }
    return tally;
  }

  /** Keeps the active span's context for this key's next delivery batch: only when a sampled span is active. */
  function keepLink(userId: string, featureId: string): void {
    const span = trace.getSpan(context.active());
    if (span === undefined) return;
    const spanContext = span.spanContext();
    // Sampled only: a link to a trace nobody records leads nowhere. (A sampled context is a valid one.)
    if ((spanContext.traceFlags & TraceFlags.SAMPLED) === 0) return;
    let byUser = pendingLinks.get(featureId);
    if (byUser === undefined) {
      byUser = new Map();
      pendingLinks.set(featureId, byUser);
    }
    let links = byUser.get(userId);
    if (links === undefined) {
      if (linkedKeys >= MAX_LINKED_KEYS) return;
      links = { contexts: [], count: 0 };
      byUser.set(userId, links);
      linkedKeys++;
    }
    links.count++;
    if (links.contexts.length < MAX_LINKS) links.contexts.push(spanContext);
  }

  function observe(stats: () => KanaMeterStats, meter: Meter): void {
    const counters = new Map<Observable, (snapshot: KanaMeterStats) => number>();
    for (const [field, [name, unit, description]] of Object.entries(COUNTERS) as [
      CounterField,
      readonly [string, string, string],
    ][]) {
      counters.set(meter.createObservableCounter(name, { unit, description }), (snapshot) => snapshot[field]);
    }
    for (const [name, unit, description, value] of Object.values(GAUGES)) {
      counters.set(meter.createObservableGauge(name, { unit, description }), value);
    }
    const unitCounters = Object.fromEntries(
      (Object.entries(UNITS) as [UsageKind, readonly [string, string]][]).map(([kind, [name, description]]) => [
        kind,
        meter.createObservableCounter(name, { unit: '{unit}', description }),
      ]),
    ) as Record<UsageKind, Observable>;
    const decisionCounter = meter.createObservableCounter(DECISIONS_METRIC, {
      unit: '{request}',
      description:
        'Enforced requests by feature and outcome (allowed, limit-reached, not-in-plan, fallback, stale, shadow, replay), and whether they went on.',
    });
    durations = meter.createHistogram(DURATION_METRIC, {
      unit: 's',
      description: "Duration of each Kana call attempt, by operation ('usage' or 'check') and outcome.",
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    });
    // One stats() snapshot per collection: every instrument reads the same instant.
    meter.addBatchObservableCallback(
      (result) => {
        const snapshot = stats();
        for (const [instrument, value] of counters) result.observe(instrument, value(snapshot));
        for (const tally of units.values()) {
          result.observe(unitCounters.captured, tally.captured, tally.attributes);
          result.observe(unitCounters.delivered, tally.delivered, tally.attributes);
          for (const [reason, count] of tally.failed) {
            result.observe(unitCounters.failed, count, { ...tally.attributes, [ATTR.errorType]: reason });
          }
          for (const [reason, count] of tally.dropped) {
            result.observe(unitCounters.dropped, count, { ...tally.attributes, [ATTR.errorType]: reason });
          }
        }
        for (const [featureId, counts] of decisions) {
          const attributes = decisionAttributes.get(featureId) as Attributes[];
          counts.forEach((count, i) => {
            if (count > 0) result.observe(decisionCounter, count, attributes[i]);
          });
        }
      },
      [...counters.keys(), ...Object.values(unitCounters), decisionCounter],
    );
  }

  const tracing: KanaMeterTracing = {
    currentContext: () => context.active(),

    startDelivery(userId, featureId, unitCount, probe): DeliverySpan | undefined {
      const links = takeLinks(userId, featureId);
      const attributes: Attributes = {
        [ATTR.feature]: featureId,
        'kana_meter.usage.units': unitCount,
        'kana_meter.delivery.probe': probe,
        'kana_meter.delivery.linked_requests': links?.count ?? 0,
      };
      if (recordUserId) attributes[ATTR.user] = userId;
      const span = tracer.startSpan(
        'kana-meter deliver',
        {
          kind: SpanKind.INTERNAL,
          root: true,
          attributes,
          links: links?.contexts.map((linked): Link => ({ context: linked })),
        },
        ROOT_CONTEXT,
      );
      if (!span.isRecording()) return undefined;
      const spanContext = trace.setSpan(ROOT_CONTEXT, span);
      return {
        run: (send) => context.with(spanContext, send),
        attempt: (call) => startCall(call, spanContext, undefined) ?? NOT_TRACED,
        end(outcome, error) {
          span.setAttribute('kana_meter.delivery.outcome', outcome);
          if (outcome !== 'ok') {
            span.setStatus({ code: SpanStatusCode.ERROR, message: describe(outcome, error) });
            if (outcome !== 'requeued') span.setAttribute(ATTR.errorType, outcome);
          }
          span.end();
        },
      };
    },

    startKanaCall(call, parent, links) {
      return startCall(call, parent as Context | undefined, links);
    },

    startCheckWait(featureId): CheckWaitSpan | undefined {
      const span = tracer.startSpan('kana-meter check wait', {
        kind: SpanKind.INTERNAL,
        attributes: { [ATTR.feature]: featureId },
      });
      if (!span.isRecording()) return undefined;
      const spanContext = trace.setSpan(context.active(), span);
      return {
        run: (lookUp) => context.with(spanContext, lookUp),
        end(source, error) {
          span.setAttribute('kana_meter.decision.source', source);
          if (error !== undefined && source !== 'kana') {
            span.setAttribute(ATTR.errorType, errorType(error));
          }
          span.end();
        },
      };
    },

    wrapLogger: (logger) => withTraceIds(logger),
  };

  function startCall(
    call: KanaCallDescription,
    parent: Context | undefined,
    links: readonly unknown[] | undefined,
  ): KanaCallSpan | undefined {
    const type = call.operation === 'usage' ? 'mutation' : 'query';
    const attributes: Attributes = {
      'graphql.operation.name': call.name,
      'graphql.operation.type': type,
      'http.request.method': 'POST',
      [ATTR.operation]: call.operation,
      'kana_meter.attempt': call.attempt,
      ...serverAttributes(call.endpoint),
    };
    if (call.attempt > 1) attributes['http.request.resend_count'] = call.attempt - 1;
    if (call.checks !== undefined) attributes['kana_meter.checks'] = call.checks;
    const span = tracer.startSpan(
      `${type} ${call.name}`,
      {
        kind: SpanKind.CLIENT,
        attributes,
        links: links?.flatMap((linked) => {
          const linkedContext = linked === undefined ? undefined : trace.getSpanContext(linked as Context);
          return linkedContext === undefined ? [] : [{ context: linkedContext }];
        }),
      },
      parent ?? ROOT_CONTEXT,
    );
    if (!span.isRecording()) return undefined;
    return traced(span, parent ?? ROOT_CONTEXT);
  }

  return {
    bind(stats) {
      if (bound) {
        throw new TypeError(
          'kana-meter: option `metrics`: this openTelemetry() is already bound to another kanaMeter(); create one per kanaMeter().',
        );
      }
      bound = true;
      observe(stats, (meterProvider ?? otelMetrics.getMeterProvider()).getMeter(INSTRUMENTATION_SCOPE));
    },

    observeKanaCall(call: KanaCall) {
      const key = `${call.operation}:${call.outcome}`;
      let attributes = callAttributes.get(key);
      if (attributes === undefined) {
        attributes = { [ATTR.operation]: call.operation, [ATTR.callOutcome]: call.outcome };
        callAttributes.set(key, attributes);
      }
      durations?.record(call.durationMs / 1000, attributes);
    },

    observeUsage(kind, userId, featureId, count, reason) {
      const tally = unitTally(userId, featureId);
      if (kind === 'captured') {
        tally.captured += count;
        keepLink(userId, featureId);
      } else if (kind === 'delivered') {
        tally.delivered += count;
      } else {
        const byReason = kind === 'failed' ? tally.failed : tally.dropped;
        const why = reason ?? 'unknown';
        byReason.set(why, (byReason.get(why) ?? 0) + count);
        // Usage that will not be delivered: no batch will link its requests.
        takeLinks(userId, featureId);
      }
    },

    observeDecision(decision: EntitlementDecision, shadow: boolean) {
      const outcome = decisionOutcome(decision, shadow);
      const went = decision.allowed || shadow;
      let counts = decisions.get(decision.featureId);
      if (counts === undefined) {
        counts = new Float64Array(OUTCOMES.length * 2);
        decisions.set(decision.featureId, counts);
        decisionAttributes.set(
          decision.featureId,
          OUTCOMES.flatMap((name) =>
            [false, true].map((allowed) => decisionAttributeSet(decision.featureId, name, allowed)),
          ),
        );
      }
      const index = outcome * 2 + (went ? 1 : 0);
      counts[index] = (counts[index] as number) + 1;
    },

    tracing,
  } satisfies KanaMeterMetrics;
}

function decisionAttributeSet(featureId: string, outcome: DecisionOutcome, allowed: boolean): Attributes {
  return { [ATTR.feature]: featureId, [ATTR.outcome]: outcome, [ATTR.allowed]: allowed };
}

/** The index in OUTCOMES of a decision's outcome: where it came from when Kana could not be asked, else what it said. */
function decisionOutcome(decision: EntitlementDecision, shadow: boolean): number {
  switch (decision.source) {
    case 'fallback':
      return 3;
    case 'stale':
      return 4;
    case 'replay':
      return 6;
    default:
      if (!decision.allowed && shadow) return 5;
      return decision.reason === 'limit-reached' ? 1 : decision.reason === 'not-in-plan' ? 2 : 0;
  }
}

/** A span for a call in flight: run in its context, end with its outcome. */
function traced(span: Span, parent: Context): KanaCallSpan {
  const spanContext = trace.setSpan(parent, span);
  return {
    run: (call) => context.with(spanContext, call),
    end(outcome: KanaCallOutcome, status, error) {
      span.setAttribute(ATTR.callOutcome, outcome);
      if (status !== undefined) span.setAttribute('http.response.status_code', status);
      if (outcome !== 'ok') {
        span.setAttribute(ATTR.errorType, outcome);
        span.setStatus({ code: SpanStatusCode.ERROR, message: describe(outcome, error) });
      }
      span.end();
    },
  };
}

/** What an untraced attempt gets: runs the call, records nothing. */
const NOT_TRACED: KanaCallSpan = { run: (call) => call(), end() {} };

/** server.address, server.port and url.full of Kana's endpoint (never credentials: the key is a header). */
const serverAttributesCache = new Map<string, Attributes>();
function serverAttributes(endpoint: string): Attributes {
  let attributes = serverAttributesCache.get(endpoint);
  if (attributes === undefined) {
    try {
      const url = new URL(endpoint);
      const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
      url.username = '';
      url.password = '';
      attributes = { 'server.address': url.hostname, 'server.port': port, 'url.full': url.href };
    } catch {
      attributes = {};
    }
    serverAttributesCache.set(endpoint, attributes);
  }
  return attributes;
}

function describe(outcome: string, error: unknown): string {
  const message = (error as { message?: unknown } | null | undefined)?.message;
  return typeof message === 'string' ? `${outcome}: ${message}` : outcome;
}

function errorType(error: unknown): string {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' ? code : 'KANA_METER_INTERNAL_ERROR';
}

/**
 * kana-meter's logger, adding `trace_id`, `span_id` and `trace_flags` (the names of
 * OpenTelemetry's pino instrumentation) to each line written while a span is active.
 */
function withTraceIds(logger: KanaLogger): KanaLogger {
  const write = (level: 'error' | 'warn' | 'info' | 'debug') => (object: object, message: string) => {
    const spanContext = trace.getSpan(context.active())?.spanContext();
    if (spanContext === undefined || !isSpanContextValid(spanContext)) {
      logger[level](object, message);
      return;
    }
    logger[level](
      {
        ...object,
        trace_id: spanContext.traceId,
        span_id: spanContext.spanId,
        trace_flags: `0${spanContext.traceFlags.toString(16)}`,
      },
      message,
    );
  };
  return { error: write('error'), warn: write('warn'), info: write('info'), debug: write('debug') };
}

interface ParsedOptions {
  meterProvider: MeterProvider | undefined;
  tracerProvider: TracerProvider | undefined;
  recordUserId: boolean;
}

function parseOpenTelemetryOptions(options: OpenTelemetryOptions): ParsedOptions {
  if (typeof options !== 'object' || options === null) {
    throw optionError('openTelemetry options', options, 'an object such as { meterProvider, tracerProvider }');
  }
  rejectUnknownKeys('openTelemetry.', options, OPTIONS);
  const { meterProvider, tracerProvider, recordUserId = false } = options;
  if (meterProvider !== undefined && typeof (meterProvider as Partial<MeterProvider> | null)?.getMeter !== 'function') {
    throw optionError('openTelemetry.meterProvider', meterProvider, 'a MeterProvider (with getMeter), or undefined');
  }
  if (
    tracerProvider !== undefined &&
    typeof (tracerProvider as Partial<TracerProvider> | null)?.getTracer !== 'function'
  ) {
    throw optionError(
      'openTelemetry.tracerProvider',
      tracerProvider,
      'a TracerProvider (with getTracer), or undefined',
    );
  }
  if (typeof recordUserId !== 'boolean') {
    throw optionError('openTelemetry.recordUserId', recordUserId, 'true or false');
  }
  return { meterProvider, tracerProvider, recordUserId };
}
