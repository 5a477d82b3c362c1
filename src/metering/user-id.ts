// The Kana user id of a request: the `userId` option's value checked and turned into the String Kana takes.

/** What the `userId` option may return (or resolve to). */
export type UserIdValue = string | number | null | undefined;

/** The id as Kana takes it: a String; null when the request has none (undefined, null or ''). */
export function toKanaUserId(raw: unknown): string | null {
  if (raw === undefined || raw === null || raw === '') return null;
  if (!isUserIdValue(raw)) throw new TypeError(`userId returned ${typeof raw}; expected a string or a finite number`);
  return String(raw);
}

function isUserIdValue(value: unknown): value is string | number | bigint {
  return (
    typeof value === 'string' || typeof value === 'bigint' || (typeof value === 'number' && Number.isFinite(value))
  );
}
