// kanaMeter(): finds each request's features, captures a usage event when its response succeeds, and queues it.

import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { EntitlementDecision } from './config/decision.js';
import type { KanaMeterStats } from './config/stats.js';
import { withTracedLogger } from './config/telemetry.js';
import type { CloseOptions } from './delivery/queue.js';
import type { UsageHold } from './enforcement/usage-hold.js';
import { meterControls } from './meter-controls.js';
import { assembleMeter, type MeterParts } from './meter-parts.js';
import type { MeteredFeature } from './metering/metered-feature.js';
import { type MeterContext, meterRoutesExist, type RequestUsage, sharedRequest } from './metering/request-usage.js';
import { routedPath } from './metering/routed-path.js';
import { type KanaMeterOptions, parseOptions } from './options.js';

/** The middleware, plus the controls of its delivery queue, and metering outside a request. */
export interface KanaMeter extends RequestHandler {
  /**
   * Bills usage that does not come from an HTTP response (a WebSocket message, a queue job, a
   * stream that ends later), through the same queue, coalescing, retries, spool and shutdown as
   * the middleware's, and counts it against the cached allowance. Ids are sent as Strings.
   * After close(), the usage is reported undelivered (like a response finishing late).
   * @throws TypeError naming the bad argument: `userId` not a non-empty string or finite number,
   *   `featureId` not a non-empty string, `delta` not an integer in 1..2147483647.
   * @example kana.record(user.id, 'messages')
   * @example kana.record(job.ownerId, 'export-rows', rows.length)
   */
  record(userId: string | number, featureId: string, delta?: number): void;
  /**
   * Whether the user may use `delta` units of the feature now: the same cache, Kana calls, breaker
   * and stale answers as enforced requests, holding nothing. Never rejects for a Kana failure (the
   * decision says `source: 'fallback'` or `'stale'`); rejects with a TypeError for a bad argument.
   * @example if (!(await kana.check(user.id, 'messages')).allowed) socket.close(4029, 'quota')
   */
  check(userId: string | number, featureId: string, delta?: number): Promise<EntitlementDecision>;
  /**
   * Holds `units` of the feature for work billed once done (a queue job, a streamed LLM answer):
   * decided as check() decides, but the units count against the allowance on every instance sharing
   * the store until the hold's `commit(unitsUsed)` bills what was used (fewer or more) or `release()`
   * bills nothing. A hold whose process dies ends with the store's lease (RedisStore `leaseMs`).
   * Use check() to look without holding, record() for usage already done.
   * Never rejects for a Kana failure; rejects with a TypeError for a bad argument.
   * @example
   * const hold = await kana.hold(job.userId, 'exports', job.rows);
   * if (hold.allowed) hold.commit(await runExport(job));
   */
  hold(userId: string | number, featureId: string, units?: number): Promise<UsageHold>;
  /** Sends all waiting usage now; resolves when every event captured so far is delivered or reported undelivered. */
  flush(): Promise<void>;
  /** Stops intake, flushes within `timeoutMs`, releases every timer and socket. Idempotent. */
  close(options?: CloseOptions): Promise<void>;
  /** Counters and gauges, as a snapshot. */
  stats(): KanaMeterStats;
  /**
   * Resolves once Kana has accepted the API key: one cheap authenticated call (the feature ids),
   * made by the first ready() unless a Kana call already answered. Await it before listening.
   * Rejects with a KanaError naming the problem: `KANA_UNAUTHENTICATED` (`retryable: false`) when
   * Kana refuses the key (wrong, revoked, another environment), `KANA_CONFIG_ERROR` when the HTTP
   * layer cannot send it; or, when Kana could not be reached for `timeoutMs`, the last failure's
   * code (`KANA_UNREACHABLE`, `KANA_TIMEOUT`, `KANA_SERVER_ERROR`...; `retryable: true`): an
   * outage, which `onKanaError` covers, so an app may choose to start anyway. The key is never logged.
   * @example await kana.ready(); app.listen(3000)
   * @example await kana.ready({ timeoutMs: 30_000 }).catch((error) => { if (!error.retryable) throw error })
   * @throws TypeError for a bad `timeoutMs`, at once (not a rejection).
   */
  ready(options?: ReadyOptions): Promise<void>;
}

export interface ReadyOptions {
  /**
   * How long ready() keeps trying while Kana cannot be reached, in milliseconds (a refused key rejects at once).
   * @default 10000
   * @example await kana.ready({ timeoutMs: 30_000 })
   */
  timeoutMs?: number;
}

/**
 * Creates the metering middleware. Every option is validated here: a bad one throws a TypeError
 * naming it.
 * @example app.use(kanaMeter({ apiKey: process.env.KANA_API_KEY, userId: (req) => req.user?.kanaId }))
 */
export function kanaMeter(options: KanaMeterOptions): KanaMeter {
  const parts = assembleMeter(withTracedLogger(parseOptions(options)));
  const { config, usages, capture } = parts;
  const { matchRoute } = config;
  const decide = decider(parts);

  /** meter() on a route calls this, the nearest kanaMeter(), to tag the request with its feature. */
  const meterContext: MeterContext = {
    meter(req, res, next, feature) {
      if (feature.billAborted) capture.watchAbandoned(res);
      const shared = sharedRequest(req);
      let usage = usages.of(shared);
      if (usage === undefined) {
        usage = usages.start(shared, undefined);
        usage.tagged = [feature];
        capture.watch(res);
        decide(req, res, next, feature, usage, true);
        return;
      }
      usage.tagged ??= [];
      usage.tagged.push(feature);
      decide(req, res, next, feature, usage, false);
    },
  };

  function kanaMeterMiddleware(req: Request, res: Response, next: NextFunction): void {
    // 1. Find the features: the route map's here; meter() tags its own as the route runs.
    const feature = matchRoute?.(req.method, routedPath(req));
    if (feature === undefined) {
      // The last kanaMeter() a request passes through bills the meter() routes further down.
      if (meterRoutesExist()) sharedRequest(req).nearest = meterContext;
      next();
      return;
    }
    const shared = sharedRequest(req);
    shared.nearest = meterContext;
    // Seen before (the app and a sub-app or router both mount this kanaMeter, or it is mounted
    // twice): already metered, and checked if enforced.
    if (usages.of(shared) !== undefined) {
      next();
      return;
    }
    const usage = usages.start(shared, feature);
    // 3. Capture on finish: listening before anything can answer.
    capture.watch(res);
    if (feature.billAborted) capture.watchAbandoned(res);
    // 2. Decide, before routing.
    decide(req, res, next, feature, usage, true);
  }

  const controls = meterControls(parts);
  return Object.assign(kanaMeterMiddleware, controls);
}

/**
 * 2. Decide whether the handler runs: a keyed request's first feature goes through the
 * Idempotency-Key stage (a replay never reaches the gate), then an enforced feature's gate
 * allows or refuses. 4. The queue comes after the handler: the capture hands usage to the intake.
 */
function decider({ replay, gate, config: { enforce } }: MeterParts) {
  return function decide(
    req: Request,
    res: Response,
    next: NextFunction,
    feature: MeteredFeature,
    usage: RequestUsage,
    first: boolean,
  ): void {
    if (first && replay?.keyed(req)) replay.run(req, res, usage, () => decide(req, res, next, feature, usage, false));
    else if (feature.enforce ?? enforce) gate(req, res, next, feature, usage);
    else next();
  };
}
