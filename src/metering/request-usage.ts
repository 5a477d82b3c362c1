// Per-request state: one record per request, shared by every kanaMeter() it passes: which one bills its meter() routes, its decision, and each one's usage record.

import type { NextFunction, Request, Response } from 'express';
import type { EntitlementDecision } from '../config/decision.js';
import type { MeteredFeature } from './metered-feature.js';

/** What a kanaMeter() offers to the meter() routes of the requests it saw last. */
export interface MeterContext {
  /** Bills `feature` on this request (replacing this kanaMeter's route map feature), checks it when enforced, then calls next(). */
  meter(req: Request, res: Response, next: NextFunction, feature: MeteredFeature): void;
}

/** What a hold is counted on: a cached entitlement, whose ledger alone changes the units held by requests in flight. */
export interface HeldUnits {
  readonly ledger: { releaseHeld(delta: number): void };
}

/** Units an allowed request holds against a cached entitlement until it ends. */
export interface Hold {
  readonly entitlement: HeldUnits;
  readonly delta: number;
  readonly next: Hold | undefined;
}

/**
 * What one kanaMeter() bills on one request; created only for the requests it meters. It holds
 * neither the request nor the response: it is kept in a WeakMap keyed by the request, and a value
 * that reaches its own key keeps every request alive through each young-generation GC (measured:
 * a fifth more GC time per request under HTTP load).
 */
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
  /** Its response finished after close() began: its usage is reported undelivered, not queued. */
  late: boolean;
  /** The client left before the response finished: only `billAborted` features are billed. */
  abandoned: boolean;
  /** The request's shared record, which holds this one (its decision goes there, for `req.kana`). */
  readonly shared: SharedRequest;
  /** The kanaMeter() whose record this is (its RequestUsages). */
  readonly owner: RequestUsages;
  /** Another kanaMeter()'s record of the same request (several mounted on one app). */
  readonly other: RequestUsage | undefined;
}

/**
 * One kanaMeter()'s usage records of requests. Each is found through the request's shared
 * record, so a request costs one WeakMap entry however many instances and stages read it.
 */
export class RequestUsages {
  /** This kanaMeter's record of the request, if it meters it. */
  get(req: object): RequestUsage | undefined {
    return this.of(requests.get(req));
  }

  /** This kanaMeter's record among a request's. */
  of(shared: SharedRequest | undefined): RequestUsage | undefined {
    let usage = shared?.usage;
    while (usage !== undefined && usage.owner !== this) usage = usage.other;
    return usage;
  }

  /** Starts this kanaMeter's usage record of a request (one shape for all of them). */
  start(shared: SharedRequest, routeFeature: MeteredFeature | undefined): RequestUsage {
    const usage: RequestUsage = {
      routeFeature,
      tagged: undefined,
      userId: undefined,
      holds: undefined,
      refused: false,
      ended: false,
      checked: undefined,
      answered: false,
      late: false,
      abandoned: false,
      shared,
      owner: this,
      other: shared.usage,
    };
    shared.usage = usage;
    return usage;
  }
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
 * through (the one a meter() further down reports to), the last entitlement decision (read as
 * `req.kana`), and each instance's usage record. One WeakMap entry per request rather than a
 * property on it: adding any property to Node's request after Express has (a Symbol included)
 * costs about 2 µs per request, measured, as every later property access on it slows down. Kept
 * on globalThis, so an ESM and a CommonJS copy of kana-meter in one process still see each other.
 * The key is versioned: an older copy keeps a differently shaped entry.
 */
export interface SharedRequest {
  nearest: MeterContext | undefined;
  decision: EntitlementDecision | undefined;
  usage: RequestUsage | undefined;
}
const SHARED = Symbol.for('kana-meter.request-state.v3');
const sharing = globalThis as { [SHARED]?: WeakMap<object, SharedRequest> };
sharing[SHARED] ??= new WeakMap();
const requests = sharing[SHARED];

/** The request's shared record, created on first use. */
export function sharedRequest(req: object): SharedRequest {
  let shared = requests.get(req);
  if (shared === undefined) {
    shared = { nearest: undefined, decision: undefined, usage: undefined };
    requests.set(req, shared);
  }
  return shared;
}

/** How many meter() routes the process has (every copy of kana-meter counts in the same place). */
const METER_ROUTES = Symbol.for('kana-meter.meter-routes.v1');
const routeCount = globalThis as { [METER_ROUTES]?: { count: number } };
routeCount[METER_ROUTES] ??= { count: 0 };
const meterRoutes = routeCount[METER_ROUTES];

/** A meter() route was created: from now on, each request records the kanaMeter() it passed last. */
export function meterRouteCreated(): void {
  meterRoutes.count++;
}

/** Whether a meter() route exists to read the nearest kanaMeter(): until one does, a request that matches no route map entry costs no record. */
export function meterRoutesExist(): boolean {
  return meterRoutes.count > 0;
}

/** The kanaMeter() the request passed through last, if any: the one that bills a meter() route. */
export function nearestMeter(req: Request): MeterContext | undefined {
  return requests.get(req)?.nearest;
}

/** The request's latest entitlement decision, by any kanaMeter(). */
export function keptDecision(req: Request): EntitlementDecision | undefined {
  return requests.get(req)?.decision;
}
