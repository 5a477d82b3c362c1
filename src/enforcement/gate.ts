// The entitlement gate: checks an enforced request before its handler, holds its units until it ends, or refuses it.

import type { ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import type { EntitlementDecision, KanaErrorPolicy } from '../config/decision.js';
import { logCodes } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import type { Counter } from '../config/stats.js';
import { NO_TELEMETRY, type Telemetry, traceLookup } from '../config/telemetry.js';
import { isPromise } from '../config/thenable.js';
import { isKeyRefusal } from '../kana/key-status.js';
import type { MeteredFeature } from '../metering/metered-feature.js';
import type { RequestUsage, RequestUsages } from '../metering/request-usage.js';
import { where } from '../metering/routed-path.js';
import { type RequestUser, readUser, type UserReader } from '../metering/user-id.js';
import type { KanaMeterConfig } from '../options.js';
import { decisionFrom, fallbackDecision, isCheckRefused } from './decisions.js';
import { createDeniedResponse } from './denied-response.js';
import type { Lookup } from './entitlement-lookup.js';
import { setRateLimitHeaders } from './entitlement-response.js';
import type { Entitlement, EntitlementCache } from './entitlements.js';
import { gateFailed, gateTimedOut } from './gate-failure.js';
import {
  checkRefusedProblem,
  configErrorProblem,
  type GateProblem,
  noUserProblem,
  sendProblem,
} from './gate-refusals.js';
import { GateRequest } from './gate-request.js';
import './express-augmentation.js';
import type { Taken } from './key-ledger.js';
import type { Leases } from './leases.js';
import { setDecision } from './request-decision.js';
import { ShadowLog } from './shadow-log.js';

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
export function createGate(options: GateOptions) {
  const checks = new Gate(options);
  return {
    gate(req: Request, res: Response, next: NextFunction, feature: MeteredFeature, usage: RequestUsage): void {
      checks.pass(req, res, next, feature, usage);
    },
  };
}

/**
 * One kanaMeter()'s gate. An enforced request's path, top to bottom, each stage given the
 * request's one GateRequest: pass (once per feature) → readUser → checkUser (no user: 401; a key
 * Kana refuses: 503) → lookUp (a fresh cached answer at once, else Kana within the gate's bound)
 * → useLookup → take (units from the lease) → decide: allowed (next) or refuse (onDenied, else
 * 402/429; shadow mode serves it). A throw, a rejection or the deadline: gate-failure.ts.
 */
export class Gate {
  readonly counters: Record<Counter, number>;
  readonly logger: KanaLogger;
  readonly gateTimeoutMs: number;
  readonly #cache: EntitlementCache;
  readonly #leases: Leases;
  readonly #lookUpMissed: GateOptions['lookUpMissed'];
  readonly #keyStatus: GateOptions['keyStatus'];
  readonly #observeDecision: Telemetry['observeDecision'];
  readonly #tracing: Telemetry['tracing'];
  readonly #onKanaError: KanaErrorPolicy;
  readonly #rateLimitHeaders: boolean;
  readonly #enforce: GateOptions['config']['enforce'];
  readonly #anonymous: GateOptions['config']['anonymous'];
  readonly #onConfigError: GateOptions['config']['onConfigError'];
  readonly #answerDenied: ReturnType<typeof createDeniedResponse>;
  readonly #shadowLog: ShadowLog;
  /** Reads a request's user for its GateRequest (made once: no closure per request). */
  readonly #reader: UserReader<GateRequest>;
  readonly #onDeadline = (request: GateRequest): void => gateTimedOut(this, request);
  /** `close` of an enforced response (shared by this kanaMeter's; `this` is the response): it ended, finished or aborted. */
  readonly #onClose: (this: ServerResponse) => void;
  #warnedNoUser = false;

  constructor(options: GateOptions) {
    const { config, counters, cache, usages, leases, lookUpMissed, userIdFailed, keyStatus } = options;
    const { userId: getUserId, logger, onDenied, checkTimeoutMs } = config;
    const { observeDecision, tracing } = options.telemetry ?? NO_TELEMETRY;
    this.counters = counters;
    this.logger = logger;
    this.gateTimeoutMs = options.gateTimeoutMs;
    this.#cache = cache;
    this.#leases = leases;
    this.#lookUpMissed = lookUpMissed;
    this.#keyStatus = keyStatus;
    this.#observeDecision = observeDecision;
    this.#tracing = tracing;
    this.#onKanaError = config.onKanaError;
    this.#rateLimitHeaders = config.rateLimitHeaders;
    this.#enforce = config.enforce;
    this.#anonymous = config.anonymous;
    this.#onConfigError = config.onConfigError;
    this.#answerDenied = createDeniedResponse({ onDenied, logger, counters, limitMs: checkTimeoutMs });
    this.#shadowLog = new ShadowLog(logger, counters);
    this.#reader = {
      ask: (request) => getUserId(request.req, request.res),
      limitMs: checkTimeoutMs,
      failed: (request, error) => userIdFailed(request.req, error),
      withUser: (request, user) => this.#checkUser(request, user),
    };
    this.#onClose = function onClose(this: ServerResponse): void {
      const usage = usages.get(this.req);
      if (usage !== undefined) requestEnded(usage);
    };
  }

  /**
   * Checks `feature` for this request, then calls next() or refuses it. Once per request and
   * feature: a second gate for a feature already checked (the route map and meter() both name it,
   * or meter() runs twice) goes straight on, under the first one's decision and hold.
   */
  pass(req: Request, res: Response, next: NextFunction, feature: MeteredFeature, usage: RequestUsage): void {
    const { checked } = usage;
    const { featureId } = feature;
    if (checked === undefined) {
      usage.checked = featureId;
      res.on('close', this.#onClose);
    } else if (checked === featureId || (typeof checked !== 'string' && checked.includes(featureId))) {
      next();
      return;
    } else if (typeof checked === 'string') {
      usage.checked = [checked, featureId];
    } else {
      checked.push(featureId);
    }
    // From here on `next` runs at most once, and a request the gate waits for is decided within gateTimeoutMs.
    const request = new GateRequest(req, res, next, feature, usage, (feature.enforce ?? this.#enforce) === 'shadow');
    try {
      this.#readUser(request);
    } catch (error) {
      gateFailed(this, request, error);
    }
  }

  /** Reads the request's user (once per request: the same id is billed when the response finishes), then checks it. */
  #readUser(request: GateRequest): void {
    const { usage } = request;
    if (usage.userId !== undefined) {
      this.#checkUser(request, usage.userId);
      return;
    }
    const waiting = readUser(this.#reader, usage, request);
    if (waiting !== undefined) this.#waitForUser(request, waiting);
  }

  /** An async `userId` hook: the gate's deadline runs from here. */
  #waitForUser(request: GateRequest, waiting: Promise<void>): void {
    request.armDeadline(this.gateTimeoutMs, this.#onDeadline);
    waiting.catch((error: unknown) => gateFailed(this, request, error));
  }

  /** The refusals before any lookup: no user (`anonymous` decides), a key Kana refuses (`onConfigError` decides). */
  #checkUser(request: GateRequest, user: RequestUser): void {
    if (typeof user !== 'string') {
      this.#noUser(request, user);
      return;
    }
    request.userId = user;
    // Kana refuses the key: nothing served now could be billed, whatever the cache says.
    if (this.#onConfigError === 'deny' && this.#keyStatus.configError !== null) {
      this.#refuseUnbillable(request, undefined, configErrorProblem);
      return;
    }
    this.#lookUp(request);
  }

  /** The entitlement: a fresh cached answer decides in this tick; a miss waits for Kana, within the gate's bound. */
  #lookUp(request: GateRequest): void {
    const entry = this.#cache.fresh(request.userId, request.feature.featureId);
    if (entry === undefined) {
      this.#lookUpMiss(request);
      return;
    }
    this.counters.cacheHits++;
    this.#take(request, entry);
  }

  /**
   * Not in the cache: Kana, else a stale answer, else nothing. (Apart from #lookUp: a function that
   * makes closures allocates their scope on every call, cache hits included.)
   */
  #lookUpMiss(request: GateRequest): void {
    const { userId, feature } = request;
    // Traced: the wait is a span of the request's trace, and the Kana call a child of it.
    const wait = this.#tracing?.startCheckWait(feature.featureId);
    const found =
      wait === undefined
        ? this.#lookUpMissed(userId, feature.featureId, feature.checkDelta)
        : traceLookup(wait, () => this.#lookUpMissed(userId, feature.featureId, feature.checkDelta));
    if (isPromise(found)) {
      request.armDeadline(this.gateTimeoutMs, this.#onDeadline);
      found
        .then((lookup) => this.#useLookup(request, lookup))
        .catch((error: unknown) => gateFailed(this, request, error));
    } else {
      this.#useLookup(request, found);
    }
  }

  /** What a cache miss found: a refused key or check (`onConfigError` decides), nothing (`onKanaError` decides), or an answer. */
  #useLookup(request: GateRequest, lookup: Lookup): void {
    // A refused key is not an outage: onConfigError decides, not onKanaError nor a stale answer.
    // (Only while this instance's key is refused: another instance's failure shared by the store may be older.)
    if (isKeyRefusal(lookup.error) && this.#keyStatus.configError !== null) {
      this.#refuseUnbillable(request, lookup.error, configErrorProblem);
      return;
    }
    if (lookup.entry === undefined) {
      // Kana does not know the user or the feature: not an outage, and nothing served could be billed.
      if (isCheckRefused(lookup.error)) this.#refuseUnbillable(request, lookup.error, checkRefusedProblem);
      else this.fallBack(request, request.userId, lookup.error);
      return;
    }
    request.source = lookup.source;
    request.error = lookup.error;
    this.#take(request, lookup.entry);
  }

  /** Takes the request's units (at once from a lease or Kana's answer, or after a reservation), then decides. */
  #take(request: GateRequest, entry: Entitlement): void {
    // The client left while Kana was being asked (nothing to hold, nobody to answer), or the deadline decided.
    if (request.isOver()) return;
    const taken = this.#leases.take(entry, request.feature.checkDelta, true);
    if (isPromise(taken)) this.#waitForUnits(request, entry, taken);
    else this.#decide(request, entry, taken);
  }

  /** The lease asks the store for a block first: the gate's deadline runs from here. */
  #waitForUnits(request: GateRequest, entry: Entitlement, taken: Promise<Taken>): void {
    request.armDeadline(this.gateTimeoutMs, this.#onDeadline);
    taken
      .then((units) => this.#decide(request, entry, units))
      .catch((failure: unknown) => gateFailed(this, request, failure));
  }

  /** Allowed: the units stay held until the request ends, and the handler runs. Else refused. */
  #decide(request: GateRequest, entry: Entitlement, taken: Taken): void {
    if (request.isOver()) {
      // It ended (or the deadline decided it) while the store was asked: its units go back at once.
      entry.ledger.releaseHeld(taken.held);
      return;
    }
    const { req, res, usage, shadow } = request;
    if (request.source === 'stale') this.counters.staleHits++;
    const decision = decisionFrom(entry, request.feature.checkDelta, request.source, request.error, taken);
    setDecision(req, usage.shared, decision);
    this.#observeDecision?.(decision, shadow);
    if (!decision.allowed) {
      this.#refuse(request, decision, entry);
      return;
    }
    if (taken.held > 0) usage.holds = { entitlement: entry, delta: taken.held, next: usage.holds };
    this.counters.allowed++;
    // Shadow mode changes nothing clients see: no RateLimit headers.
    if (this.#rateLimitHeaders && !shadow && decision.remaining !== null && !entry.overageEnabled && !res.headersSent) {
      setRateLimitHeaders(res, entry, decision.remaining);
    }
    request.proceed();
  }

  /** Kana could not be asked and has never answered for this user and feature: `onKanaError` decides. */
  fallBack(request: GateRequest, userId: string, error: unknown): void {
    if (request.isOver()) return;
    const { feature } = request;
    const decision = fallbackDecision(userId, feature.featureId, feature.checkDelta, this.#onKanaError, error);
    setDecision(request.req, request.usage.shared, decision);
    this.#observeDecision?.(decision, request.shadow);
    if (!decision.allowed) {
      this.#refuse(request, decision, undefined);
      return;
    }
    this.counters.allowed++;
    this.counters.failedOpen++;
    request.proceed();
  }

  /** Refused: `onDenied` answers, else the default 402/429/503; shadow mode serves it (billed as usual) and logs it. */
  #refuse(request: GateRequest, decision: EntitlementDecision, entry: Entitlement | undefined): void {
    if (request.shadow) {
      // What enforcement would have refused goes on, and is billed as usual.
      this.#shadowLog.denied(request.req, decision);
      request.proceed();
      return;
    }
    // Refused, whatever onDenied does: it gets no `next`, and the deadline has nothing left to decide.
    this.#refused(request, 'denied');
    this.#answerDenied(request.req, request.res, decision, entry);
  }

  /** No user (or userId failed): nothing to check nor bill it to. Refused, unless `anonymous` says otherwise. */
  #noUser(request: GateRequest, user: null | false): void {
    if (this.#anonymous === 'refuse') {
      this.#refuseNoUser(request);
      return;
    }
    this.counters.unchecked++;
    if (user === null && !this.#warnedNoUser) {
      this.#warnedNoUser = true;
      this.logger.warn(
        { code: logCodes.uncheckedNoUser, featureId: request.feature.featureId, ...where(request.req) },
        'kana-meter: an enforced request had no user id, so it was neither checked nor billed. Authentication must run before kanaMeter()/meter() on enforced routes. Logged once.',
      );
    }
    if (!request.usage.ended) request.proceed();
  }

  /** No user on an enforced route, `anonymous: 'refuse'`: 401, the handler does not run; shadow mode serves it (unbilled) and counts it. */
  #refuseNoUser(request: GateRequest): void {
    if (request.isOver()) return;
    const { shadow, feature } = request;
    if (!this.#warnedNoUser) {
      this.#warnedNoUser = true;
      this.logger.warn(
        { code: logCodes.refusedNoUser, featureId: feature.featureId, shadow, ...where(request.req) },
        shadow
          ? 'kana-meter: shadow mode: an enforced request had no user id; enforcement would refuse it with 401 (it was served, unbilled). Authentication must run before kanaMeter()/meter() on enforced routes. Logged once.'
          : "kana-meter: an enforced request had no user id, so it was refused with 401 (anonymous: 'refuse'). Authentication must run before kanaMeter()/meter() on enforced routes. Logged once.",
      );
    }
    if (shadow) {
      this.counters.unchecked++;
      this.counters.shadowDenied++;
      request.proceed();
      return;
    }
    this.#refused(request, 'refusedNoUser');
    sendProblem(request.res, noUserProblem(feature.featureId));
  }

  /**
   * Kana refuses the API key, or the check itself: nothing served could be billed. `onConfigError` decides ('deny':
   * 503 with `problem`, the handler does not run); shadow mode serves it.
   */
  #refuseUnbillable(request: GateRequest, error: unknown, problem: (featureId: string) => GateProblem): void {
    if (request.isOver()) return;
    const { feature } = request;
    const policy = this.#onConfigError === 'deny' ? 'deny' : 'allow';
    setDecision(
      request.req,
      request.usage.shared,
      fallbackDecision(request.userId, feature.featureId, feature.checkDelta, policy, error),
    );
    if (policy === 'allow') {
      this.counters.allowed++;
      this.counters.failedOpen++;
      request.proceed();
      return;
    }
    if (request.shadow) {
      this.counters.shadowDenied++;
      request.proceed();
      return;
    }
    this.#refused(request, 'denied');
    sendProblem(request.res, problem(feature.featureId));
  }

  /** The request is refused (its answer is being sent): never billed, counted, and nothing else may decide it. */
  #refused(request: GateRequest, counter: 'denied' | 'refusedNoUser'): void {
    request.usage.refused = true;
    this.counters[counter]++;
    request.markDecided();
  }
}

/** The request's response finished or closed: a check answering later leaves it alone, and its held units come back. */
export function requestEnded(usage: RequestUsage): void {
  usage.ended = true;
  if (usage.holds !== undefined) releaseHolds(usage);
}

/** Gives back the units a request holds; each hold is released exactly once (the list is detached first). */
function releaseHolds(usage: RequestUsage): void {
  let hold = usage.holds;
  usage.holds = undefined;
  while (hold !== undefined) {
    hold.entitlement.ledger.releaseHeld(hold.delta);
    hold = hold.next;
  }
}
