// kana-meter/prometheus: a KanaMeterMetrics backed by prom-client, reading stats() at scrape time.

import {
  register as globalRegistry,
  type OpenMetricsContentType,
  Counter as PromCounter,
  Gauge as PromGauge,
  Histogram as PromHistogram,
  type Registry,
} from 'prom-client';
import type { KanaCall, KanaMeterMetrics } from '../config/metrics.js';
import { hasMethods, knownKeys, optionError, rejectUnknownKeys } from '../config/option-checks.js';
import type { Counter, KanaMeterStats, StoreCounter } from '../config/stats.js';

export type { KanaCall, KanaMeterMetrics } from '../config/metrics.js';

export interface PrometheusMetricsOptions {
  /**
   * The prom-client registry the metrics are registered in.
   * @default prom-client's global `register`
   * @example new Registry()
   */
  register?: Registry | Registry<OpenMetricsContentType>;
  /**
   * Put before every metric name: a Prometheus name prefix (letters, digits, `_`, `:`), or `''`.
   * @default 'kana_meter_'
   * @example 'billing_kana_'
   */
  prefix?: string;
  /**
   * Upper bounds of the Kana call duration histogram's buckets, in seconds, increasing.
   * @default [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
   * @example [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10]
   */
  buckets?: readonly number[];
}

export const DEFAULT_PREFIX = 'kana_meter_';

/** prom-client's own defaults: from 5 ms to 10 s, the default timeout of a usage call. */
export const DEFAULT_BUCKETS: readonly number[] = Object.freeze([
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]);

/** The name (after the prefix) and HELP of the Prometheus counter for each counter of stats(). */
const COUNTERS: Readonly<Record<Counter | StoreCounter, readonly [name: string, help: string]>> = {
  captured: ['events_captured_total', 'Usage events accepted for delivery.'],
  delivered: ['events_delivered_total', 'Usage events Kana confirmed.'],
  failed: ['events_failed_total', 'Usage events reported undeliverable (logged, passed to onDeliveryFailure).'],
  dropped: [
    'events_dropped_total',
    'Usage events dropped because maxPendingKeys keys were waiting and there is no spool (passed to onDrop).',
  ],
  spilled: ['events_spilled_total', 'Usage events written to the spool because maxPendingKeys keys were waiting.'],
  replayed: ['events_replayed_total', 'Usage events read from the spool at start, left there by an earlier run.'],
  calls: ['usage_calls_total', 'Usage calls made to Kana, retries and outage probes included.'],
  retries: ['usage_call_retries_total', 'Usage calls retried after a transient failure.'],
  skippedNoUser: [
    'requests_without_user_total',
    'Successful metered requests not billed because userId gave undefined, null or an empty string.',
  ],
  invalidDelta: ['invalid_deltas_total', 'Usage not sent because its delta was not an integer in 1..2147483647.'],
  userIdErrors: ['user_id_errors_total', 'Requests not metered because the userId option threw or rejected.'],
  hookErrors: ['hook_errors_total', 'Errors thrown by user hooks and by the metrics integration.'],
  spoolErrors: ['spool_errors_total', 'Failed writes to the spool.'],
  internalErrors: [
    'internal_errors_total',
    "Errors of kana-meter's own (bugs, not Kana nor the network) while sending usage; the usage was kept.",
  ],
  allowed: [
    'enforcement_allowed_total',
    'Enforced requests allowed, failed-open ones included (shadow mode would-be refusals are counted in enforcement_shadow_denied_total).',
  ],
  denied: ['enforcement_denied_total', "Enforced requests refused: 402, 429, or 503 with onKanaError 'deny'."],
  cacheHits: [
    'enforcement_cache_hits_total',
    'Enforced requests decided from a cached entitlement, without a Kana call.',
  ],
  failedOpen: [
    'enforcement_failed_open_total',
    "Enforced requests let through because their entitlement check failed (onKanaError 'allow').",
  ],
  unchecked: [
    'enforcement_unchecked_total',
    'Enforced requests not checked (nor billed) because userId gave no id or failed.',
  ],
  checks: [
    'entitlement_checks_total',
    'Entitlement checks sent to Kana: one per cache miss, shared by concurrent misses.',
  ],
  checkErrors: [
    'entitlement_check_errors_total',
    'Entitlement checks that failed: Kana unreachable, too slow (checkTimeoutMs) or answering an error.',
  ],
  checkCalls: [
    'entitlement_check_calls_total',
    'GraphQL calls made for entitlement checks: batches of checks, re-asks and probes.',
  ],
  checkOutages: [
    'entitlement_check_outages_total',
    'Times entitlement checks became unavailable (timeouts, Kana unreachable, 429, 5xx).',
  ],
  staleHits: [
    'enforcement_stale_hits_total',
    'Enforced requests decided from an expired answer because Kana could not be asked (staleIfError).',
  ],
  shadowDenied: [
    'enforcement_shadow_denied_total',
    "Requests enforce: 'shadow' would have refused; they were served and billed.",
  ],
  idempotentReplays: [
    'idempotent_replays_total',
    'Requests answered with a stored Idempotency-Key response: the handler did not run, nothing was billed.',
  ],
  idempotencyEvictions: [
    'idempotency_evictions_total',
    'Idempotency keys dropped before their TTL because idempotencyKey.maxKeys or maxBytes were reached.',
  ],
  sharedAnswers: [
    'shared_answers_total',
    "Entitlement answers taken from the store, fresh from another instance's check, without a Kana call.",
  ],
  storeFallbacks: [
    'store_fallbacks_total',
    'Enforced decisions and check() calls made by this instance alone because the store could not be asked.',
  ],
  storeCommands: ['store_commands_total', 'Commands sent to the store (Redis) over the network.'],
  storeFailures: ['store_failures_total', 'Store commands that failed or timed out.'],
  storeOutages: ['store_outages_total', 'Times the store went from available to unreachable.'],
  refusedNoUser: [
    'enforcement_refused_no_user_total',
    "Enforced requests refused with 401 because userId gave no id or failed (anonymous: 'refuse').",
  ],
  auditErrors: ['audit_errors_total', 'Audit trail lines that could not be written (full disk, unwritable file).'],
  gateTimeouts: [
    'enforcement_gate_timeouts_total',
    "Enforced requests not decided within the gate's bound: onKanaError decided them.",
  ],
  storeTimeouts: ['store_timeouts_total', 'Store calls that did not settle within their time limit.'],
};

