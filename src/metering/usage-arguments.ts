// The arguments of kana.record() and kana.check(), checked as the middleware checks its own: a bad one is a TypeError naming it.

import { describeValue } from '../config/option-checks.js';
import { isValidDelta, MAX_DELTA } from './metered-feature.js';
import { MAX_USER_ID_LENGTH } from './user-id.js';

export interface UsageArguments {
  /** As Kana takes it: a String. */
  readonly userId: string;
  readonly featureId: string;
  readonly delta: number;
}

export function parseUsageArguments(
  method: 'record' | 'check' | 'hold',
  userId: unknown,
  featureId: unknown,
  delta: unknown,
): UsageArguments {
  const validUserId =
    (typeof userId === 'string' && userId !== '') || (typeof userId === 'number' && Number.isFinite(userId));
  if (!validUserId) throw argumentError(method, 'userId', userId, 'a non-empty string or a finite number');
  if (String(userId).length > MAX_USER_ID_LENGTH) {
    // Not echoed, as for a `userId` option that returns one.
    throw new TypeError(
      `kana-meter: ${method}(): argument \`userId\` must be at most ${MAX_USER_ID_LENGTH} characters; got a string of ${String(userId).length}.`,
    );
  }
  if (typeof featureId !== 'string' || featureId.trim() === '') {
    throw argumentError(method, 'featureId', featureId, 'a non-empty feature id string');
  }
  if (!isValidDelta(delta)) throw argumentError(method, 'delta', delta, `an integer in 1..${MAX_DELTA}`);
  return { userId: String(userId), featureId, delta };
}

function argumentError(method: string, name: string, value: unknown, expected: string): TypeError {
  return new TypeError(
    `kana-meter: ${method}(): argument \`${name}\` must be ${expected}; got ${describeValue(value)}.`,
  );
}
