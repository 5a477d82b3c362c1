// Per-request state: each kanaMeter() keeps its own usage records; a shared registry tells meter() which kanaMeter() bills it.

import type { NextFunction, Request, Response } from 'express';
import type { EntitlementDecision } from '../config/decision.js';
import type { MeteredFeature } from './metered-feature.js';

/** What a kanaMeter() offers to the meter() routes of the requests it saw last. */
export interface MeterContext {
  /** Bills `feature` on this request (replacing this kanaMeter's route map feature), checks it when enforced, then calls next(). */
  meter(req: Request, res: Response, next: NextFunction, feature: MeteredFeature): void;
}

/** What a hold is counted on: a cached entitlement's units held by requests in flight. */
export interface HeldUnits {
  held: number;
}

/** Units an allowed request holds against a cached entitlement until it ends. */
export interface Hold {
  readonly entitlement: HeldUnits;
  readonly delta: number;
  readonly next: Hold | undefined;
}

/** What one kanaMeter() bills on one request; created only for the requests it meters. */
export interface RequestUsage {
  /** The route map's feature, if a route matched. */
  readonly routeFeature: MeteredFeature | undefined;
  /** Features named by meter() on the matched route; they win over routeFeature. */
  tagged: MeteredFeature[] | undefined;
  /**
   * On an enforced request, the user id read before the handler and billed at the end: a string,
   * null when there was none, false when `userId` failed. undefined until a gate reads it.
   */
  userId: string | null | false | undefined;
  /** Units held by the gates this request passed; released once when it ends. */
  holds: Hold | undefined;
  /** A gate refused the request: it is never billed. */
  refused: boolean;
  /** The response finished or closed: a check answering later leaves the request alone. */
  ended: boolean;
  /**
   * The feature ids a gate checked on this request (each once): the first alone (no array for the
   * usual one), a list from the second on; undefined until the first gate, which attaches `close`.
   */
  checked: string | string[] | undefined;
  /** The Idempotency-Key stage answered the request itself (a replay, 409 or 422): its handler did not run, nothing is billed. */
  answered: boolean;
}

/**
 * One kanaMeter()'s usage records, keyed by request. A WeakMap rather than a property on the
 * request: adding any property to Node's request after Express has (a Symbol included) costs about
 * 2 µs per request, measured, as every later property access on it slows down. Each kanaMeter()
 * has its own, so several instances on one request never read or bill each other's state.
 */
export type RequestUsages = WeakMap<object, RequestUsage>;

/** Starts this kanaMeter's usage record of a request (one shape for all of them). */
export function startUsage(
  usages: RequestUsages,
  req: Request,
  routeFeature: MeteredFeature | undefined,
): RequestUsage {
  const usage: RequestUsage = {
    routeFeature,
    tagged: undefined,
    userId: undefined,
    holds: undefined,
    refused: false,
    ended: false,
    checked: undefined,
    answered: false,
  };
  usages.set(req, usage);
  return usage;
}

/** The features to bill: meter()'s if any (one per feature id, the last one wins), else the route map's. */
export function featuresToBill(usage: RequestUsage): readonly MeteredFeature[] {
  const { tagged } = usage;
  if (!tagged) return usage.routeFeature ? [usage.routeFeature] : [];
  if (tagged.length === 1) return tagged;
  return [...new Map(tagged.map((feature) => [feature.featureId, feature])).values()];
}

/**
 * What all kanaMeter() instances in the process share about a request: the last one it passed
 * through (the one a meter() further down reports to), and the last entitlement decision (read as
 * `req.kana`). Kept on globalThis, so an ESM and a CommonJS copy of kana-meter in one process still
 * see each other. The key is versioned: an older copy keeps a differently shaped entry.
 */
interface SharedRequestState {
  readonly nearest: WeakMap<object, MeterContext>;
  readonly decisions: WeakMap<object, EntitlementDecision>;
}
const SHARED = Symbol.for('kana-meter.request-state.v2');
const sharing = globalThis as { [SHARED]?: SharedRequestState };
sharing[SHARED] ??= { nearest: new WeakMap(), decisions: new WeakMap() };
const { nearest, decisions } = sharing[SHARED];

/** Records that this kanaMeter() is the last one the request passed through. */
export function passedThrough(req: Request, context: MeterContext): void {
  nearest.set(req, context);
}

/** The kanaMeter() the request passed through last, if any: the one that bills a meter() route. */
export function nearestMeter(req: Request): MeterContext | undefined {
  return nearest.get(req);
}

/** Keeps the request's latest entitlement decision, for `req.kana`. */
export function keepDecision(req: Request, decision: EntitlementDecision): void {
  decisions.set(req, decision);
}

/** The request's latest entitlement decision, by any kanaMeter(). */
export function keptDecision(req: Request): EntitlementDecision | undefined {
  return decisions.get(req);
}
