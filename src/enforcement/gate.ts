// The entitlement gate: checks an enforced request before its handler, holds its units until it ends, or refuses it.

import type { ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import type { EntitlementDecision, RefusedDecision } from '../config/decision.js';
import { KanaError, logCodes } from '../config/errors.js';
import type { Counter } from '../config/stats.js';
import { isPromise } from '../config/thenable.js';
import type { MeteredFeature } from '../metering/metered-feature.js';
import { type Hold, type RequestUsage, usageOf, where } from '../metering/request-usage.js';
import { toKanaUserId } from '../metering/user-id.js';
import type { KanaMeterConfig } from '../options.js';
import { sendRefusal, setRateLimitHeaders } from './entitlement-response.js';
import type { Entitlement, EntitlementCache } from './entitlements.js';
import { verdict } from './entitlements.js';
import './express-augmentation.js';
import { setDecision } from './request-decision.js';

export interface GateOptions {
  config: Pick<KanaMeterConfig, 'userId' | 'logger' | 'onDenied' | 'onKanaError' | 'rateLimitHeaders'>;
  counters: Record<Counter, number>;
  cache: EntitlementCache;
  /** Logs and counts a `userId` that threw, rejected or gave a non-id. */
  userIdFailed: (req: Request, error: unknown) => void;
}

/**
 * Creates the gate kanaMeter() runs for enforced mapped routes and meter() for enforced routes.
 * A cache hit decides synchronously and calls next() in the same tick.
 */
export function createGate({ config, counters, cache, userIdFailed }: GateOptions) {
  const { userId: getUserId, logger, onDenied, onKanaError, rateLimitHeaders } = config;
  let warnedNoUser = false;

  /** Checks `feature` for this request (its usage record exists), then calls next() or refuses it. */
  function gate(req: Request, res: Response, next: NextFunction, feature: MeteredFeature): void {
    const usage = usageOf(req) as RequestUsage;
    if (!usage.gated) {
      usage.gated = true;
      res.on('close', onClose);
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
      raw
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
    const entry = cache.fresh(userId, feature.featureId);
    if (entry !== undefined) {
      counters.cacheHits++;
      decide(req, res, next, feature, usage, entry, 'cache');
      return;
    }
    cache
      .load(userId, feature.featureId, feature.checkDelta)
      .then(
        (loaded) => decide(req, res, next, feature, usage, loaded, 'kana'),
        (error: unknown) => fallBack(req, res, next, feature, usage, userId, error),
      )
      .catch(gateFailed);
  }

  function decide(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    entry: Entitlement,
    source: 'kana' | 'cache',
  ): void {
    // The client left while Kana was being asked: nothing to hold, nobody to answer.
    if (usage.ended) return;
    // A second gate for the same feature (route map, then meter()) replaces the first one's hold.
    if (usage.holds !== undefined) releaseHoldOn(usage, entry);
    const delta = feature.checkDelta;
    const outcome = verdict(entry, delta);
    const allowed = outcome === 'allowed';
    const used = entry.consumable ? entry.effectiveUsed() : null;
    const budget = entry.budget;
    const remaining = budget === null || used === null ? null : Math.max(0, budget - used - (allowed ? delta : 0));
    const decision: EntitlementDecision = {
      allowed,
      reason: outcome,
      status: allowed ? undefined : outcome === 'not-in-plan' ? 402 : 429,
      userId: entry.userId,
      featureId: entry.featureId,
      delta,
      source,
      used,
      budget,
      remaining,
      overageEnabled: entry.overageEnabled,
      resetAt: entry.resetAt,
      error: undefined,
    };
    setDecision(req, usage, decision);
    if (!allowed) {
      refuse(req, res, next, usage, decision, entry);
      return;
    }
    if (entry.consumable) {
      entry.held += delta;
      usage.holds = { entitlement: entry, delta, next: usage.holds };
    }
    counters.allowed++;
    if (rateLimitHeaders && remaining !== null && !entry.overageEnabled && !res.headersSent) {
      setRateLimitHeaders(res, entry, remaining);
    }
    next();
  }

  /** Kana could not be asked: `onKanaError` decides. */
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
    const allowed = onKanaError === 'allow';
    const decision: EntitlementDecision = {
      allowed,
      reason: 'kana-error',
      status: allowed ? undefined : 503,
      userId,
      featureId: feature.featureId,
      delta: feature.checkDelta,
      source: 'fallback',
      used: null,
      budget: null,
      remaining: null,
      overageEnabled: false,
      resetAt: null,
      error: error instanceof KanaError ? error : undefined,
    };
    setDecision(req, usage, decision);
    if (!allowed) {
      refuse(req, res, next, usage, decision, undefined);
      return;
    }
    counters.allowed++;
    counters.failedOpen++;
    next();
  }

  function refuse(
    req: Request,
    res: Response,
    next: NextFunction,
    usage: RequestUsage,
    decision: EntitlementDecision,
    entry: Entitlement | undefined,
  ): void {
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

  function gateFailed(error: unknown): void {
    logger.error({ code: logCodes.gateFailed, err: error }, 'kana-meter: unexpected error in the entitlement gate');
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

function releaseHoldOn(usage: RequestUsage, entry: Entitlement): void {
  let kept: Hold | undefined;
  for (let hold = usage.holds; hold !== undefined; hold = hold.next) {
    if (hold.entitlement === entry) entry.held -= hold.delta;
    else kept = { entitlement: hold.entitlement, delta: hold.delta, next: kept };
  }
  usage.holds = kept;
}

/** `close` of an enforced response (shared; `this` is the response): it ended, finished or aborted. */
function onClose(this: ServerResponse): void {
  const usage = usageOf(this.req as Request);
  if (usage === undefined) return;
  usage.ended = true;
  if (usage.holds !== undefined) releaseHolds(usage);
}
