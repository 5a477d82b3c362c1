// The per-request link between kanaMeter() and meter(): what a request bills, kept beside the request object.

import type { NextFunction, Request, Response } from 'express';
import type { EnforceMode, EntitlementDecision } from '../config/decision.js';
import type { MeteredFeature } from './metered-feature.js';

/** What kanaMeter() offers to meter() for the requests it sees. */
export interface MeterContext {
  /** kanaMeter's `enforce`: whether a feature without its own `enforce` is checked. */
  readonly enforce: EnforceMode;
  /** Bills `feature` on this request (once per feature id), replacing the route map's feature. */
  tag(req: Request, res: Response, feature: MeteredFeature): void;
  /** Checks the user's entitlement to `feature`, then calls `next()` or refuses the request. */
  gate(req: Request, res: Response, next: NextFunction, feature: MeteredFeature): void;
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

/** The features one request bills; created only for metered requests. */
export interface RequestUsage {
  /** The kanaMeter() that saw the request. */
  readonly context: MeterContext;
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
  /** A gate attached the `close` listener. */
  gated: boolean;
  /** The last gate's decision, read as `req.kana`. */
  decision: EntitlementDecision | undefined;
}

/** Starts the usage record of a metered request (one shape for all of them). */
export function startUsage(
  req: Request,
  context: MeterContext,
  routeFeature: MeteredFeature | undefined,
): RequestUsage {
  const usage: RequestUsage = {
    context,
    routeFeature,
    tagged: undefined,
    userId: undefined,
    holds: undefined,
    refused: false,
    ended: false,
    gated: false,
    decision: undefined,
  };
  requests.set(req, usage);
  return usage;
}

/**
 * Per-request state lives in a WeakMap keyed by the request, not in a property on it: adding any
 * property to Node's request after Express has (a Symbol included) costs about 2 µs per request,
 * measured, as every later property access on it slows down. One entry per request: the
 * kanaMeter() context, or the usage record of a metered request (which points to its context).
 * The map is shared through globalThis, so an ESM and a CommonJS copy of kana-meter in one
 * process still see each other.
 */
const REGISTRY = Symbol.for('kana-meter.requests');
type RequestRegistry = WeakMap<object, MeterContext | RequestUsage>;
const shared = globalThis as { [REGISTRY]?: RequestRegistry };
shared[REGISTRY] ??= new WeakMap();
const requests: RequestRegistry = shared[REGISTRY];

/** Records that a kanaMeter() saw this request (for a later meter()). */
export function markSeen(req: Request, context: MeterContext): void {
  requests.set(req, context);
}

/** The kanaMeter() that saw this request, if any. */
export function meterContextOf(req: Request): MeterContext | undefined {
  const entry = requests.get(req);
  return (entry as RequestUsage | undefined)?.context ?? (entry as MeterContext | undefined);
}

/** The usage record of a metered request. */
export function usageOf(req: Request): RequestUsage | undefined {
  const entry = requests.get(req);
  return (entry as RequestUsage | undefined)?.context === undefined ? undefined : (entry as RequestUsage);
}

/** The features to bill: meter()'s if any (one per feature id, the last one wins), else the route map's. */
export function featuresToBill(usage: RequestUsage): readonly MeteredFeature[] {
  const { tagged } = usage;
  if (!tagged) return usage.routeFeature ? [usage.routeFeature] : [];
  if (tagged.length === 1) return tagged;
  return [...new Map(tagged.map((feature) => [feature.featureId, feature])).values()];
}

/** The request path without the query string, as the app sees it (mount paths included). */
export function pathOf(req: Request): string {
  const url = req.originalUrl ?? req.url;
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

/** Where a log line's request went. */
export function where(req: Request): { method: string; path: string } {
  return { method: req.method, path: pathOf(req) };
}
