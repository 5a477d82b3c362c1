// The metrics seam: what a metrics integration implements, its validation, and the guarded, timed Kana call.

import { KanaError, type KanaErrorCode, logCodes } from './errors.js';
import type { KanaLogger } from './logger.js';
import { hasMethods, optionError } from './option-checks.js';
import type { Counter, KanaMeterStats } from './stats.js';
import type { KanaCallSpan, KanaMeterTracing, ObserveDecision, ObserveUsage } from './telemetry.js';
import { isPromise } from './thenable.js';

/** Which kind of Kana call: a usage mutation (deliveries, retries and outage probes) or an entitlement check. */
export type KanaCallOperation = 'usage' | 'check';

/**
 * How a Kana call attempt ended: `'ok'`, the `KanaError` code it failed with, or
 * `'KANA_METER_INTERNAL_ERROR'` when kana-meter's own code threw (a bug).
 */
export type KanaCallOutcome = 'ok' | KanaErrorCode | typeof logCodes.internalError;

/** One Kana call attempt, as `observeKanaCall` receives it. */
export interface KanaCall {
  readonly operation: KanaCallOperation;
  /** From just before the call to its answer or failure, in milliseconds (`performance.now()`). */
  readonly durationMs: number;
  readonly outcome: KanaCallOutcome;
}

/**
 * A metrics integration, given to kanaMeter's `metrics` option. kana-meter calls it only when it
 * is created and once per Kana call attempt, never per HTTP request. `prometheusMetrics()` from
 * `kana-meter/prometheus` is one.
 */
export interface KanaMeterMetrics {
  /**
   * Called once by kanaMeter(), at creation: keep `stats` and read it when scraped. A throw here
   * is a programmer error (for example, binding one metrics object to two kanaMeter instances):
   * kanaMeter() throws it.
   */
  bind(stats: () => KanaMeterStats): void;
  /**
   * Called after every Kana call attempt: usage deliveries (each retry and outage probe is one),
   * and entitlement checks. What it throws or rejects is logged (`KANA_METER_HOOK_FAILED`) and
   * counted in `stats().hookErrors`, never passed on to delivery or a request.
   */
  observeKanaCall(call: KanaCall): void;
  /**
   * Optional: told of usage units per (user, feature) as they are captured (once per billed
   * request: keep it cheap), delivered, failed or dropped. Guarded like `observeKanaCall`.
   */
  observeUsage?: ObserveUsage;
  /** Optional: told of each enforced request's decision (once per request: keep it cheap). Guarded like `observeKanaCall`. */
  observeDecision?: ObserveDecision;
  /** Optional, experimental: spans for Kana calls, check waits and delivery batches (see `openTelemetry()`). */
  tracing?: KanaMeterTracing;
}

/** kana-meter's own view of `observeKanaCall`: positional, and never throws. */
export type ObserveKanaCall = (operation: KanaCallOperation, durationMs: number, outcome: KanaCallOutcome) => void;

export function parseMetrics(value: unknown): KanaMeterMetrics | undefined {
  if (value === undefined) return undefined;
  if (!hasMethods(value, ['bind', 'observeKanaCall'])) {
    throw optionError(
      'metrics',
      value,
      "an object with bind(stats) and observeKanaCall(call) methods, such as prometheusMetrics() from 'kana-meter/prometheus'",
    );
  }
  return value as KanaMeterMetrics;
}

/** Failures of one metrics object logged in full: the first, then one in LOG_EVERY (every one is counted). */
const LOG_EVERY = 1000;

/**
 * Wraps `metrics.observeKanaCall` so that a throw or a rejection is counted in `hookErrors` and
 * logged, never passed on. A broken metrics object fails on every call, so the log gets the first
 * failure and then one line per LOG_EVERY, each with the running count.
 */
export function guardObserveKanaCall(
  metrics: KanaMeterMetrics,
  counters: Record<Counter, number>,
  logger: KanaLogger,
): ObserveKanaCall {
  let failures = 0;
  const failed = (error: unknown) => {
    counters.hookErrors++;
    if (failures++ % LOG_EVERY !== 0) return;
    logger.error(
      { code: logCodes.hookFailed, hook: 'metrics.observeKanaCall', err: error, failures },
      `kana-meter: metrics.observeKanaCall threw; Kana calls go on (logged once per ${LOG_EVERY} failures)`,
    );
  };
  return (operation, durationMs, outcome) => {
    try {
      const result: unknown = metrics.observeKanaCall({ operation, durationMs, outcome });
      if (isPromise(result)) result.then(undefined, failed);
    } catch (error) {
      failed(error);
    }
  };
}

/**
 * Makes one Kana call and reports how long it took and how it ended (to `observe`, and to `span`
 * when the call is traced); the call's own result or error passes through.
 */
export function timeKanaCall<T>(
  observe: ObserveKanaCall | undefined,
  operation: KanaCallOperation,
  call: () => Promise<T>,
  span?: KanaCallSpan,
): Promise<T> {
  const started = performance.now();
  return (span === undefined ? call() : span.run(call)).then(
    (value) => {
      observe?.(operation, performance.now() - started, 'ok');
      span?.end('ok', undefined, undefined);
      return value;
    },
    (error: unknown) => {
      // The client throws KanaErrors only; anything else is a bug of ours.
      const outcome = error instanceof KanaError ? error.code : logCodes.internalError;
      observe?.(operation, performance.now() - started, outcome);
      span?.end(outcome, error instanceof KanaError ? error.status : undefined, error);
      throw error;
    },
  );
}
