// Shadow mode's would-be refusals: each one counted, and logged at most once per interval.

import type { Request } from 'express';
import type { EntitlementDecision } from '../config/decision.js';
import { logCodes } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import type { Counter } from '../config/stats.js';
import { where } from '../metering/routed-path.js';

/** In shadow mode, at most one log line of would-be refusals per this interval (every one is counted). */
export const SHADOW_LOG_INTERVAL_MS = 10_000;

/** One gate's shadow-mode log: the first would-be refusal, then at most one line per SHADOW_LOG_INTERVAL_MS. */
export class ShadowLog {
  #loggedAt = Number.NEGATIVE_INFINITY;
  #notLogged = 0;

  constructor(
    private readonly logger: KanaLogger,
    private readonly counters: Record<Counter, number>,
  ) {}

  /** Counts a request enforcement would have refused (it was served), and logs it unless one was logged lately. */
  denied(req: Request, decision: EntitlementDecision): void {
    this.counters.shadowDenied++;
    const now = Date.now();
    if (now - this.#loggedAt < SHADOW_LOG_INTERVAL_MS) {
      this.#notLogged++;
      return;
    }
    const { userId, featureId, reason, status, source, used, budget } = decision;
    this.logger.info(
      {
        code: logCodes.shadowDenied,
        userId,
        featureId,
        reason,
        status,
        source,
        used,
        budget,
        notLogged: this.#notLogged,
        shadowDenied: this.counters.shadowDenied,
        ...where(req),
      },
      `kana-meter: shadow mode: enforcement would have refused this request with ${status}; it was served (at most one line per ${SHADOW_LOG_INTERVAL_MS / 1000} s, notLogged since the last)`,
    );
    this.#loggedAt = now;
    this.#notLogged = 0;
  }
}
