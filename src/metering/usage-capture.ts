// Capture on finish: when a metered request's response succeeds, its user and each feature's delta become usage events for the intake.

import type { ServerResponse } from 'node:http';
import type { Request, Response } from 'express';
import { logCodes } from '../config/errors.js';
import { logSafely } from '../config/logger.js';
import { describeValue } from '../config/option-checks.js';
import type { Counter } from '../config/stats.js';
import { isPromise, toPromise } from '../config/thenable.js';
import { requestEnded } from '../enforcement/gate.js';
import type { KanaMeterConfig } from '../options.js';
import { isValidDelta, type MeteredFeature } from './metered-feature.js';
import { featuresToBill, type RequestUsage, type RequestUsages } from './request-usage.js';
import { where } from './routed-path.js';
import type { UsageIntake } from './usage-intake.js';
import { toKanaUserId, type UserIdValue } from './user-id.js';

export interface UsageCaptureOptions {
  readonly config: Pick<KanaMeterConfig, 'isSuccess' | 'userId' | 'logger'>;
  readonly counters: Record<Counter, number>;
  readonly usages: RequestUsages;
  readonly intake: UsageIntake;
  /** Logs and counts a `userId` that threw, rejected or gave a non-id. */
  readonly userIdFailed: (req: Request, error: unknown) => void;
}

export class UsageCapture {
  readonly #options: UsageCaptureOptions;
  /** Captures whose userId or delta is still being awaited; drain() waits for them. */
  readonly #pending = new Set<Promise<void>>();
  #failureLogged = false;
  #noUserLogged = false;
  // Listeners shared by every response (no closure per request); `this` is the response.
  readonly #onFinish: (this: ServerResponse) => void;
  readonly #onAbandonedClose: (this: ServerResponse) => void;

