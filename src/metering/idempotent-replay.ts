// The Idempotency-Key stage: before the gate and the handler, a keyed request is run once, and its retries get the stored response (or 409, or 422).

import type { ServerResponse } from 'node:http';
import type { Request, Response } from 'express';
import { logCodes } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import type { Counter } from '../config/stats.js';
import { isPromise } from '../config/thenable.js';
import { type IdempotencyClaim, type IdempotencyWindow, idempotencyKeyOf, windowKey } from './idempotency-window.js';
import { fingerprintRequest } from './request-fingerprint.js';
import type { RequestUsage } from './request-usage.js';
import { captureResponse, sendReplay } from './response-capture.js';
import { where } from './routed-path.js';
import { readRequestUser } from './user-id.js';

/** The problem details (RFC 9457) of the two refusals of draft-ietf-httpapi-idempotency-key-header (section 2.7). */
export const IDEMPOTENCY_PROBLEMS = {
  409: {
    type: 'about:blank',
    title: 'Conflict',
    detail: 'The first request with this Idempotency-Key has not finished yet: retry it later with the same key.',
  },
  422: {
    type: 'about:blank',
    title: 'Unprocessable Content',
    detail:
      'An Idempotency-Key can only be retried with the same method, path, query and body as its first request. Use a new key for a new request.',
  },
} as const;

export interface IdempotentReplayOptions {
  readonly window: IdempotencyWindow;
  /** The key's header, lower case. */
  readonly header: string;
  readonly counters: Record<Counter, number>;
  readonly logger: KanaLogger;
  readonly getUserId: (req: Request, res: Response) => unknown;
  readonly userIdFailed: (req: Request, error: unknown) => void;
  /** How long an async `userId` hook may take (checkTimeoutMs, as in the gate). */
  readonly userIdTimeoutMs: number;
}

/**
 * Creates the stage. `keyed(req)` is the only work a request without a key costs; `run` takes a
 * keyed request through it and calls `proceed` (the gate, or next) when the request is to run:
 * it claimed the key, or carries no user, or its body is too large to fingerprint, or the window
 * cannot be asked (then it runs, and is billed, as a request without a key).
 */
export function createIdempotentReplay({
  window,
  header,
  counters,
  logger,
  getUserId,
  userIdFailed,
  userIdTimeoutMs,
}: IdempotentReplayOptions) {
  let failureLogged = false;

  function keyed(req: Request): boolean {
    return req.headers[header] !== undefined;
  }

  function run(req: Request, res: Response, usage: RequestUsage, proceed: () => void): void {
    const key = idempotencyKeyOf(req, header);
    if (key === undefined) {
      proceed();
      return;
    }
    // The user is read once, here, before the handler: the gate and the capture use this one.
    if (usage.userId !== undefined) {
      withUser(req, res, usage, key, usage.userId, proceed);
      return;
    }
    readRequestUser(
      usage,
      () => getUserId(req, res),
      userIdTimeoutMs,
      (error) => userIdFailed(req, error),
      (userId) => withUser(req, res, usage, key, userId, proceed),
    )?.catch(stageFailed);
  }

  function withUser(
    req: Request,
    res: Response,
    usage: RequestUsage,
    key: string,
    userId: string | null | false,
    proceed: () => void,
  ): void {
    // Keys are per user: without one, the key cannot be scoped, so it is not honoured.
    if (typeof userId !== 'string') {
      proceed();
      return;
    }
    fingerprintRequest(req, (fingerprint) => {
      if (gone(req, res)) return;
      if (fingerprint === undefined) {
        proceed();
        return;
      }
      const scoped = windowKey(userId, key);
      let claim: IdempotencyClaim | Promise<IdempotencyClaim>;
      try {
        claim = window.begin(scoped, fingerprint);
      } catch (error) {
        windowFailed(req, error, proceed);
        return;
      }
      if (!isPromise(claim)) {
        claimed(req, res, usage, scoped, fingerprint, claim, proceed);
        return;
      }
      claim
        .then(
          (answer) => claimed(req, res, usage, scoped, fingerprint, answer, proceed),
          (error: unknown) => windowFailed(req, error, proceed),
        )
        .catch(stageFailed);
    });
  }

  function claimed(
    req: Request,
    res: Response,
    usage: RequestUsage,
    key: string,
    fingerprint: string,
    claim: IdempotencyClaim,
    proceed: () => void,
  ): void {
    if (claim.status === 'claimed') {
      if (gone(req, res)) {
        settle(window.release(key, fingerprint));
        return;
      }
      storeWhenFinished(res, key, fingerprint);
      proceed();
      return;
    }
    if (gone(req, res)) return;
    // Answered here: the handler does not run, and nothing is billed.
    usage.answered = true;
    if (claim.fingerprint !== fingerprint) {
      sendProblem(res, 422);
    } else if (claim.status === 'in-flight') {
      sendProblem(res, 409);
    } else {
      counters.idempotentReplays++;
      sendReplay(res, claim.response);
    }
  }

  /** On 'finish' with a 2xx status, the response is stored; otherwise (or on 'close' first) the key is released. */
  function storeWhenFinished(res: Response, key: string, fingerprint: string): void {
    const stored = captureResponse(res);
    let done = false;
    res.once('finish', () => {
      done = true;
      const response = res.statusCode >= 200 && res.statusCode < 300 ? stored() : undefined;
      settle(response === undefined ? window.release(key, fingerprint) : window.complete(key, fingerprint, response));
    });
    res.once('close', () => {
      if (!done) settle(window.release(key, fingerprint));
    });
  }

  /** A store that fails to store or release: the key stays claimed until IDEMPOTENCY_CLAIM_MS (retries get 409), nothing is lost. */
  function settle(result: void | Promise<void>): void {
    if (isPromise(result)) result.catch(() => {});
  }

  function windowFailed(req: Request, error: unknown, proceed: () => void): void {
    counters.hookErrors++;
    if (!failureLogged) {
      failureLogged = true;
      logger.error(
        { code: logCodes.hookFailed, hook: 'idempotency window', err: error, ...where(req) },
        'kana-meter: the idempotency window could not be asked; the request ran as one without a key, and is billed (logged once, counted in hookErrors)',
      );
    }
    proceed();
  }

  /** A bug after an await: logged like the gate's, never thrown into the host. */
  function stageFailed(error: unknown): void {
    try {
      logger.error(
        { code: logCodes.gateFailed, err: error },
        'kana-meter: unexpected error in the Idempotency-Key stage',
      );
    } catch {
      // A logger that throws cannot be told.
    }
  }

  return { keyed, run };
}

/** The client left while the stage waited: nobody to answer. */
function gone(req: Request, res: ServerResponse): boolean {
  return req.destroyed || res.destroyed || res.writableEnded;
}

function sendProblem(res: ServerResponse, status: 409 | 422): void {
  if (res.headersSent) return;
  const body = JSON.stringify({ ...IDEMPOTENCY_PROBLEMS[status], status });
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/problem+json');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}
