// The telemetry seam beyond stats(): usage and decisions as they happen, and the tracing hooks (Kana calls, check waits, delivery batches, log lines).

import type { EntitlementDecision } from './decision.js';
import { KanaError, logCodes } from './errors.js';
import type { KanaLogger } from './logger.js';
import type { KanaCallOperation, KanaCallOutcome, KanaMeterMetrics } from './metrics.js';
import type { Counter } from './stats.js';
import { isPromise } from './thenable.js';

/**
 * What became of usage units: `captured` (accepted for delivery), `delivered` (Kana confirmed
 * them), `failed` (reported undeliverable) or `dropped` (`maxPendingKeys` reached, no spool).
 */
export type UsageKind = 'captured' | 'delivered' | 'failed' | 'dropped';

/**
 * Told of usage units as they are captured, delivered, failed or dropped. Positional, because it
 * runs once per captured request: nothing is allocated to call it. `reason` is the `KanaError`
 * code of a failure, or the log code of a drop.
 */
export type ObserveUsage = (
  kind: UsageKind,
  userId: string,
  featureId: string,
  units: number,
  reason: string | undefined,
) => void;

/**
 * Told of each enforced request's decision, once per request and feature checked. `shadow`: the
 * route is in shadow mode (a refusal was not enforced).
 */
export type ObserveDecision = (decision: EntitlementDecision, shadow: boolean) => void;

/** One Kana call attempt in flight, as a span: `run` calls it in the span's context, `end` records how it ended. */
export interface KanaCallSpan {
  run<T>(call: () => T): T;
  end(outcome: KanaCallOutcome, status: number | undefined, error: unknown): void;
}

/** A delivery batch (one user and feature), from its first attempt to its last; the attempts are its children. */
export interface DeliverySpan {
  run<T>(send: () => T): T;
  /** One attempt of the batch's usage call, a child of the batch. */
  attempt(call: KanaCallDescription): KanaCallSpan;
  end(outcome: KanaCallOutcome | 'requeued', error: unknown): void;
}

/** An enforced request waiting for its entitlement (a cache miss): `run` asks Kana in its context. */
export interface CheckWaitSpan {
  run<T>(lookUp: () => T): T;
  end(source: string, error: unknown): void;
}

/** What a Kana call span is named after and where it goes. */
export interface KanaCallDescription {
  readonly operation: KanaCallOperation;
  /** The GraphQL operation: createUsageEvent, recordUsage, checkEntitlement(s). */
  readonly name: string;
  readonly endpoint: string;
  /** 1 for the first attempt (a check re-asked after its data was lost is attempt 2). */
  readonly attempt: number;
  /** Checks sent in this call (entitlement checks only). */
  readonly checks?: number;
}

/**
 * Tracing hooks a metrics integration may carry (`kana-meter/opentelemetry` does): kana-meter
 * calls them on cache misses, per delivery batch and per Kana call, never per cached request;
 * `currentContext` runs once per capture. Every hook may return undefined: nothing is traced.
 * Experimental: the shape may change in a minor version.
 */
export interface KanaMeterTracing {
  /** The active trace context now (opaque), or undefined when there is none; kept with a check waiting for a call. */
  currentContext(): unknown;
  /** A span for a delivery batch, linked to the requests whose usage it carries; a root of its own trace. */
  startDelivery(userId: string, featureId: string, units: number, probe: boolean): DeliverySpan | undefined;
  /** A span for a check call: a child of `parent` (a `currentContext()`), linked to the other checks it carries. */
  startKanaCall(call: KanaCallDescription, parent: unknown, links: readonly unknown[]): KanaCallSpan | undefined;
  /** A span for an enforced request's wait for its entitlement, a child of the active span (the request's). */
  startCheckWait(featureId: string): CheckWaitSpan | undefined;
  /** The logger kana-meter writes to: the integration may add the active trace id to its lines. */
  wrapLogger?(logger: KanaLogger): KanaLogger;
}

