// Entitlement checks on their way to Kana: at most checkConcurrency calls in flight, the checks waiting for a slot sent together in one document, none while the breaker is open.

import { KanaError, logCodes, summarizeKanaError } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import { type ObserveKanaCall, timeKanaCall } from '../config/metrics.js';
import type { Counter } from '../config/stats.js';
import type { KanaMeterTracing } from '../config/telemetry.js';
import {
  type CheckResults,
  type EntitlementAnswer,
  type EntitlementQuery,
  type KanaClient,
  MAX_CHECKS_PER_DOCUMENT,
} from '../kana/client.js';
import { isKeyRefusal } from '../kana/key-status.js';
import type { CheckBreaker } from './check-breaker.js';

/**
 * After showUsage fails, checks leave the period out for this long, doubled each time it fails
 * again (up to PERIOD_PAUSE_MAX_MS), back to this once it answers: a key without access to
 * showUsage costs one extra call per pause, not one per check.
 */
export const PERIOD_PAUSE_MS = 60_000;
export const PERIOD_PAUSE_MAX_MS = 60 * 60_000;

/** Calls a check may be lost in (its data nulled by another field's error) before it fails. */
const MAX_ROUNDS = 3;

interface WaitingCheck {
  readonly query: EntitlementQuery;
  readonly resolve: (answer: EntitlementAnswer) => void;
  readonly reject: (error: unknown) => void;
  /** When it was asked: a check does not wait for a slot longer than checkTimeoutMs. */
  readonly since: number;
  /** Calls it was sent in. */
  rounds: number;
  /** The breaker's probe: not a request's check, so not counted in `checks` nor `checkErrors`. */
  readonly probe: boolean;
  /** The trace context it was asked in (the request's wait for it), when traced. */
  readonly context: unknown;
}

export interface CheckQueueOptions {
  client: KanaClient;
  breaker: CheckBreaker;
  /** Time limit of one check call, in ms; also the longest a check waits for a slot. */
  checkTimeoutMs: number;
  /** Most check calls in flight at once. */
  concurrency: number;
  counters: Record<Counter, number>;
  logger: KanaLogger;
  /** For log lines: what requests get when their check fails and they have no stale answer. */
  onKanaError: 'allow' | 'deny';
  /** Told the duration and outcome of each call; when undefined, calls are not timed. */
  observeKanaCall: ObserveKanaCall | undefined;
  /** Traces each call, a child of the first check it carries; undefined: not traced. */
  tracing?: KanaMeterTracing | undefined;
  /** The clock. @default Date.now */
  now?: () => number;
}

export class CheckQueue {
  readonly #options: CheckQueueOptions;
  readonly #now: () => number;
  /** Checks waiting for a slot, oldest first (#head is the next to send). */
  #waiting: WaitingCheck[] = [];
  #head = 0;
  #inFlight = 0;
  #periodPausedUntil = 0;
  #periodPauseMs = PERIOD_PAUSE_MS;
  #periodFailing = false;

  constructor(options: CheckQueueOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Check calls in flight now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Asks Kana for one check: alone when a slot is free, else with the others waiting. Rejects at
   * once, asking nothing, while the breaker is open, unless this is its probe (sent at once).
   */
  ask(query: EntitlementQuery, probe = false): Promise<EntitlementAnswer> {
    const { breaker, counters } = this.#options;
    if (breaker.isOpen && !probe) {
      breaker.wanted(query);
      return Promise.reject(breaker.error);
    }
    if (!probe) counters.checks++;
    return new Promise((resolve, reject) => {
      // The breaker's probe belongs to no request: its call is a trace of its own.
      const context = probe ? undefined : this.#options.tracing?.currentContext();
      const check: WaitingCheck = { query, resolve, reject, since: this.#now(), rounds: 0, probe, context };
      if (probe) {
        void this.#send([check]);
        return;
      }
      this.#waiting.push(check);
      this.#dispatch();
    });
  }

  #dispatch(): void {
    const { concurrency, checkTimeoutMs } = this.#options;
    while (this.#inFlight < concurrency && this.#head < this.#waiting.length) {
      const now = this.#now();
      const batch: WaitingCheck[] = [];
      while (batch.length < MAX_CHECKS_PER_DOCUMENT && this.#head < this.#waiting.length) {
        const check = this.#waiting[this.#head++] as WaitingCheck;
        if (now - check.since < checkTimeoutMs) batch.push(check);
        else this.#fail(check, slotTimeout(checkTimeoutMs));
      }
      if (batch.length > 0) void this.#send(batch);
    }
    if (this.#head === this.#waiting.length) {
      this.#waiting = [];
      this.#head = 0;
    }
  }

  async #send(batch: WaitingCheck[]): Promise<void> {
    const { client, breaker, checkTimeoutMs, observeKanaCall, counters, tracing } = this.#options;
    this.#inFlight++;
    counters.checkCalls++;
    const period = this.#now() >= this.#periodPausedUntil;
    const queries = batch.map((check) => {
      check.rounds++;
      return check.query;
    });
    const call = () => client.checkEntitlements(queries, { timeoutMs: checkTimeoutMs, period });
    const span = tracing && traceCheckCall(tracing, client.endpoint, batch);
    try {
      let results: CheckResults;
      try {
        results = await (observeKanaCall === undefined && span === undefined
          ? call()
          : timeKanaCall(observeKanaCall, 'check', call, span));
      } catch (error) {
        this.#callFailed(batch, error);
        return;
      }
      breaker.succeeded();
      this.#read(batch, results, period);
    } finally {
      this.#inFlight--;
      this.#dispatch();
    }
  }