type GaugeField = Exclude<keyof KanaMeterStats, Counter | StoreCounter>;

/** The name (after the prefix), HELP and value of the Prometheus gauge for each gauge of stats(). */
const GAUGES: Readonly<
  Record<GaugeField, readonly [name: string, help: string, value: (stats: KanaMeterStats) => number]>
> = {
  pending: [
    'pending_events',
    'Usage events captured and not delivered or failed yet: waiting, being retried or in flight.',
    (stats) => stats.pending,
  ],
  pendingKeys: ['pending_keys', 'Distinct (user, feature) keys waiting or in flight.', (stats) => stats.pendingKeys],
  inFlight: ['usage_calls_in_flight', 'Usage calls to Kana in flight now.', (stats) => stats.inFlight],
  kanaAvailable: [
    'kana_available',
    '1 while Kana is available; 0 during an outage, when sending is paused and a probe retries with backoff.',
    (stats) => (stats.kanaAvailable ? 1 : 0),
  ],
  checksAvailable: [
    'checks_available',
    '1 while entitlement checks are answered; 0 while they are unavailable, requests are decided at once and a probe retries with backoff.',
    (stats) => (stats.checksAvailable ? 1 : 0),
  ],
  entitlements: ['cached_entitlements', '(user, feature) entitlements in the cache.', (stats) => stats.entitlements],
  storeAvailable: [
    'store_available',
    '1 while the store (Redis) answers; 0 while it is unreachable and decisions are made per instance.',
    (stats) => (stats.storeAvailable ? 1 : 0),
  ],
  storeLeases: [
    'store_leases',
    '(user, feature) keys this instance holds a lease on: units reserved in the store.',
    (stats) => stats.storeLeases,
  ],
  storeLeasedUnits: [
    'store_leased_units',
    'Units reserved by this instance and not spent yet, over every lease it holds.',
    (stats) => stats.storeLeasedUnits,
  ],
  configError: [
    'config_error',
    '1 while Kana refuses the API key (stats().configError is set): usage cannot be billed and enforced requests get onConfigError; 0 otherwise.',
    (stats) => (stats.configError === null ? 0 : 1),
  ],
};

/** Gauges that say whether something answers: across cluster workers, it does only if it does for every worker. */
const AVAILABILITY_GAUGES = new Set(['kana_available', 'checks_available', 'store_available']);

const HISTOGRAM: readonly [name: string, help: string] = [
  'kana_call_duration_seconds',
  "Duration of each Kana call attempt, by operation ('usage': deliveries, retries, probes; 'check': entitlement checks) and outcome ('ok' or the KanaError code).",
];

const OPTIONS = knownKeys<PrometheusMetricsOptions>({ register: true, prefix: true, buckets: true });

