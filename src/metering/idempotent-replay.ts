// The Idempotency-Key stage: before the gate and the handler, a keyed request is run once, and its retries get the stored response (or 409, or 422).

import type { ServerResponse } from 'node:http';
import type { Request, Response } from 'express';
import { logCodes } from '../config/errors.js';
import { type KanaLogger, logSafely } from '../config/logger.js';
import type { Counter } from '../config/stats.js';
import { isPromise } from '../config/thenable.js';
import { type IdempotencyClaim, type IdempotencyWindow, idempotencyKeyOf, windowKey } from './idempotency-window.js';
import { fingerprintRequest } from './request-fingerprint.js';
import type { RequestUsage } from './request-usage.js';
import { captureResponse, sendReplay } from './response-capture.js';
import { where } from './routed-path.js';
import { readUser, type UserReader } from './user-id.js';

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

/** A keyed request on its way through the stage. */
interface KeyedRequest {
  readonly req: Request;
  readonly res: Response;
  readonly usage: RequestUsage;
  /** The Idempotency-Key header's value. */
  readonly key: string;
  /** Runs the request: the gate, or next. */
  readonly proceed: () => void;
  /** The key in the window: per user. */
  scoped: string;
  fingerprint: string;
}

/**
 * The stage. `keyed(req)` is the only work a request without a key costs; `run` takes a keyed
 * request through it and calls `proceed` (the gate, or next) when the request is to run: it
 * claimed the key, or carries no user, or its body is too large to fingerprint, or the window
 * cannot be asked (then it runs, and is billed, as a request without a key).
 */
export class IdempotentReplay {
  readonly #options: IdempotentReplayOptions;
  /** Reads a keyed request's user (made once, as the gate's is). */
  readonly #reader: UserReader<KeyedRequest>;
  #failureLogged = false;

  constructor(options: IdempotentReplayOptions) {
    this.#options = options;
    const { getUserId, userIdFailed, userIdTimeoutMs } = options;
    this.#reader = {
      ask: (keyed) => getUserId(keyed.req, keyed.res),
      limitMs: userIdTimeoutMs,
      failed: (keyed, error) => userIdFailed(keyed.req, error),
      withUser: (keyed, user) => this.#withUser(keyed, user),
    };
  }

  keyed(req: Request): boolean {
    return req.headers[this.#options.header] !== undefined;
  }

  run(req: Request, res: Response, usage: RequestUsage, proceed: () => void): void {
    const key = idempotencyKeyOf(req, this.#options.header);
    if (key === undefined) {
      proceed();
      return;
    }
    const keyed: KeyedRequest = { req, res, usage, key, proceed, scoped: '', fingerprint: '' };
    // The user is read once, here, before the handler: the gate and the capture use this one.
    if (usage.userId !== undefined) {
      this.#withUser(keyed, usage.userId);
      return;
    }
    readUser(this.#reader, usage, keyed)?.catch((error: unknown) => this.#stageFailed(error));
  }

  #withUser(keyed: KeyedRequest, userId: string | null | false): void {
    // Keys are per user: without one, the key cannot be scoped, so it is not honoured.
    if (typeof userId !== 'string') {
      keyed.proceed();
      return;
    }
    fingerprintRequest(keyed.req, (fingerprint) => {
      if (gone(keyed)) return;
      if (fingerprint === undefined) {
        keyed.proceed();
        return;
      }
      keyed.scoped = windowKey(userId, keyed.key);
      keyed.fingerprint = fingerprint;
      this.#begin(keyed);
    });
  }

  #begin(keyed: KeyedRequest): void {
    let claim: IdempotencyClaim | Promise<IdempotencyClaim>;
    try {
      claim = this.#options.window.begin(keyed.scoped, keyed.fingerprint);
    } catch (error) {
      this.#windowFailed(keyed, error);
      return;
    }
    if (!isPromise(claim)) {
      this.#claimed(keyed, claim);
      return;
    }
    claim
      .then(
        (answer) => this.#claimed(keyed, answer),
        (error: unknown) => this.#windowFailed(keyed, error),
      )
      .catch((error: unknown) => this.#stageFailed(error));
  }

  #claimed(keyed: KeyedRequest, claim: IdempotencyClaim): void {
    const { usage, res, fingerprint } = keyed;
    if (claim.status === 'claimed') {
      if (gone(keyed)) {
        ignoreFailure(this.#options.window.release(keyed.scoped, fingerprint));
        return;
      }
      this.#storeWhenFinished(keyed);
      keyed.proceed();
      return;
    }
    if (gone(keyed)) return;
    // Answered here: the handler does not run, and nothing is billed.
    usage.answered = true;
    if (claim.fingerprint !== fingerprint) {
      sendProblem(res, 422);
    } else if (claim.status === 'in-flight') {
      sendProblem(res, 409);
    } else {
      this.#options.counters.idempotentReplays++;
      sendReplay(res, claim.response);
    }
  }

  /** On 'finish' with a 2xx status, the response is stored; otherwise (or on 'close' first) the key is released. */
  #storeWhenFinished({ res, scoped, fingerprint }: KeyedRequest): void {
    const { window } = this.#options;
    const stored = captureResponse(res);
    let done = false;
    res.once('finish', () => {
      done = true;
      const response = res.statusCode >= 200 && res.statusCode < 300 ? stored() : undefined;
      ignoreFailure(
        response === undefined ? window.release(scoped, fingerprint) : window.complete(scoped, fingerprint, response),
      );
    });
    res.once('close', () => {
      if (!done) ignoreFailure(window.release(scoped, fingerprint));
    });
  }

  #windowFailed(keyed: KeyedRequest, error: unknown): void {
    this.#options.counters.hookErrors++;
    if (!this.#failureLogged) {
      this.#failureLogged = true;
      this.#options.logger.error(
        { code: logCodes.hookFailed, hook: 'idempotency window', err: error, ...where(keyed.req) },
        'kana-meter: the idempotency window could not be asked; the request ran as one without a key, and is billed (logged once, counted in hookErrors)',
      );
    }
    keyed.proceed();
  }

  /** A bug after an await: logged like the gate's, never thrown into the host. */
  #stageFailed(error: unknown): void {
    logSafely(() =>
      this.#options.logger.error(
        { code: logCodes.gateFailed, err: error },
        'kana-meter: unexpected error in the Idempotency-Key stage',
      ),
    );
  }
}

/** A store that fails to store or release: the key stays claimed until IDEMPOTENCY_CLAIM_MS (retries get 409), nothing is lost. */
function ignoreFailure(result: void | Promise<void>): void {
  if (isPromise(result)) result.catch(() => {});
}

/** The client left while the stage waited: nobody to answer. */
function gone({ req, res }: KeyedRequest): boolean {
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
