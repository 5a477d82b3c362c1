// The breaker in front of entitlement checks: while Kana is unavailable, requests are decided at once, and one probe at a time, backing off, finds out whether it is back.

import { type BackoffSettings, backoffDelay } from '../config/backoff.js';
import { KanaError, logCodes, summarizeKanaError } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import type { Counter } from '../config/stats.js';
import type { EntitlementQuery } from '../kana/client.js';

/** The delay between probes: `retry`'s backoff settings, as delivery's outage probes use them. */
export type ProbeBackoff = BackoffSettings;

/** Shortest and longest wait between two probes, whatever `retry` or a `Retry-After` says. */
export const MIN_PROBE_DELAY_MS = 50;
export const MAX_PROBE_DELAY_MS = 5 * 60_000;

/**
 * Whether a failed check call means Kana is unavailable: no answer in time, unreachable, 429, 5xx,
 * an answer that is not GraphQL (the retry table's transient rows). An error Kana answered about
 * the check itself (a bad key, an unknown user) is an answer: it does not open the breaker.
 */
export function isUnavailable(error: unknown): error is KanaError {
  return error instanceof KanaError && error.retryable && error.code !== 'KANA_ABORTED';
}

export interface CheckBreakerOptions {
  backoff: ProbeBackoff;
  logger: KanaLogger;
  counters: Record<Counter, number>;
  /** For the log line: what requests get meanwhile when they have no stale answer. */
  onKanaError: 'allow' | 'deny';
  /** Sends one check, bypassing the breaker; settles once its outcome has reached succeeded() or failed(). */
  probe: (query: EntitlementQuery) => Promise<unknown>;
  /** The clock. @default Date.now */
  now?: () => number;
}

interface Open {
  readonly since: number;
  /** The latest failure: what requests decided meanwhile carry as their `error`. */
  error: KanaError;
  /** The next probe asks this: the check a request wanted most recently. */
  query: EntitlementQuery;
  failedProbes: number;
  timer: NodeJS.Timeout | undefined;
}

/** Open (checks unavailable) or closed; logs each transition once and counts outages. */
export class CheckBreaker {
  readonly #options: CheckBreakerOptions;
  readonly #now: () => number;
  #open: Open | undefined;
  #stopped = false;

  constructor(options: CheckBreakerOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** True while checks are unavailable: decide at once, do not ask Kana. */
  get isOpen(): boolean {
    return this.#open !== undefined;
  }

  /** The failure that keeps the breaker open. */
  get error(): KanaError | undefined {
    return this.#open?.error;
  }

  /** A request wanted this check while the breaker is open: the next probe asks it. */
  wanted(query: EntitlementQuery): void {
    if (this.#open) this.#open.query = query;
  }

  /** Kana answered a check call (even with errors about single checks). */
  succeeded(): void {
    const open = this.#open;
    if (!open) return;
    this.#open = undefined;
    clearTimeout(open.timer);
    this.#options.logger.info(
      { code: logCodes.checksAvailable, unavailableMs: this.#now() - open.since, failedProbes: open.failedProbes },
      'kana-meter: entitlement checks are answered again; requests wait for Kana again',
    );
  }

  /** A check call failed; returns whether the failure means Kana is unavailable (the breaker is open then). */
  failed(error: unknown, query: EntitlementQuery): boolean {
    if (!isUnavailable(error)) {
      this.succeeded(); // Kana answered, if only with an error
      return false;
    }
    if (this.#open !== undefined) {
      this.#open.error = error;
      return true;
    }
    this.#open = { since: this.#now(), error, query, failedProbes: 0, timer: undefined };
    this.#options.counters.checkOutages++;
    this.#options.logger.warn(
      {
        code: logCodes.checksUnavailable,
        err: summarizeKanaError(error),
        userId: query.userId,
        featureId: query.featureId,
        onKanaError: this.#options.onKanaError,
      },
      `kana-meter: entitlement checks are failing; until a probe gets through, requests are decided at once from stale answers, else ${this.#options.onKanaError === 'allow' ? 'allowed' : 'refused with 503'} (onKanaError)`,
    );
    this.#scheduleProbe();
    return true;
  }

  /** No more probes (kanaMeter closed). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#open?.timer);
  }

  #scheduleProbe(): void {
    const open = this.#open as Open;
    if (this.#stopped) return;
    const backoff = backoffDelay(this.#options.backoff, open.failedProbes);
    const wanted = Math.max(backoff, open.error.retryAfterMs ?? 0, MIN_PROBE_DELAY_MS);
    const delay = Math.min(wanted, MAX_PROBE_DELAY_MS);
    open.timer = setTimeout(() => this.#runProbe(open), delay);
    open.timer.unref();
  }

  /** One probe; its outcome reaches succeeded() or failed() like any check's, then this schedules the next if still open. */
  #runProbe(open: Open): void {
    open.timer = undefined;
    if (this.#open !== open || this.#stopped) return;
    const done = () => {
      if (this.#open !== open) return;
      open.failedProbes++;
      this.#options.logger.debug(
        { code: logCodes.checksUnavailable, err: summarizeKanaError(open.error), failedProbes: open.failedProbes },
        'kana-meter: entitlement checks are still failing',
      );
      this.#scheduleProbe();
    };
    this.#options.probe(open.query).then(done, done);
  }
}