  #callFailed(batch: WaitingCheck[], error: unknown): void {
    const first = (batch[0] as WaitingCheck).query;
    if (this.#options.breaker.failed(error, first)) {
      // Kana is unavailable (the breaker logged it once): the checks waiting for a slot fail now too.
      const waiting = this.#waiting.slice(this.#head);
      this.#waiting = [];
      this.#head = 0;
      for (const check of batch) this.#fail(check, error);
      for (const check of waiting) this.#fail(check, error);
      return;
    }
    // Kana answered the whole call with an error (a bad key, a rejected document): every check in it fails.
    // A refused key is logged by KeyStatus, at most once a minute, not once per check.
    if (!isKeyRefusal(error)) this.#logFailure(first, error, batch.length);
    for (const check of batch) this.#fail(check, error);
  }

  #read(batch: WaitingCheck[], { outcomes, periodError }: CheckResults, period: boolean): void {
    if (period) this.#periodAnswered(periodError);
    const lost: WaitingCheck[] = [];
    outcomes.forEach((outcome, i) => {
      const check = batch[i] as WaitingCheck;
      if (outcome === 'lost') {
        if (check.rounds < MAX_ROUNDS) lost.push(check);
        else
          this.#fail(
            check,
            new KanaError('KANA_BAD_RESPONSE', 'Kana answered no data for this check', { retryable: true }),
          );
      } else if (outcome instanceof KanaError) {
        this.#logFailure(check.query, outcome, 1);
        this.#fail(check, outcome);
      } else {
        check.resolve(outcome);
      }
    });
    // Lost to another field's error: asked again first (without the period, if that was the error).
    if (lost.length > 0) this.#waiting.splice(this.#head, 0, ...lost);
  }

  #periodAnswered(error: KanaError | undefined): void {
    if (error === undefined) {
      this.#periodFailing = false;
      this.#periodPauseMs = PERIOD_PAUSE_MS;
      return;
    }
    const now = this.#now();
    if (now < this.#periodPausedUntil) return; // another call paused it already
    this.#periodPausedUntil = now + this.#periodPauseMs;
    if (!this.#periodFailing) {
      this.#periodFailing = true;
      this.#options.logger.warn(
        { code: logCodes.periodUnavailable, err: summarizeKanaError(error), retryInMs: this.#periodPauseMs },
        'kana-meter: showUsage failed; entitlements are decided from canUseFeature alone, without the period end (no Retry-After), and checks leave the period out for a while',
      );
    }
    this.#periodPauseMs = Math.min(this.#periodPauseMs * 2, PERIOD_PAUSE_MAX_MS);
  }

  #logFailure(query: EntitlementQuery, error: unknown, checks: number): void {
    const { onKanaError, logger } = this.#options;
    logger.error(
      {
        code: logCodes.checkFailed,
        userId: query.userId,
        featureId: query.featureId,
        ...(checks > 1 && { checks }),
        onKanaError,
        err: summarizeKanaError(error),
      },
      `kana-meter: the entitlement check failed; requests waiting for it were decided from a stale answer, else ${onKanaError === 'allow' ? 'allowed' : 'refused with 503'}`,
    );
  }

  #fail(check: WaitingCheck, error: unknown): void {
    if (!check.probe) this.#options.counters.checkErrors++;
    check.reject(error);
  }
}

/** A span for one check call: a child of its first check's context, linked to the others'. */
function traceCheckCall(tracing: KanaMeterTracing, endpoint: string, batch: readonly WaitingCheck[]) {
  const [first] = batch as [WaitingCheck, ...WaitingCheck[]];
  return tracing.startKanaCall(
    {
      operation: 'check',
      name: batch.length === 1 ? 'checkEntitlement' : 'checkEntitlements',
      endpoint,
      attempt: first.rounds,
      checks: batch.length,
    },
    first.context,
    batch.length === 1 ? [] : batch.slice(1).map((check) => check.context),
  );
}

function slotTimeout(checkTimeoutMs: number): KanaError {
  return new KanaError('KANA_TIMEOUT', `the check waited ${checkTimeoutMs} ms for a free slot (checkConcurrency)`, {
    retryable: true,
  });
}
