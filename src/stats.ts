// The counters behind kana.stats(): one mutable record, read as a frozen snapshot.

/** What kanaMeter has done since it was created. Event counts, unless the name says otherwise. */
export interface KanaMeterStats {
  /** Usage events accepted for delivery. */
  captured: number;
  /** Events Kana confirmed. */
  delivered: number;
  /** Events reported undeliverable (logged, counted, passed to `onDeliveryFailure`). */
  failed: number;
  /** Events captured but not yet settled (waiting, being retried or in flight). */
  pending: number;
  /** Distinct (user, feature) keys waiting or in flight. */
  pendingKeys: number;
  /** Kana calls in flight now. */
  inFlight: number;
  /** Kana calls made, retries included. */
  calls: number;
  /** Calls retried after a transient failure. */
  retries: number;
  /** Successful requests not metered because `userId` gave undefined, null or ''. */
  skippedNoUser: number;
  /** Successful requests not metered because the delta was not an integer in 1..2147483647. */
  invalidDelta: number;
  /** Requests not metered because the `userId` option threw or rejected. */
  userIdErrors: number;
  /** Errors thrown by user hooks (`isSuccess`, `delta`, `onDeliveryFailure`, `onDrop`). */
  hookErrors: number;
  /** Events not kept because `maxPendingKeys` keys were waiting and there is no spool (see `onDrop`). */
  dropped: number;
  /** Events written to the spool because `maxPendingKeys` keys were waiting. */
  spilled: number;
  /** Events read from the spool at start, left there by an earlier run. */
  replayed: number;
  /** Failed writes to the spool. */
  spoolErrors: number;
  /** False while Kana is unavailable: sending is paused and a probe retries with backoff. */
  kanaAvailable: boolean;
}

export type Counter = Exclude<keyof KanaMeterStats, 'pending' | 'pendingKeys' | 'inFlight' | 'kanaAvailable'>;

export function createCounters(): Record<Counter, number> {
  return {
    captured: 0,
    delivered: 0,
    failed: 0,
    calls: 0,
    retries: 0,
    skippedNoUser: 0,
    invalidDelta: 0,
    userIdErrors: 0,
    hookErrors: 0,
    dropped: 0,
    spilled: 0,
    replayed: 0,
    spoolErrors: 0,
  };
}