/**
 * A `metrics` integration for kanaMeter() backed by prom-client: counters and gauges that read
 * `stats()` when scraped, and a histogram of Kana call durations. Registers its metrics at once;
 * one object per kanaMeter() (binding it to a second one throws).
 * @example
 * const kana = kanaMeter({ apiKey, userId, metrics: prometheusMetrics() });
 * app.get('/metrics', async (_req, res) => { res.type(register.contentType).send(await register.metrics()); });
 */
export function prometheusMetrics(options: PrometheusMetricsOptions = {}): KanaMeterMetrics {
  const { register, prefix, buckets } = parsePrometheusOptions(options);
  const registers = [register];
  const names = [...Object.values(COUNTERS), ...Object.values(GAUGES), HISTOGRAM].map(([name]) => prefix + name);
  const taken = names.find((name) => register.getSingleMetric(name) !== undefined);
  if (taken !== undefined) {
    throw new TypeError(
      `kana-meter: prometheusMetrics(): the registry already has a metric named ${taken} (from another prometheusMetrics() with the same prefix?); give each one its own \`prefix\` or \`register\`.`,
    );
  }

  let stats: (() => KanaMeterStats) | undefined;
  // One stats() snapshot per scrape: prom-client collects every metric in one synchronous pass,
  // so they all read the same instant (captured, delivered and pending agree).
  let snapshot: KanaMeterStats | undefined;
  const read = (): KanaMeterStats | undefined => {
    if (snapshot === undefined && stats !== undefined) {
      snapshot = stats();
      queueMicrotask(() => {
        snapshot = undefined;
      });
    }
    return snapshot;
  };

  for (const [field, [name, help]] of Object.entries(COUNTERS) as [
    Counter | StoreCounter,
    readonly [string, string],
  ][]) {
    new PromCounter({
      name: prefix + name,
      help,
      registers,
      collect() {
        const current = read();
        if (current === undefined) return;
        this.reset();
        this.inc(current[field]);
      },
    });
  }
  for (const [name, help, value] of Object.values(GAUGES)) {
    new PromGauge({
      name: prefix + name,
      help,
      registers,
      // Across cluster workers (prom-client's AggregatorRegistry): Kana is available only if every worker sees it.
      ...(AVAILABILITY_GAUGES.has(name) ? { aggregator: 'min' as const } : {}),
      // And the key is refused if any worker sees it refused.
      ...(name === 'config_error' ? { aggregator: 'max' as const } : {}),
      collect() {
        const current = read();
        if (current !== undefined) this.set(value(current));
      },
    });
  }
  const durations = new PromHistogram({
    name: prefix + HISTOGRAM[0],
    help: HISTOGRAM[1],
    labelNames: ['operation', 'outcome'] as const,
    buckets: [...buckets],
    registers,
  });

  return {
    bind(kanaStats) {
      if (stats !== undefined) {
        throw new TypeError(
          'kana-meter: option `metrics`: this prometheusMetrics() is already bound to another kanaMeter(); create one per kanaMeter(), each with its own `prefix` or `register`.',
        );
      }
      stats = kanaStats;
    },
    observeKanaCall(call: KanaCall) {
      durations.observe({ operation: call.operation, outcome: call.outcome }, call.durationMs / 1000);
    },
  };
}

interface ParsedOptions {
  register: Registry | Registry<OpenMetricsContentType>;
  prefix: string;
  buckets: readonly number[];
}

function parsePrometheusOptions(options: PrometheusMetricsOptions): ParsedOptions {
  if (typeof options !== 'object' || options === null) {
    throw optionError('prometheusMetrics options', options, "an object such as { register, prefix: 'kana_meter_' }");
  }
  rejectUnknownKeys('prometheusMetrics.', options, OPTIONS);
  const { register = globalRegistry, prefix = DEFAULT_PREFIX, buckets = DEFAULT_BUCKETS } = options;
  if (!hasMethods(register, ['registerMetric', 'getSingleMetric'])) {
    throw optionError('prometheusMetrics.register', register, 'a prom-client Registry, such as new Registry()');
  }
  if (typeof prefix !== 'string' || !/^([a-zA-Z_:][a-zA-Z0-9_:]*)?$/.test(prefix)) {
    throw optionError(
      'prometheusMetrics.prefix',
      prefix,
      "a Prometheus metric name prefix (a letter, '_' or ':', then letters, digits, '_' or ':'), or ''",
    );
  }
  if (
    !Array.isArray(buckets) ||
    buckets.length === 0 ||
    buckets.some(
      (bound, i) =>
        typeof bound !== 'number' || !Number.isFinite(bound) || bound <= 0 || (i > 0 && bound <= buckets[i - 1]),
    )
  ) {
    throw optionError(
      'prometheusMetrics.buckets',
      buckets,
      'a non-empty array of increasing positive numbers of seconds, such as [0.01, 0.1, 1, 10]',
    );
  }
  return { register, prefix, buckets };
}