  constructor(options: UsageCaptureOptions) {
    this.#options = options;
    const capture = this;
    this.#onFinish = function onFinish(this: ServerResponse) {
      capture.#ended(this as Response, false);
    };
    this.#onAbandonedClose = function onAbandonedClose(this: ServerResponse) {
      // Finished (billed on finish), or abandoned before the handler started to answer (nothing delivered).
      if (!this.writableFinished && this.headersSent) capture.#ended(this as Response, true);
    };
  }

  /** Listens for the end of a metered request's response. `on`, not `once`: `once` allocates a wrapper per request. */
  watch(res: Response): void {
    res.on('finish', this.#onFinish);
  }

  /** On a `billAborted` feature: a `close` without `finish` bills what the route says was delivered. */
  watchAbandoned(res: Response): void {
    if (!res.listeners('close').includes(this.#onAbandonedClose)) res.on('close', this.#onAbandonedClose);
  }

  /** Resolves once every capture under way (an async userId or delta) has reached the intake. */
  async drain(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  #ended(res: Response, abandoned: boolean): void {
    // Whatever a hook returned, nothing thrown here may reach the response's emit (it would crash the process).
    try {
      const usage = this.#options.usages.get(res.req);
      if (usage !== undefined && !usage.answered) this.#capture(usage, res, abandoned);
    } catch (error) {
      this.#captureFailed(error);
    }
  }

  #capture(usage: RequestUsage, res: Response, abandoned: boolean): void {
    if (usage.checked !== undefined) {
      // Held units are given back first; on success they come back as captured usage just below.
      requestEnded(usage);
      if (usage.refused) return;
    }
    if (!this.#succeeded(res)) return;
    usage.late = this.#options.intake.closed;
    usage.abandoned = abandoned;
    if (usage.userId !== undefined) {
      // Read by the gate before the handler: billed as it was checked (false: userId failed, already reported).
      if (usage.userId !== false) this.#captureFor(usage, res, usage.userId);
      return;
    }
    const req = res.req as Request;
    let userId: UserIdValue | Promise<UserIdValue>;
    try {
      userId = this.#options.config.userId(req, res);
    } catch (error) {
      this.#options.userIdFailed(req, error);
      return;
    }
    if (!isPromise(userId)) {
      this.#captureFor(usage, res, userId);
      return;
    }
    this.#track(
      toPromise(userId).then(
        (id) => this.#captureFor(usage, res, id),
        (error) => this.#options.userIdFailed(req, error),
      ),
    );
  }

  #succeeded(res: Response): boolean {
    const { isSuccess, logger } = this.#options.config;
    if (!isSuccess) return res.statusCode >= 200 && res.statusCode < 300;
    try {
      return isSuccess(res.req as Request, res) === true;
    } catch (error) {
      this.#options.counters.hookErrors++;
      logger.error(
        { code: logCodes.hookFailed, hook: 'isSuccess', err: error, ...where(res.req as Request) },
        'kana-meter: isSuccess threw; the request was not metered',
      );
      return false;
    }
  }

  #captureFor(usage: RequestUsage, res: Response, rawUserId: unknown): void {
    let userId: string | null;
    try {
      userId = toKanaUserId(rawUserId);
    } catch (error) {
      this.#options.userIdFailed(res.req as Request, error);
      return;
    }
    if (userId === null) {
      this.#noUser(usage, res);
      return;
    }
    // The common case, one feature from the route map, without building a list.
    if (usage.tagged === undefined) {
      const feature = usage.routeFeature;
      if (feature !== undefined && (!usage.abandoned || feature.billAborted))
        this.#captureFeature(usage, res, userId, feature);
      return;
    }
    for (const feature of featuresToBill(usage)) {
      if (!usage.abandoned || feature.billAborted) this.#captureFeature(usage, res, userId, feature);
    }
  }

  #noUser(usage: RequestUsage, res: Response): void {
    this.#options.counters.skippedNoUser++;
    // Enforced routes say it at the gate (refused, or anonymous: 'allow'); metered-only ones here, once.
    if (this.#noUserLogged || usage.checked !== undefined) return;
    this.#noUserLogged = true;
    this.#options.config.logger.warn(
      { code: logCodes.skippedNoUser, ...where(res.req as Request) },
      'kana-meter: a metered request succeeded without a user id, so it was not billed (nothing to bill it to). Fine for a public route; otherwise authentication must run before the response finishes. Logged once.',
    );
  }

  #captureFeature(usage: RequestUsage, res: Response, userId: string, feature: MeteredFeature): void {
    if (typeof feature.delta === 'number') {
      this.#options.intake.takeFromResponse(res, usage, userId, feature.featureId, feature.delta);
      return;
    }
    let delta: unknown;
    try {
      delta = feature.delta(res.req as Request, res);
    } catch (error) {
      this.#deltaFailed(res, feature, error);
      return;
    }
    if (!isPromise(delta)) {
      this.#takeDelta(usage, res, userId, feature, delta);
      return;
    }
    this.#track(
      toPromise(delta).then(
        (value) => this.#takeDelta(usage, res, userId, feature, value),
        (error) => this.#deltaFailed(res, feature, error),
      ),
    );
  }

  #takeDelta(usage: RequestUsage, res: Response, userId: string, feature: MeteredFeature, delta: unknown): void {
    if (isValidDelta(delta)) {
      this.#options.intake.takeFromResponse(res, usage, userId, feature.featureId, delta);
      return;
    }
    // Nothing was used (an empty export, a completion of no tokens): nothing to bill, nothing wrong.
    if (delta === 0) return;
    this.#options.counters.invalidDelta++;
    this.#options.config.logger.warn(
      {
        code: logCodes.invalidDelta,
        route: feature.source,
        featureId: feature.featureId,
        userId,
        // String() of a primitive; a description of an object (String() may throw on one without a prototype).
        delta: typeof delta === 'object' || typeof delta === 'function' ? describeValue(delta) : String(delta),
        ...where(res.req as Request),
      },
      'kana-meter: delta is not an integer in 1..2147483647; this usage was not sent',
    );
  }

  #deltaFailed(res: Response, feature: MeteredFeature, error: unknown): void {
    this.#options.counters.hookErrors++;
    this.#options.config.logger.error(
      {
        code: logCodes.hookFailed,
        hook: 'delta',
        route: feature.source,
        featureId: feature.featureId,
        err: error,
        ...where(res.req as Request),
      },
      'kana-meter: the delta function threw; this usage was not sent',
    );
  }

  #track(capture: Promise<void>): void {
    const guarded = capture.catch((error: unknown) => this.#captureFailed(error));
    this.#pending.add(guarded);
    void guarded.finally(() => this.#pending.delete(guarded));
  }

  /** Something unexpected while capturing usage (a bug, or a hook value nothing could read): counted, logged once. */
  #captureFailed(error: unknown): void {
    this.#options.counters.hookErrors++;
    if (this.#failureLogged) return;
    this.#failureLogged = true;
    logSafely(() =>
      this.#options.config.logger.error(
        { code: logCodes.captureFailed, err: error },
        'kana-meter: unexpected error while capturing usage; that usage was not sent (logged once, counted in hookErrors)',
      ),
    );
  }
}
