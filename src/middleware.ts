// kanaMeter(): finds each request's features, captures a usage event when its response succeeds, and queues it.

import type { ServerResponse } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { EntitlementDecision } from './config/decision.js';
import { logCodes } from './config/errors.js';
import { guardObserveKanaCall } from './config/metrics.js';
import { checkInteger, describeValue, isCleartextRemote, optionError } from './config/option-checks.js';
import { createCounters, type KanaMeterStats } from './config/stats.js';
import { isPromise, toPromise } from './config/thenable.js';
import { raceTimeout } from './config/timers.js';
import { type CloseOptions, DEFAULT_CLOSE_TIMEOUT_MS, DeliveryQueue } from './delivery/queue.js';
import { createEnforcement } from './enforcement/enforcement.js';
import { createGate, releaseHolds } from './enforcement/gate.js';
import { createUsageHold, type UsageHold } from './enforcement/usage-hold.js';
import { KanaClient } from './kana/client.js';
import { type IdempotencyWindow, idempotencyKeyOf, onWindowAnswer, windowKey } from './metering/idempotency-window.js';
import { isValidDelta, type MeteredFeature } from './metering/metered-feature.js';
import {
  featuresToBill,
  type MeterContext,
  passedThrough,
  type RequestUsage,
  type RequestUsages,
  startUsage,
} from './metering/request-usage.js';
import { routedPath, where } from './metering/routed-path.js';
import { parseUsageArguments } from './metering/usage-arguments.js';
import { toKanaUserId, type UserIdValue } from './metering/user-id.js';
import { type KanaMeterOptions, parseOptions } from './options.js';
import { MemoryStore } from './stores/memory-store.js';

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
}

/** close()'s deadline in ms; a bad one throws (a programmer error, like a bad kanaMeter() option). */
function parseCloseOptions(closeOptions: CloseOptions | undefined): number {
  if (closeOptions === undefined) return DEFAULT_CLOSE_TIMEOUT_MS;
  if (typeof closeOptions !== 'object' || closeOptions === null) {
    throw optionError('close() options', closeOptions, 'an object such as { timeoutMs: 10000 }');
  }
  return checkInteger('close() timeoutMs', closeOptions.timeoutMs, DEFAULT_CLOSE_TIMEOUT_MS, 0);
}

/**
 * Creates the metering middleware. Every option is validated here: a bad one throws a TypeError
 * naming it.
 * @example app.use(kanaMeter({ apiKey: process.env.KANA_API_KEY, userId: (req) => req.user?.kanaId }))
 */
