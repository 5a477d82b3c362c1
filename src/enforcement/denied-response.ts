// A refused request's answer: the host's onDenied (sync or async, given no `next`), else, or when it fails or sends nothing, the default problem+json refusal.

import type { Request, Response } from 'express';
import type { EntitlementDecision, RefusedDecision } from '../config/decision.js';
import { logCodes } from '../config/errors.js';
import { type KanaLogger, logErrorSafely } from '../config/logger.js';
import type { Counter } from '../config/stats.js';
import { isPromise, toPromise } from '../config/thenable.js';
import { withTimeLimit } from '../config/time-limit.js';
import { where } from '../metering/routed-path.js';
import type { DeniedHandler } from '../options.js';
import { sendRefusal } from './entitlement-response.js';
import type { Entitlement } from './entitlements.js';

export interface DeniedResponseOptions {
  onDenied: DeniedHandler | undefined;
  logger: KanaLogger;
  counters: Record<Counter, number>;
  /** How long an async onDenied may take before the default refusal is sent (checkTimeoutMs). */
  limitMs: number;
}

/**
 * Answers a refused request. `onDenied(req, res, decision)` may answer synchronously or return a
 * promise. Once it has returned (or its promise settled), if it sent no headers, the default
 * refusal is sent. If it throws, rejects, or does not settle within `limitMs`, that is logged
 * (KANA_METER_HOOK_FAILED) and counted (`hookErrors`), and the default refusal is sent if nothing
 * was sent yet. Nothing it does can pass the request to its handler.
 */
export function createDeniedResponse({ onDenied, logger, counters, limitMs }: DeniedResponseOptions) {
  function failed(
    req: Request,
    res: Response,
    decision: EntitlementDecision,
    entry: Entitlement | undefined,
    error: unknown,
  ): void {
    counters.hookErrors++;
    // A handler written for the old (req, res, next, decision) signature calls its 3rd argument: say so.
    const oldSignature = error instanceof TypeError && onDenied !== undefined && onDenied.length >= 4;
    logErrorSafely(
      logger,
      { code: logCodes.hookFailed, hook: 'onDenied', featureId: decision.featureId, err: error, ...where(req) },
      oldSignature
        ? 'kana-meter: onDenied threw; it is called as onDenied(req, res, decision) now, without `next` (its 3rd argument is the decision); the default refusal was sent'
        : 'kana-meter: onDenied threw, rejected or did not settle in time; the default refusal was sent',
    );
    sendRefusal(res, decision, entry);
  }

  return function answerDenied(
    req: Request,
    res: Response,
    decision: EntitlementDecision,
    entry: Entitlement | undefined,
  ): void {
    if (onDenied === undefined) {
      sendRefusal(res, decision, entry);
      return;
    }
    let result: unknown;
    try {
      result = onDenied(req, res, decision as RefusedDecision);
    } catch (error) {
      failed(req, res, decision, entry, error);
      return;
    }
    if (!isPromise(result)) {
      // It answered, or chose to send nothing: the client still gets the refusal.
      sendRefusal(res, decision, entry);
      return;
    }
    withTimeLimit(toPromise(result), limitMs, 'onDenied')
      .then(
        () => sendRefusal(res, decision, entry),
        (error: unknown) => failed(req, res, decision, entry, error),
      )
      .catch(() => {
        // sendRefusal on a destroyed socket: nobody is left to answer.
      });
  };
}
