// The entitlement gate: checks an enforced request before its handler, holds its units until it ends, or refuses it.

import type { ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import type { DecisionSource, EntitlementDecision } from '../config/decision.js';
import { KanaError, logCodes } from '../config/errors.js';
import type { Counter } from '../config/stats.js';
import { NO_TELEMETRY, type Telemetry, traceLookup } from '../config/telemetry.js';
import { isPromise } from '../config/thenable.js';
import { isKeyRefusal } from '../kana/key-status.js';
import type { MeteredFeature } from '../metering/metered-feature.js';
import type { RequestUsage, RequestUsages } from '../metering/request-usage.js';
import { where } from '../metering/routed-path.js';
import { readRequestUser } from '../metering/user-id.js';
import type { KanaMeterConfig } from '../options.js';
import { decisionFrom, fallbackDecision } from './decisions.js';
import { createDeniedResponse } from './denied-response.js';
import type { Lookup } from './entitlement-lookup.js';
import { setRateLimitHeaders } from './entitlement-response.js';
import type { Entitlement, EntitlementCache } from './entitlements.js';
import { configErrorProblem, noUserProblem, sendProblem } from './gate-refusals.js';
import './express-augmentation.js';
import { armDeadline, isDecided, settleStep, stepFor } from './gate-step.js';
import type { Taken } from './key-ledger.js';
import type { Leases } from './leases.js';
import { setDecision } from './request-decision.js';

/** In shadow mode, at most one log line of would-be refusals per this interval (every one is counted). */
export const SHADOW_LOG_INTERVAL_MS = 10_000;

export interface GateOptions {
  config: Pick<
    KanaMeterConfig,
    | 'userId'
    | 'logger'
    | 'onDenied'
    | 'onKanaError'
    | 'rateLimitHeaders'
    | 'enforce'
    | 'idempotencyKey'
    | 'anonymous'
    | 'onConfigError'
    | 'checkTimeoutMs'
  >;
  counters: Record<Counter, number>;
  cache: EntitlementCache;
  /** The kanaMeter's own usage records: its `close` listener reads them. */
  usages: RequestUsages;
  /** Units of the allowance: from this instance's lease, or decided here. */
  leases: Leases;
  /** After a cache miss: Kana, else a stale answer, else nothing. */
  lookUpMissed: (userId: string, featureId: string, delta: number) => Lookup | Promise<Lookup>;
  /** Logs and counts a `userId` that threw, rejected or gave a non-id. */
  userIdFailed: (req: Request, error: unknown) => void;
  /** Whether Kana refuses the API key now (its code), else null. */
  keyStatus: { readonly configError: string | null };
  /**
   * The bound on a gate's wait, from its first wait on: past it, `onKanaError` decides the request
   * (3 x checkTimeoutMs + the store's timeoutMs; see docs/enforcement.md).
   */
  gateTimeoutMs: number;
  /** Told of each decision; traces the wait for a check. @default none */
  telemetry?: Pick<Telemetry, 'observeDecision' | 'tracing'>;
}

/**
 * Creates the gate kanaMeter() runs for enforced mapped routes and meter() for enforced routes.
 * A cache hit decides synchronously and calls next() in the same tick.
 */
export function createGate({
  config,
  counters,
  cache,
  usages,
  leases,
  lookUpMissed,
  userIdFailed,
  keyStatus,
  gateTimeoutMs,
  telemetry = NO_TELEMETRY,
}: GateOptions) {
  const { observeDecision, tracing } = telemetry;
  const { userId: getUserId, logger, onDenied, onKanaError, rateLimitHeaders, enforce, checkTimeoutMs } = config;
  const answerDenied = createDeniedResponse({ onDenied, logger, counters, limitMs: checkTimeoutMs });
  let warnedNoUser = false;
  const { anonymous, onConfigError } = config;
  let shadowLoggedAt = Number.NEGATIVE_INFINITY;
  let shadowNotLogged = 0;

  /**
   * Checks `feature` for this request, then calls next() or refuses it. Once per request and
   * feature: a second gate for a feature already checked (the route map and meter() both name it,
   * or meter() runs twice) goes straight on, under the first one's decision and hold.
   */
  function gate(req: Request, res: Response, next: NextFunction, feature: MeteredFeature, usage: RequestUsage): void {
    if (usage.checked === undefined) {
      usage.checked = [feature.featureId];
      res.on('close', onClose);
    } else if (usage.checked.includes(feature.featureId)) {
      next();
      return;
    } else {
      usage.checked.push(feature.featureId);
    }
    // From here on `next` runs at most once, and a request the gate waits for is decided within gateTimeoutMs.
    const step = stepFor(next);
    try {
      enter(req, res, step, feature, usage);
    } catch (error) {
      gateFailed(req, res, step, feature, usage, error);
    }
  }

  /** Reads the request's user (once per request), then checks it. */
  function enter(req: Request, res: Response, next: NextFunction, feature: MeteredFeature, usage: RequestUsage): void {
    if (usage.userId !== undefined) {
      checkFor(req, res, next, feature, usage, usage.userId);
      return;
    }
    // Read once, before the handler; the same id is billed when the response finishes.
    const waiting = readRequestUser(
      usage,
      () => getUserId(req, res),
      checkTimeoutMs,
      (error) => userIdFailed(req, error),
      (userId) => checkFor(req, res, next, feature, usage, userId),
    );
    if (waiting === undefined) return;
    armDeadline(next, gateTimeoutMs, () => timedOut(req, res, next, feature, usage));
    waiting.catch((error: unknown) => gateFailed(req, res, next, feature, usage, error));
  }

  function checkFor(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    userId: string | null | false,
  ): void {
    if (typeof userId !== 'string') {
      // No user (or userId failed): nothing to check nor bill it to. Refused, unless told otherwise.
      if (anonymous === 'refuse') {
        refuseNoUser(req, res, next, feature, usage);
        return;
      }
      counters.unchecked++;
      if (userId === null && !warnedNoUser) {
        warnedNoUser = true;
        logger.warn(
          { code: logCodes.uncheckedNoUser, featureId: feature.featureId, ...where(req) },
          'kana-meter: an enforced request had no user id, so it was neither checked nor billed. Authentication must run before kanaMeter()/meter() on enforced routes. Logged once.',
        );
      }
      if (!usage.ended) next();
      return;
    }
    checkEntitlement(req, res, next, feature, usage, userId);
  }

  function checkEntitlement(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    userId: string,
  ): void {
    // Kana refuses the key: nothing served now could be billed, whatever the cache says.
    if (onConfigError === 'deny' && keyStatus.configError !== null) {
      refuseConfigError(req, res, next, feature, usage, userId, undefined);
      return;
    }
    const entry = cache.fresh(userId, feature.featureId);
    if (entry !== undefined) {
      counters.cacheHits++;
      take(req, res, next, feature, usage, entry, 'cache', undefined);
      return;
    }
    // Traced: the wait is a span of the request's trace, and the Kana call a child of it.
    const wait = tracing?.startCheckWait(feature.featureId);
    const found =
      wait === undefined
        ? lookUpMissed(userId, feature.featureId, feature.checkDelta)
        : traceLookup(wait, () => lookUpMissed(userId, feature.featureId, feature.checkDelta));
    if (isPromise(found)) {
      armDeadline(next, gateTimeoutMs, () => timedOut(req, res, next, feature, usage));
      found
        .then((lookup) => settle(req, res, next, feature, usage, userId, lookup))
        .catch((error: unknown) => gateFailed(req, res, next, feature, usage, error));
    } else {
      settle(req, res, next, feature, usage, userId, found);
    }
  }

  function settle(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    userId: string,
    lookup: Lookup,
  ): void {
    // A refused key is not an outage: onConfigError decides, not onKanaError nor a stale answer.
    // (Only while this instance's key is refused: another instance's failure shared by the store may be older.)
    if (isKeyRefusal(lookup.error) && keyStatus.configError !== null) {
      refuseConfigError(req, res, next, feature, usage, userId, lookup.error);
      return;
    }
    if (lookup.entry === undefined) fallBack(req, res, next, feature, usage, userId, lookup.error);
    else take(req, res, next, feature, usage, lookup.entry, lookup.source, lookup.error);
  }

  /** Takes the request's units (at once from a lease or Kana's answer, or after a reservation), then decides. */
  function take(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    entry: Entitlement,
    source: DecisionSource,
    error: unknown,
  ): void {
    // The client left while Kana was being asked (nothing to hold, nobody to answer), or the deadline decided.
    if (usage.ended || isDecided(next)) return;
    const taken = leases.take(entry, feature.checkDelta, true);
    if (isPromise(taken)) {
      armDeadline(next, gateTimeoutMs, () => timedOut(req, res, next, feature, usage));
      taken
        .then((units) => decide(req, res, next, feature, usage, entry, source, error, units))
        .catch((failure: unknown) => gateFailed(req, res, next, feature, usage, failure));
    } else {
      decide(req, res, next, feature, usage, entry, source, error, taken);
    }
  }

  function decide(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    entry: Entitlement,
    source: DecisionSource,
    error: unknown,
    taken: Taken,
  ): void {
    if (usage.ended || isDecided(next)) {
      // It ended (or the deadline decided it) while the store was asked: its units go back at once.
      entry.ledger.releaseHeld(taken.held);
      return;
    }
    if (source === 'stale') counters.staleHits++;
    const delta = feature.checkDelta;
    const decision = decisionFrom(entry, delta, source, error, taken);
    setDecision(req, decision);
    const shadow = isShadow(feature);
    observeDecision?.(decision, shadow);
    if (!decision.allowed) {
      refuse(req, res, next, usage, decision, entry, shadow);
      return;
    }
    if (taken.held > 0) usage.holds = { entitlement: entry, delta: taken.held, next: usage.holds };
    counters.allowed++;
    // Shadow mode changes nothing clients see: no RateLimit headers.
    if (rateLimitHeaders && !shadow && decision.remaining !== null && !entry.overageEnabled && !res.headersSent) {
      setRateLimitHeaders(res, entry, decision.remaining);
    }
    next();
  }

  /** Kana could not be asked and has never answered for this user and feature: `onKanaError` decides. */
  function fallBack(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    userId: string,
    error: unknown,
  ): void {
    if (usage.ended || isDecided(next)) return;
    const decision = fallbackDecision(userId, feature.featureId, feature.checkDelta, onKanaError, error);
    setDecision(req, decision);
    observeDecision?.(decision, isShadow(feature));
    if (!decision.allowed) {
      refuse(req, res, next, usage, decision, undefined, isShadow(feature));
      return;
    }
    counters.allowed++;
    counters.failedOpen++;
    next();
  }

  /** No user on an enforced route, `anonymous: 'refuse'`: 401, the handler does not run; shadow mode serves it (unbilled) and counts it. */
  function refuseNoUser(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
  ): void {
    if (usage.ended || isDecided(next)) return;
    const shadow = isShadow(feature);
    if (!warnedNoUser) {
      warnedNoUser = true;
      logger.warn(
        { code: logCodes.refusedNoUser, featureId: feature.featureId, shadow, ...where(req) },
        shadow
          ? 'kana-meter: shadow mode: an enforced request had no user id; enforcement would refuse it with 401 (it was served, unbilled). Authentication must run before kanaMeter()/meter() on enforced routes. Logged once.'
          : "kana-meter: an enforced request had no user id, so it was refused with 401 (anonymous: 'refuse'). Authentication must run before kanaMeter()/meter() on enforced routes. Logged once.",
      );
    }
    if (shadow) {
      counters.unchecked++;
      counters.shadowDenied++;
      next();
      return;
    }
    usage.refused = true;
    counters.refusedNoUser++;
    settleStep(next);
    sendProblem(res, noUserProblem(feature.featureId));
  }

  /** Kana refuses the API key: `onConfigError` decides ('deny': 503, the handler does not run); shadow mode serves it. */
  function refuseConfigError(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    userId: string,
    error: unknown,
  ): void {
    if (usage.ended || isDecided(next)) return;
    const policy = onConfigError === 'deny' ? 'deny' : 'allow';
    setDecision(req, fallbackDecision(userId, feature.featureId, feature.checkDelta, policy, error));
    if (policy === 'allow') {
      counters.allowed++;
      counters.failedOpen++;
      next();
      return;
    }
    if (isShadow(feature)) {
      counters.shadowDenied++;
      next();
      return;
    }
    usage.refused = true;
    counters.denied++;
    settleStep(next);
    sendProblem(res, configErrorProblem(feature.featureId));
  }

  function isShadow(feature: MeteredFeature): boolean {
    return (feature.enforce ?? enforce) === 'shadow';
  }

  function refuse(
    req: Request,
    res: Response,
    next: NextFunction,
    usage: RequestUsage,
    decision: EntitlementDecision,
    entry: Entitlement | undefined,
    shadow: boolean,
  ): void {
    if (shadow) {
      // What enforcement would have refused goes on, and is billed as usual.
      shadowDenied(req, decision);
      next();
      return;
    }
    usage.refused = true;
    counters.denied++;
    // Refused, whatever onDenied does: it gets no `next`, and the deadline has nothing left to decide.
    settleStep(next);
    answerDenied(req, res, decision, entry);
  }

  /** Counts a would-be refusal; logs the first, then at most one line per SHADOW_LOG_INTERVAL_MS. */
  function shadowDenied(req: Request, decision: EntitlementDecision): void {
    counters.shadowDenied++;
    const now = Date.now();
    if (now - shadowLoggedAt < SHADOW_LOG_INTERVAL_MS) {
      shadowNotLogged++;
      return;
    }
    const { userId, featureId, reason, status, source, used, budget } = decision;
    logger.info(
      {
        code: logCodes.shadowDenied,
        userId,
        featureId,
        reason,
        status,
        source,
        used,
        budget,
        notLogged: shadowNotLogged,
        shadowDenied: counters.shadowDenied,
        ...where(req),
      },
      `kana-meter: shadow mode: enforcement would have refused this request with ${status}; it was served (at most one line per ${SHADOW_LOG_INTERVAL_MS / 1000} s, notLogged since the last)`,
    );
    shadowLoggedAt = now;
    shadowNotLogged = 0;
  }

  /** `close` of an enforced response (shared by this kanaMeter's; `this` is the response): it ended, finished or aborted. */
  function onClose(this: ServerResponse): void {
    const usage = usages.get(this.req);
    if (usage === undefined) return;
    usage.ended = true;
    if (usage.holds !== undefined) releaseHolds(usage);
  }

  /**
   * Something in the gate threw or rejected (a hook's or a store's bad value, a bug): logged, and the
   * request, if not decided yet, gets the `onKanaError` decision (next(), or 503 problem+json).
   */
  function gateFailed(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    error: unknown,
  ): void {
    try {
      logger.error(
        { code: logCodes.gateFailed, err: error, featureId: feature.featureId, ...where(req) },
        'kana-meter: unexpected error in the entitlement gate; onKanaError decided the request',
      );
    } catch {
      // A logger that throws cannot be told; nothing is thrown from here either.
    }
    decideWithoutAnswer(req, res, next, feature, usage, error);
  }

  /** The gate's deadline passed with the request still waiting (a hook, the store, or Kana past its limits). */
  function timedOut(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
  ): void {
    if (isDecided(next) || usage.ended || res.headersSent) return;
    counters.gateTimeouts++;
    const error = new KanaError('KANA_TIMEOUT', `the request was not decided within ${gateTimeoutMs} ms`, {
      retryable: true,
    });
    try {
      logger.error(
        { code: logCodes.gateTimeout, featureId: feature.featureId, gateTimeoutMs, ...where(req) },
        `kana-meter: an enforced request was not decided within ${gateTimeoutMs} ms; onKanaError decided it`,
      );
    } catch {
      // A logger that throws cannot be told.
    }
    decideWithoutAnswer(req, res, next, feature, usage, error);
  }

  /** `onKanaError` decides a request nothing else could, exactly once (never after next() or a response). */
  function decideWithoutAnswer(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    error: unknown,
  ): void {
    if (isDecided(next) || usage.ended || res.headersSent) return;
    try {
      fallBack(req, res, next, feature, usage, typeof usage.userId === 'string' ? usage.userId : '', error);
    } catch (failure) {
      try {
        logger.error({ code: logCodes.gateFailed, err: failure }, 'kana-meter: the fallback decision failed');
      } catch {
        // Nothing more to tell.
      }
      // Last resort: the request is answered.
      if (!isDecided(next) && !res.headersSent) {
        settleStep(next);
        res.statusCode = 503;
        res.end();
      }
    }
  }

  return { gate };
}

/** Gives back the units a request holds; each hold is released exactly once (the list is detached first). */
export function releaseHolds(usage: RequestUsage): void {
  let hold = usage.holds;
  usage.holds = undefined;
  while (hold !== undefined) {
    hold.entitlement.ledger.releaseHeld(hold.delta);
    hold = hold.next;
  }
}
