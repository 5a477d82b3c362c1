// kanaMeter(): finds each request's features, captures a usage event when its response succeeds, and queues it.

import type { ServerResponse } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { AuditTrail } from './audit/audit-trail.js';
import type { EntitlementDecision } from './config/decision.js';
import { logCodes } from './config/errors.js';
import { guardObserveKanaCall } from './config/metrics.js';
import { checkInteger, describeValue, isCleartextRemote, optionError } from './config/option-checks.js';
import { createCounters, type KanaMeterStats } from './config/stats.js';
import { resolveTelemetry, withTracedLogger } from './config/telemetry.js';
import { isPromise, toPromise } from './config/thenable.js';
import { raceTimeout } from './config/timers.js';
import { type CloseOptions, DEFAULT_CLOSE_TIMEOUT_MS, DeliveryQueue } from './delivery/queue.js';
import { fallbackDecision } from './enforcement/decisions.js';
import { createEnforcement } from './enforcement/enforcement.js';
import { createGate, releaseHolds } from './enforcement/gate.js';
import { storeTimeoutOf, withStoreTimeLimit } from './enforcement/store-time-limit.js';
import { createUsageHold, type UsageHold } from './enforcement/usage-hold.js';
import { KanaClient } from './kana/client.js';
import { DEFAULT_READY_TIMEOUT_MS, KeyStatus } from './kana/key-status.js';
import { createIdempotentReplay } from './metering/idempotent-replay.js';
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
  const config = withTracedLogger(parseOptions(options));
  const { matchRoute, logger, isSuccess, userId: getUserId, enforce } = config;
  const client = config.client instanceof KanaClient ? config.client : new KanaClient(config.client);
  if (isCleartextRemote(client.endpoint)) {
    logger.warn(
      { code: logCodes.insecureEndpoint, host: new URL(client.endpoint).host },
      'kana-meter: the Kana endpoint is plain http:// to another machine: the API key travels in cleartext. Use https://',
    );
  }
  const counters = createCounters();
  const givenStore = config.store ?? new MemoryStore();
  // A store already bound to another kanaMeter() throws here, before anything is started.
  givenStore.bind({ logger });
  // Every call to a store across the network gets a time limit (MemoryStore answers at once).
  const store = givenStore instanceof MemoryStore ? givenStore : withStoreTimeLimit(givenStore, { logger, counters });
  const observeKanaCall = config.metrics && guardObserveKanaCall(config.metrics, counters, config.logger);
  // Told of every Kana call's outcome for the key: stats().configError, ready(), the per-minute error line.
  const keyStatus = new KeyStatus({ client, logger, onConfigError: config.onConfigError });
  const queue = new DeliveryQueue(client, config, counters, observeKanaCall);
  const audit = config.audit && new AuditTrail(config.audit, { logger, counters });
  if (audit) queue.onOutcome((outcome) => audit.delivery(outcome));
  const telemetry = resolveTelemetry(config.metrics, counters, logger);
  queue.instrument(telemetry);
  const enforcement = createEnforcement({
    config,
    client,
    store,
    counters,
    queue,
    observeKanaCall,
    tracing: telemetry.tracing,
  });
  const { entitlements, leases, lookup } = enforcement;
  // Off: undefined, and the request path only tests it.
  const replay =
    config.idempotencyKey &&
    createIdempotentReplay({
      window: store.idempotencyWindow({
        ttlMs: config.idempotencyKey.ttlMs,
        maxKeys: config.idempotencyKey.maxKeys,
        maxBytes: config.idempotencyKey.maxBytes,
        onEvict: () => {
          counters.idempotencyEvictions++;
        },
      }),
      header: config.idempotencyKey.header,
      counters,
      logger,
      getUserId,
      userIdFailed,
      userIdTimeoutMs: config.checkTimeoutMs,
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
    userIdFailed,
    keyStatus,
    gateTimeoutMs: 3 * config.checkTimeoutMs + storeTimeoutOf(givenStore),
    telemetry,
  });
  /** Captures whose userId or delta is still being awaited; flush() and close() wait for them. */
  const asyncCaptures = new Set<Promise<void>>();
  /** Set by close(): responses finishing from now on are reported, not queued. */
  let closed = false;
  let captureFailureLogged = false;
  let skippedNoUserLogged = false;

  const context: MeterContext = {
    meter(req, res, next, feature) {
      if (feature.billAborted) watchAbandoned(res);
      let usage = usages.get(req);
      if (!usage) {
        usage = startUsage(usages, req, undefined);
        // `on`, not `once`: a response finishes once, and `once` allocates a wrapper per request.
        res.on('finish', onFinish);
        // A keyed request's first feature: the Idempotency-Key stage runs before its gate.
        if (replay?.keyed(req)) {
          const started = usage;
          started.tagged = [feature];
          replay.run(req, res, started, () => {
            if (feature.enforce ?? enforce) gate(req, res, next, feature, started);
            else next();
          });
          return;
        }
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
    if (routeFeature.billAborted) watchAbandoned(res);
    // A keyed request: the Idempotency-Key stage runs first (a replay never reaches the gate).
    if (replay?.keyed(req)) {
      replay.run(req, res, usage, () => {
        if (routeFeature.enforce ?? enforce) gate(req, res, next, routeFeature, usage);
        else next();
      });
      return;
    }
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

  /** Responses of `billAborted` routes that finished: their `close` is not an abandonment. */
  const finishedWatched = new WeakSet<object>();

  /** On a `billAborted` route: a `close` without `finish` bills what the route says was delivered. */
  function watchAbandoned(res: Response): void {
    if (res.listeners('close').includes(onAbandonedClose)) return;
    res.on('finish', onWatchedFinish);
    res.on('close', onAbandonedClose);
  }

  function onWatchedFinish(this: ServerResponse): void {
    finishedWatched.add(this);
  }

  function onAbandonedClose(this: ServerResponse): void {
    // Finished (billed on finish), or abandoned before the handler started to answer (nothing delivered).
    if (finishedWatched.has(this) || !this.headersSent) return;
    try {
      finished(this as Response, true);
    } catch (error) {
      captureFailed(error);
    }
  }

  /** `abandoned`: the client left before the response finished; only `billAborted` features are billed. */
  function finished(res: Response, abandoned = false): void {
    const req = res.req;
    const usage = usages.get(req);
    if (usage === undefined || usage.answered) return;
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
      if (usage.userId !== false) captureFor(req, res, usage, usage.userId, late, abandoned);
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
          (id) => captureFor(req, res, usage, id, late, abandoned),
          (error) => userIdFailed(req, error),
        ),
      );
    } else {
      captureFor(req, res, usage, userId, late, abandoned);
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

  function captureFor(
    req: Request,
    res: Response,
    usage: RequestUsage,
    rawUserId: unknown,
    late: boolean,
    abandoned = false,
  ): void {
    let userId: string | null;
    try {
      userId = toKanaUserId(rawUserId);
    } catch (error) {
      userIdFailed(req, error);
      return;
    }
    if (userId === null) {
      counters.skippedNoUser++;
      // Enforced routes say it at the gate (refused, or anonymous: 'allow'); metered-only ones here, once.
      if (!skippedNoUserLogged && usage.checked === undefined) {
        skippedNoUserLogged = true;
        logger.warn(
          { code: logCodes.skippedNoUser, ...where(req) },
          'kana-meter: a metered request succeeded without a user id, so it was not billed (nothing to bill it to). Fine for a public route; otherwise authentication must run before the response finishes. Logged once.',
        );
      }
      return;
    }
    // The common case, one feature from the route map, without building a list.
    if (usage.tagged === undefined) {
      const feature = usage.routeFeature;
      if (feature !== undefined && (!abandoned || feature.billAborted)) captureFeature(req, res, userId, feature, late);
      return;
    }
    for (const feature of featuresToBill(usage)) {
      if (!abandoned || feature.billAborted) captureFeature(req, res, userId, feature, late);
    }
  }

  function captureFeature(req: Request, res: Response, userId: string, feature: MeteredFeature, late: boolean): void {
    if (typeof feature.delta === 'number') {
      enqueue(userId, feature.featureId, feature.delta, late, req);
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

  /** Queues the event, or reports it when its response finished after close() began. */
  /** `from`: the request whose response captured it; undefined for record(); 'hold' for a hold's commit(). */
  function enqueue(userId: string, featureId: string, delta: number, late: boolean, from?: Request | 'hold'): void {
    if (audit) auditCaptured(audit, userId, featureId, delta, from);
    if (late) {
      queue.rejectClosed(userId, featureId, delta);
      return;
    }
    queue.enqueue(userId, featureId, delta);
    enforcement.countUsage(userId, featureId, delta);
  }

  /** Writes the usage line of the audit trail: source `http`, `record` or `hold`. */
  function auditCaptured(
    trail: AuditTrail,
    userId: string,
    featureId: string,
    delta: number,
    from: Request | 'hold' | undefined,
  ): void {
    if (from === undefined || from === 'hold') trail.capturedOutsideRequest(userId, featureId, delta, from ?? 'record');
    else trail.capturedFromRequest(from, usages.get(from), userId, featureId, delta);
  }

  function enqueueChecked(req: Request, userId: string, feature: MeteredFeature, delta: unknown, late: boolean): void {
    if (isValidDelta(delta)) {
      enqueue(userId, feature.featureId, delta, late, req);
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
      configError: keyStatus.configError,
    });
  }

  if (config.metrics) {
    try {
      config.metrics.bind(stats);
    } catch (error) {
      // kanaMeter() throws, so nobody will close this queue: release its spool, sending nothing.
      queue.discard();
      keyStatus.close();
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
      const decision = await enforcement.check(usage.userId, usage.featureId, usage.delta);
      // As for enforced requests: while Kana refuses the key, onConfigError decides.
      if (keyStatus.configError === null || config.onConfigError === 'allow') return decision;
      return fallbackDecision(usage.userId, usage.featureId, usage.delta, 'deny', keyStatus.refusal);
    },
    async hold(userId: string | number, featureId: string, units = 1) {
      const usage = parseUsageArguments('hold', userId, featureId, units);
      const { decision, entry, held } = await enforcement.hold(usage.userId, usage.featureId, usage.delta);
      return createUsageHold(
        decision,
        () => enforcement.unhold(entry, held),
        (used) => enqueue(usage.userId, usage.featureId, used, closed, 'hold'),
      );
    },
    async flush() {
      await settleAsyncCaptures();
      await queue.flush();
      await audit?.flush();
    },
    close(closeOptions?: CloseOptions) {
      const timeoutMs = parseCloseOptions(closeOptions);
      closed = true;
      closing ??= (async () => {
        const started = Date.now();
        enforcement.stop();
        keyStatus.close();
        // Captures already under way (async userId or delta) still make it into the final flush.
        await raceTimeout(settleAsyncCaptures(), timeoutMs);
        await queue.close({ timeoutMs: Math.max(0, timeoutMs - (Date.now() - started)) });
        // Last: the totals include what the queue confirmed while closing; every block goes back.
        await raceTimeout(enforcement.close(), Math.max(0, timeoutMs - (Date.now() - started)));
        // After the queue: its outcomes at close (delivered, spooled, failed) are in the trail.
        await audit?.close();
      })();
      return closing;
    },
    stats,
    ready(readyOptions?: ReadyOptions) {
      // A bad option throws at once, as close()'s does: a programmer error, not Kana's answer.
      return keyStatus.ready(parseReadyOptions(readyOptions));
    },
  });
}

/** ready()'s deadline in ms; a bad one throws a TypeError (a programmer error). */
function parseReadyOptions(readyOptions: ReadyOptions | undefined): number {
  if (readyOptions === undefined) return DEFAULT_READY_TIMEOUT_MS;
  if (typeof readyOptions !== 'object' || readyOptions === null) {
    throw optionError('ready() options', readyOptions, 'an object such as { timeoutMs: 10000 }');
  }
  return checkInteger('ready() timeoutMs', readyOptions.timeoutMs, DEFAULT_READY_TIMEOUT_MS, 1);
}
