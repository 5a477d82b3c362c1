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
 * How a stage reads the request's user, made once per stage (no closure per request): `context` is
 * what the stage passes along (its request context).
 */
export interface UserReader<C> {
  /** Asks the `userId` option for the context's request. */
  ask(context: C): unknown;
  /** How long an async answer may take. */
  limitMs: number;
  /** Told of a hook that threw, rejected, gave a non-id or was too slow; the user is false then. */
  failed(context: C, error: unknown): void;
  /** Called with the user: in the same tick when the hook answers at once, else when its promise settles. */
  withUser(context: C, user: RequestUser): void;
}

/**
 * Reads the request's user once, into `usage.userId`, and calls `reader.withUser` with it. Returns the
 * wait when there is one, for the caller to bound and to guard.
 */
export function readUser<C>(
  reader: UserReader<C>,
  usage: { userId: RequestUser | undefined },
  context: C,
): Promise<void> | undefined {
  let raw: unknown;
  try {
    raw = reader.ask(context);
  } catch (error) {
    reader.withUser(context, failUser(reader, usage, context, error));
    return undefined;
  }
  if (!isPromise(raw)) {
    reader.withUser(context, adoptUser(reader, usage, context, raw));
    return undefined;
  }
  return adoptLater(reader, usage, context, raw);
}

/**
 * An async hook's answer, adopted as a promise: a thenable whose `then` throws or calls back twice
 * is a rejection, or ignored. (Apart from readUser: a function that makes closures allocates their
 * scope on every call, the same-tick answer included.)
 */
function adoptLater<C>(
  reader: UserReader<C>,
  usage: { userId: RequestUser | undefined },
  context: C,
  raw: PromiseLike<unknown>,
): Promise<void> {
  return withTimeLimit(toPromise(raw), reader.limitMs, 'the userId hook').then(
    (value) => reader.withUser(context, adoptUser(reader, usage, context, value)),
    (error: unknown) => reader.withUser(context, failUser(reader, usage, context, error)),
  );
}

function adoptUser<C>(
  reader: UserReader<C>,
  usage: { userId: RequestUser | undefined },
  context: C,
  raw: unknown,
): RequestUser {
  try {
    usage.userId = toKanaUserId(raw);
  } catch (error) {
    usage.userId = false;
    reader.failed(context, error);
  }
  return usage.userId;
}

function failUser<C>(
  reader: UserReader<C>,
  usage: { userId: RequestUser | undefined },
  context: C,
  error: unknown,
): false {
  usage.userId = false;
  reader.failed(context, error);
  return false;
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
