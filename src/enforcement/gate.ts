// The entitlement gate: checks an enforced request before its handler, holds its units until it ends, or refuses it.

import type { ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import type { DecisionSource, EntitlementDecision, RefusedDecision } from '../config/decision.js';
import { logCodes } from '../config/errors.js';
import type { Counter } from '../config/stats.js';
import { NO_TELEMETRY, type Telemetry, traceLookup } from '../config/telemetry.js';
import { isPromise, toPromise } from '../config/thenable.js';
import { type IdempotencyWindow, idempotencyKeyOf, onWindowAnswer, windowKey } from '../metering/idempotency-window.js';
import type { MeteredFeature } from '../metering/metered-feature.js';
import type { RequestUsage, RequestUsages } from '../metering/request-usage.js';
import { where } from '../metering/routed-path.js';
import { toKanaUserId } from '../metering/user-id.js';
import type { KanaMeterConfig } from '../options.js';
import { decisionFrom, fallbackDecision, replayDecision } from './decisions.js';
import type { Lookup } from './entitlement-lookup.js';
import { sendRefusal, setRateLimitHeaders } from './entitlement-response.js';
import type { Entitlement, EntitlementCache } from './entitlements.js';
import './express-augmentation.js';
import type { Taken } from './key-ledger.js';
import type { Leases } from './leases.js';
import { setDecision } from './request-decision.js';

/** In shadow mode, at most one log line of would-be refusals per this interval (every one is counted). */
export const SHADOW_LOG_INTERVAL_MS = 10_000;

export interface GateOptions {
  config: Pick<
    KanaMeterConfig,
    'userId' | 'logger' | 'onDenied' | 'onKanaError' | 'rateLimitHeaders' | 'enforce' | 'idempotencyKey'
  >;
  counters: Record<Counter, number>;
  cache: EntitlementCache;
  /** The kanaMeter's own usage records: its `close` listener reads them. */
  usages: RequestUsages;
  /** Units of the allowance: from this instance's lease, or decided here. */
  leases: Leases;
  /** After a cache miss: Kana, else a stale answer, else nothing. */
  lookUpMissed: (userId: string, featureId: string, delta: number) => Lookup | Promise<Lookup>;
  /** The billed idempotency keys, when `idempotencyKey` is on. */
  idempotencyWindow: IdempotencyWindow | undefined;
  /** Logs and counts a `userId` that threw, rejected or gave a non-id. */
  userIdFailed: (req: Request, error: unknown) => void;
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
  idempotencyWindow,
  userIdFailed,
  telemetry = NO_TELEMETRY,
}: GateOptions) {
  const { observeDecision, tracing } = telemetry;
  const { userId: getUserId, logger, onDenied, onKanaError, rateLimitHeaders, enforce } = config;
  const idempotencyHeader = config.idempotencyKey?.header;
  let warnedNoUser = false;
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
    if (usage.userId !== undefined) {
      checkFor(req, res, next, feature, usage, usage.userId);
      return;
    }
    // Read once, before the handler; the same id is billed when the response finishes.
    let raw: unknown;
    try {
      raw = getUserId(req, res);
    } catch (error) {
      usage.userId = false;
      userIdFailed(req, error);
      checkFor(req, res, next, feature, usage, false);
      return;
    }
    if (isPromise(raw)) {
      // Adopted as a promise: a thenable whose `then` throws or calls back twice is a rejection, or ignored.
      toPromise(raw)
        .then(
          (value) => checkFor(req, res, next, feature, usage, readUserId(req, usage, value)),
          (error: unknown) => {
            usage.userId = false;
            userIdFailed(req, error);
            checkFor(req, res, next, feature, usage, false);
          },
        )
        .catch(gateFailed);
      return;
    }
    checkFor(req, res, next, feature, usage, readUserId(req, usage, raw));
  }

  function readUserId(req: Request, usage: RequestUsage, raw: unknown): string | null | false {
    try {
      usage.userId = toKanaUserId(raw);
    } catch (error) {
      usage.userId = false;
      userIdFailed(req, error);
    }
    return usage.userId;
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
      // No user: not checked, and not billed either (nothing to bill it to).
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
    if (idempotencyWindow !== undefined) {
      const key = idempotencyKeyOf(req, idempotencyHeader as string);
      if (key !== undefined) {
        onWindowAnswer(
          idempotencyWindow.has(windowKey(userId, feature.featureId, key)),
          (billed) => (billed ? replayed : checkEntitlement)(req, res, next, feature, usage, userId),
          // A window that cannot answer: check the request as if it carried no key.
          () => checkEntitlement(req, res, next, feature, usage, userId),
        )?.catch(gateFailed);
        return;
      }
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
      found.then((lookup) => settle(req, res, next, feature, usage, userId, lookup)).catch(gateFailed);
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
    // The client left while Kana was being asked: nothing to hold, nobody to answer.
    if (usage.ended) return;
    const taken = leases.take(entry, feature.checkDelta, true);
    if (isPromise(taken)) {
      taken.then((units) => decide(req, res, next, feature, usage, entry, source, error, units)).catch(gateFailed);
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
    if (usage.ended) {
      // It ended while the store was asked: its units go back at once.
      entry.held -= taken.held;
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
    if (usage.ended) return;
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

  /** A retry of a request already billed for this user and feature: served, not checked, held nor charged. */
  function replayed(
    req: Request,
    _res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    userId: string,
  ): void {
    if (usage.ended) return;
    const entry = cache.stale(userId, feature.featureId);
    const decision = replayDecision(
      userId,
      feature.featureId,
      entry,
      entry === undefined ? null : leases.usedNow(entry),
    );
    setDecision(req, decision);
    observeDecision?.(decision, isShadow(feature));
    counters.allowed++;
    next();
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
    if (onDenied !== undefined) {
      try {
        onDenied(req, res, next, decision as RefusedDecision);
        return;
      } catch (error) {
        counters.hookErrors++;
        logger.error(
          { code: logCodes.hookFailed, hook: 'onDenied', featureId: decision.featureId, err: error, ...where(req) },
          'kana-meter: onDenied threw; the default refusal was sent',
        );
      }
    }
    sendRefusal(res, decision, entry);
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

  function gateFailed(error: unknown): void {
    try {
      logger.error({ code: logCodes.gateFailed, err: error }, 'kana-meter: unexpected error in the entitlement gate');
    } catch {
      // A logger that throws cannot be told; nothing is thrown from here either.
    }
  }

  return { gate };
}

/** Gives back the units a request holds; each hold is released exactly once (the list is detached first). */
export function releaseHolds(usage: RequestUsage): void {
  let hold = usage.holds;
  usage.holds = undefined;
  while (hold !== undefined) {
    hold.entitlement.held -= hold.delta;
    hold = hold.next;
  }
}
