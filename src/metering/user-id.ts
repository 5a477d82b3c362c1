// The Kana user id of a request: the `userId` option's value checked and turned into the String Kana takes.

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
