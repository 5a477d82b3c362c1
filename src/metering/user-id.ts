// The Kana user id of a request: the `userId` option's value read once, in time, checked and turned into the String Kana takes.

import type { Request } from 'express';
import { logCodes } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import type { Counter } from '../config/stats.js';
import { isPromise, toPromise } from '../config/thenable.js';
import { withTimeLimit } from '../config/time-limit.js';
import { where } from './routed-path.js';

/**
 * The longest user id kana-meter bills, in characters. Kana documents no limit; 256 holds any
 * email address (at most 254), UUIDs and provider ids with prefixes, and bounds what
 * `maxPendingKeys` keys can cost in memory and in the spool. A longer id is refused per request.
 */
export const MAX_USER_ID_LENGTH = 256;

/** What the `userId` option may return (or resolve to). */
export type UserIdValue = string | number | null | undefined;

/** The id as Kana takes it: a String; null when the request has none (undefined, null or ''). */
export function toKanaUserId(raw: unknown): string | null {
  if (raw === undefined || raw === null || raw === '') return null;
  if (!isUserIdValue(raw)) throw new TypeError(`userId returned ${typeof raw}; expected a string or a finite number`);
  const id = String(raw);
  if (id.length > MAX_USER_ID_LENGTH) {
    // Not echoed: it may be anything (a token, a whole document).
    throw new TypeError(
      `userId returned a string of ${id.length} characters; a Kana user id is at most ${MAX_USER_ID_LENGTH}`,
    );
  }
  return id;
}

function isUserIdValue(value: unknown): value is string | number | bigint {
  return (
    typeof value === 'string' || typeof value === 'bigint' || (typeof value === 'number' && Number.isFinite(value))
  );
}

/** What reading a request's user gave: its Kana id, null (it has none), or false (the hook failed, already reported). */
export type RequestUser = string | null | false;

/**
 * Reads the request's user once, into `usage.userId`, and calls `then` with it: in the same tick
 * when the hook answers at once, else when its promise settles. A hook that throws, rejects, gives a
 * non-id or has not settled after `limitMs` is reported to `failed`, and the user is false.
 * Returns the wait when there is one, for the caller to bound and to guard.
 */
export function readRequestUser(
  usage: { userId: RequestUser | undefined },
  hook: () => unknown,
  limitMs: number,
  failed: (error: unknown) => void,
  then: (user: RequestUser) => void,
): Promise<void> | undefined {
  const adopt = (raw: unknown): RequestUser => {
    try {
      usage.userId = toKanaUserId(raw);
    } catch (error) {
      usage.userId = false;
      failed(error);
    }
    return usage.userId;
  };
  const fail = (error: unknown): RequestUser => {
    usage.userId = false;
    failed(error);
    return false;
  };
  let raw: unknown;
  try {
    raw = hook();
  } catch (error) {
    then(fail(error));
    return undefined;
  }
  if (!isPromise(raw)) {
    then(adopt(raw));
    return undefined;
  }
  // Adopted as a promise: a thenable whose `then` throws or calls back twice is a rejection, or ignored.
  return withTimeLimit(toPromise(raw), limitMs, 'the userId hook').then(
    (value) => then(adopt(value)),
    (error: unknown) => then(fail(error)),
  );
}

/** Logs and counts a `userId` hook that threw, rejected or gave a non-id: the request is not metered. */
export function userIdFailureReporter(logger: KanaLogger, counters: Record<Counter, number>) {
  return (req: Request, error: unknown): void => {
    counters.userIdErrors++;
    logger.error(
      { code: logCodes.userIdFailed, err: error, ...where(req) },
      'kana-meter: userId failed; the request was not metered',
    );
  };
}