export function kanaMeter(options: KanaMeterOptions): KanaMeter {
  const config = parseOptions(options);
  const { matchRoute, logger, isSuccess, userId: getUserId, enforce } = config;
  const client = config.client instanceof KanaClient ? config.client : new KanaClient(config.client);
  if (isCleartextRemote(client.endpoint)) {
    logger.warn(
      { code: logCodes.insecureEndpoint, host: new URL(client.endpoint).host },
      'kana-meter: the Kana endpoint is plain http:// to another machine: the API key travels in cleartext. Use https://',
    );
  }
  const counters = createCounters();
  const store = config.store ?? new MemoryStore();
  // A store already bound to another kanaMeter() throws here, before anything is started.
  store.bind({ logger });
  const observeKanaCall = config.metrics && guardObserveKanaCall(config.metrics, counters, config.logger);
  const queue = new DeliveryQueue(client, config, counters, observeKanaCall);
  const enforcement = createEnforcement({ config, client, store, counters, queue, observeKanaCall });
  const { entitlements, leases, lookup } = enforcement;
  const idempotencyWindow: IdempotencyWindow | undefined =
    config.idempotencyKey &&
    store.idempotencyWindow({
      ttlMs: config.idempotencyKey.ttlMs,
      maxKeys: config.idempotencyKey.maxKeys,
      onEvict: () => {
        counters.idempotencyEvictions++;
      },
    });
  /** This kanaMeter's own per-request state: only its listeners read it. */
  const usages: RequestUsages = new WeakMap();
  const { gate } = createGate({
    config,
    counters,
    cache: entitlements,
    usages,
    leases,
    lookUpMissed: (userId, featureId, delta) => lookup.missed(userId, featureId, delta),
    idempotencyWindow,
    userIdFailed,
  });
  /** Captures whose userId or delta is still being awaited; flush() and close() wait for them. */
  const asyncCaptures = new Set<Promise<void>>();
  /** Set by close(): responses finishing from now on are reported, not queued. */
  let closed = false;
  let captureFailureLogged = false;

  const context: MeterContext = {
    meter(req, res, next, feature) {
      let usage = usages.get(req);
      if (!usage) {
        usage = startUsage(usages, req, undefined);
        // `on`, not `once`: a response finishes once, and `once` allocates a wrapper per request.
        res.on('finish', onFinish);
      }
      usage.tagged ??= [];
      usage.tagged.push(feature);
      // The gate of a meter() route runs here, before the handler.
      if (feature.enforce ?? enforce) gate(req, res, next, feature, usage);
      else next();
    },
  };

  function kanaMeterMiddleware(req: Request, res: Response, next: NextFunction): void {
    // The last kanaMeter() a request passes through bills the meter() routes further down.
    passedThrough(req, context);
    const routeFeature = matchRoute?.(req.method, routedPath(req));
    // Seen before (the app and a sub-app or router both mount this kanaMeter, or it is mounted
    // twice): already metered, and checked if enforced.
    if (routeFeature === undefined || usages.has(req)) {
      next();
      return;
    }
    const usage = startUsage(usages, req, routeFeature);
    res.on('finish', onFinish);
    // The gate of a mapped route runs here, before routing.
    if (routeFeature.enforce ?? enforce) gate(req, res, next, routeFeature, usage);
    else next();
  }

  // Shared by every response this kanaMeter meters (no closure per request); `this` is the response.
  function onFinish(this: ServerResponse): void {
    // Whatever a hook returned, nothing thrown here may reach the response's 'finish' emit (it would crash the process).
    try {
      finished(this as Response);
    } catch (error) {
      captureFailed(error);
    }
  }

  function finished(res: Response): void {
    const req = res.req;
    const usage = usages.get(req);
    if (usage === undefined) return;
    if (usage.checked !== undefined) {
      // Held units are given back first; on success they come back as captured usage just below.
      usage.ended = true;
      if (usage.holds !== undefined) releaseHolds(usage);
      if (usage.refused) return;
    }
    if (!succeeded(req, res)) return;
    const late = closed;
    if (usage.userId !== undefined) {
      // Read by the gate before the handler: billed as it was checked (false: userId failed, already reported).
      if (usage.userId !== false) captureFor(req, res, usage, usage.userId, late);
      return;
    }
    let userId: UserIdValue | Promise<UserIdValue>;
    try {
      userId = getUserId(req, res);
    } catch (error) {
      userIdFailed(req, error);
      return;
    }
    if (isPromise(userId)) {
      track(
        toPromise(userId).then(
          (id) => captureFor(req, res, usage, id, late),
          (error) => userIdFailed(req, error),
        ),
      );
    } else {
      captureFor(req, res, usage, userId, late);
    }
  }

  function succeeded(req: Request, res: Response): boolean {
    if (!isSuccess) return res.statusCode >= 200 && res.statusCode < 300;
    try {
      return isSuccess(req, res) === true;
    } catch (error) {
      counters.hookErrors++;
      logger.error(
        { code: logCodes.hookFailed, hook: 'isSuccess', err: error, ...where(req) },
        'kana-meter: isSuccess threw; the request was not metered',
      );
      return false;
    }
  }

  function captureFor(req: Request, res: Response, usage: RequestUsage, rawUserId: unknown, late: boolean): void {
    let userId: string | null;
    try {
      userId = toKanaUserId(rawUserId);
    } catch (error) {
      userIdFailed(req, error);
      return;
    }
    if (userId === null) {
      counters.skippedNoUser++;
      return;
    }
    // The common case, one feature from the route map, without building a list.
    if (usage.tagged === undefined) {
      if (usage.routeFeature !== undefined) captureFeature(req, res, userId, usage.routeFeature, late);
      return;
    }
    for (const feature of featuresToBill(usage)) captureFeature(req, res, userId, feature, late);
  }

  function captureFeature(req: Request, res: Response, userId: string, feature: MeteredFeature, late: boolean): void {
    if (typeof feature.delta === 'number') {
      billOnce(req, userId, feature.featureId, feature.delta, late);
      return;
    }
    let delta: unknown;
    try {
      delta = feature.delta(req, res);
    } catch (error) {
      deltaFailed(req, feature, error);
      return;
    }
    if (isPromise(delta)) {
      track(
        toPromise(delta).then(
          (value) => enqueueChecked(req, userId, feature, value, late),
          (error) => deltaFailed(req, feature, error),
        ),
      );
    } else {
      enqueueChecked(req, userId, feature, delta, late);
    }
  }

  /** Queues the usage, unless the request's Idempotency-Key was already billed for this user and feature. */
  function billOnce(req: Request, userId: string, featureId: string, delta: number, late: boolean): void {
    const key = idempotencyWindow && idempotencyKeyOf(req, config.idempotencyKey?.header as string);
    if (key === undefined) {
      enqueue(userId, featureId, delta, late);
      return;
    }
    const bill = (first: boolean) => {
      if (first) enqueue(userId, featureId, delta, late);
      else counters.idempotentReplays++;
    };
    const claiming = onWindowAnswer(
      (idempotencyWindow as IdempotencyWindow).claim(windowKey(userId, featureId, key)),
      bill,
      (error) => idempotencyFailed(req, error, bill),
    );
    if (claiming) track(claiming);
  }

  /** The window (a shared store) could not be asked: bill (a double bill can be refunded; lost usage cannot be found). */
  function idempotencyFailed(req: Request, error: unknown, bill: (first: boolean) => void): void {
    counters.hookErrors++;
    logger.error(
      { code: logCodes.hookFailed, hook: 'idempotency window', err: error, ...where(req) },
      'kana-meter: the idempotency window failed; the usage was billed',
    );
    bill(true);
  }

  /** Queues the event, or reports it when its response finished after close() began. */
  function enqueue(userId: string, featureId: string, delta: number, late: boolean): void {
    if (late) {
      queue.rejectClosed(userId, featureId, delta);
      return;
    }
    queue.enqueue(userId, featureId, delta);
    enforcement.countUsage(userId, featureId, delta);
  }

  function enqueueChecked(req: Request, userId: string, feature: MeteredFeature, delta: unknown, late: boolean): void {
    if (isValidDelta(delta)) {
      billOnce(req, userId, feature.featureId, delta, late);
      return;
    }
    // Nothing was used (an empty export, a completion of no tokens): nothing to bill, nothing wrong.
    if (delta === 0) return;
    counters.invalidDelta++;
    logger.warn(
      {
        code: logCodes.invalidDelta,
        route: feature.source,
        featureId: feature.featureId,
        userId,
        // String() of a primitive; a description of an object (String() may throw on one without a prototype).
        delta: typeof delta === 'object' || typeof delta === 'function' ? describeValue(delta) : String(delta),
        ...where(req),
      },
      'kana-meter: delta is not an integer in 1..2147483647; this usage was not sent',
    );
  }

  function deltaFailed(req: Request, feature: MeteredFeature, error: unknown): void {
    counters.hookErrors++;
    logger.error(
      {
        code: logCodes.hookFailed,
        hook: 'delta',
        route: feature.source,
        featureId: feature.featureId,
        err: error,
        ...where(req),
      },
      'kana-meter: the delta function threw; this usage was not sent',
    );
  }

  function userIdFailed(req: Request, error: unknown): void {
    counters.userIdErrors++;
    logger.error(
      { code: logCodes.userIdFailed, err: error, ...where(req) },
      'kana-meter: userId failed; the request was not metered',
    );
  }

  function track(capture: Promise<void>): void {
    const guarded = capture.catch(captureFailed);
    asyncCaptures.add(guarded);
    void guarded.finally(() => asyncCaptures.delete(guarded));
  }

  /** Something unexpected while capturing usage (a bug, or a hook value nothing could read): counted, logged once. */
  function captureFailed(error: unknown): void {
    counters.hookErrors++;
    if (captureFailureLogged) return;
    captureFailureLogged = true;
    try {
      logger.error(
        { code: logCodes.captureFailed, err: error },
        'kana-meter: unexpected error while capturing usage; that usage was not sent (logged once, counted in hookErrors)',
      );
    } catch {
      // A logger that throws cannot be told.
    }
  }

  async function settleAsyncCaptures(): Promise<void> {
    while (asyncCaptures.size > 0) await Promise.allSettled([...asyncCaptures]);
  }

  function stats(): KanaMeterStats {
    const storeStats = store.stats();
    return Object.freeze({
      ...counters,
      ...queue.gauges(),
      ...enforcement.gauges(),
      storeAvailable: storeStats.available,
      storeCommands: storeStats.commands,
      storeFailures: storeStats.failures,
      storeOutages: storeStats.outages,
    });
  }

  if (config.metrics) {
    try {
      config.metrics.bind(stats);
    } catch (error) {
      // kanaMeter() throws, so nobody will close this queue: release its spool, sending nothing.
      queue.discard();
      throw error;
    }
  }

  let closing: Promise<void> | undefined;

  return Object.assign(kanaMeterMiddleware, {
    record(userId: string | number, featureId: string, delta = 1) {
      const usage = parseUsageArguments('record', userId, featureId, delta);
      enqueue(usage.userId, usage.featureId, usage.delta, closed);
    },
    async check(userId: string | number, featureId: string, delta = 1) {
      const usage = parseUsageArguments('check', userId, featureId, delta);
      return enforcement.check(usage.userId, usage.featureId, usage.delta);
    },
    async hold(userId: string | number, featureId: string, units = 1) {
      const usage = parseUsageArguments('hold', userId, featureId, units);
      const { decision, entry, held } = await enforcement.hold(usage.userId, usage.featureId, usage.delta);
      return createUsageHold(
        decision,
        () => enforcement.unhold(entry, held),
        (used) => enqueue(usage.userId, usage.featureId, used, closed),
      );
    },
    async flush() {
      await settleAsyncCaptures();
      await queue.flush();
    },
    close(closeOptions?: CloseOptions) {
      const timeoutMs = parseCloseOptions(closeOptions);
      closed = true;
      closing ??= (async () => {
        const started = Date.now();
        enforcement.stop();
        // Captures already under way (async userId or delta) still make it into the final flush.
        await raceTimeout(settleAsyncCaptures(), timeoutMs);
        await queue.close({ timeoutMs: Math.max(0, timeoutMs - (Date.now() - started)) });
        // Last: the totals include what the queue confirmed while closing; every block goes back.
        await raceTimeout(enforcement.close(), Math.max(0, timeoutMs - (Date.now() - started)));
      })();
      return closing;
    },
    stats,
  });
}