/** The telemetry a kanaMeter() was given, resolved once: each undefined when its integration lacks it. */
export interface Telemetry {
  readonly observeUsage: ObserveUsage | undefined;
  readonly observeDecision: ObserveDecision | undefined;
  readonly tracing: KanaMeterTracing | undefined;
}

export const NO_TELEMETRY: Telemetry = Object.freeze({
  observeUsage: undefined,
  observeDecision: undefined,
  tracing: undefined,
});

/** Failures of one hook logged in full: the first, then one in LOG_EVERY (every one is counted). */
const LOG_EVERY = 1000;

/**
 * The optional hooks of a `metrics` integration, each guarded like `observeKanaCall`: what it
 * throws is counted in `hookErrors` and logged, never passed on to a request or to delivery.
 */
export function resolveTelemetry(
  metrics: KanaMeterMetrics | undefined,
  counters: Record<Counter, number>,
  logger: KanaLogger,
): Telemetry {
  if (metrics === undefined) return NO_TELEMETRY;
  const failedHook = (hook: string) => {
    let failures = 0;
    return (error: unknown) => {
      counters.hookErrors++;
      if (failures++ % LOG_EVERY !== 0) return;
      logger.error(
        { code: logCodes.hookFailed, hook, err: error, failures },
        `kana-meter: ${hook} threw; metering goes on (logged once per ${LOG_EVERY} failures)`,
      );
    };
  };
  const { observeUsage, observeDecision, tracing } = metrics;
  let guardedUsage: ObserveUsage | undefined;
  if (typeof observeUsage === 'function') {
    const failed = failedHook('metrics.observeUsage');
    guardedUsage = (kind, userId, featureId, units, reason) => {
      try {
        observeUsage.call(metrics, kind, userId, featureId, units, reason);
      } catch (error) {
        failed(error);
      }
    };
  }
  let guardedDecision: ObserveDecision | undefined;
  if (typeof observeDecision === 'function') {
    const failed = failedHook('metrics.observeDecision');
    guardedDecision = (decision, shadow) => {
      try {
        observeDecision.call(metrics, decision, shadow);
      } catch (error) {
        failed(error);
      }
    };
  }
  return { observeUsage: guardedUsage, observeDecision: guardedDecision, tracing };
}

/** How a Kana call attempt that threw ended: its KanaError's code and HTTP status, or an internal error (a bug of ours). */
export function failedCall(error: unknown): { outcome: KanaCallOutcome; status: number | undefined } {
  return error instanceof KanaError
    ? { outcome: error.code, status: error.status }
    : { outcome: logCodes.internalError, status: undefined };
}

/** Runs an entitlement lookup in its wait's span, and ends the span when the lookup has its answer (at once, or later). */
export function traceLookup<L extends { readonly source: string; readonly error: unknown }>(
  wait: CheckWaitSpan,
  lookUp: () => L | Promise<L>,
): L | Promise<L> {
  let found: L | Promise<L>;
  try {
    found = wait.run(lookUp);
  } catch (error) {
    wait.end('error', error);
    throw error;
  }
  if (!isPromise(found)) {
    wait.end(found.source, found.error);
    return found;
  }
  return found.then(
    (lookup) => {
      wait.end(lookup.source, lookup.error);
      return lookup;
    },
    (error: unknown) => {
      wait.end('error', error);
      throw error;
    },
  );
}

/** The config with its logger wrapped by the `metrics` integration's tracing (trace ids on each line), when it offers that. */
export function withTracedLogger<
  C extends { readonly logger: KanaLogger; readonly metrics: KanaMeterMetrics | undefined },
>(config: C): C {
  const tracing = config.metrics?.tracing;
  if (typeof tracing?.wrapLogger !== 'function') return config;
  return Object.freeze({ ...config, logger: tracing.wrapLogger(config.logger) });
}
