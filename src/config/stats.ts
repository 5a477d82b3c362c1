// The counters behind kana.stats(): one mutable record, read as a frozen snapshot.

/** What kanaMeter has done since it was created. Event counts, unless the name says otherwise. */
export interface KanaMeterStats {
  /** Usage events accepted for delivery. */
  captured: number;
  /** Events Kana confirmed. */
  delivered: number;
  /** Events reported undeliverable (logged, counted, passed to `onDeliveryFailure`). */
  failed: number;
  /** Events captured and not delivered or failed yet (waiting, being retried or in flight). */
  pending: number;
  /** Distinct (user, feature) keys waiting or in flight. */
  pendingKeys: number;
  /** Usage calls to Kana in flight now (entitlement checks are not counted here). */
  inFlight: number;
  /** Usage calls made to Kana, retries included (entitlement checks are counted in `checks`). */
  calls: number;
  /** Calls retried after a transient failure. */
  retries: number;
  /** Successful requests not metered because `userId` gave undefined, null or ''. */
  skippedNoUser: number;
  /** Successful requests not metered because the delta was not an integer in 1..2147483647. */
  invalidDelta: number;
  /** Requests not metered because the `userId` option threw or rejected. */
  userIdErrors: number;
  /** Errors thrown by user hooks (`isSuccess`, `delta`, `onDeliveryFailure`, `onDrop`, `onDenied`) and by `metrics.observeKanaCall`. */
  hookErrors: number;
  /** Events not kept because `maxPendingKeys` keys were waiting and there is no spool (see `onDrop`). */
  dropped: number;
  /** Events written to the spool because `maxPendingKeys` keys were waiting. */
  spilled: number;
  /** Events read from the spool at start, left there by an earlier run. */
  replayed: number;
  /** Failed writes to the spool. */
  spoolErrors: number;
  /** Errors of kana-meter's own (bugs, not Kana nor the network) while sending usage; the usage was kept. */
  internalErrors: number;
  /** False while Kana is unavailable: sending is paused and a probe retries with backoff. */
  kanaAvailable: boolean;
  /** Enforced requests that enforcement allowed (`failedOpen` included; shadow mode's would-be refusals are in `shadowDenied` instead). Request counts from here on. */
  allowed: number;
  /** Enforced requests refused: 402, 429, or 503 with `onKanaError: 'deny'`. */
  denied: number;
  /** Enforced requests decided from a cached entitlement, without a Kana call. */
  cacheHits: number;
  /** Entitlement checks sent to Kana (one per cache miss, shared by concurrent misses; several may share one call, see `checkCalls`). */
  checks: number;
  /** Entitlement checks that failed: Kana unreachable, too slow (`checkTimeoutMs`) or answering an error. */
  checkErrors: number;
  /** Enforced requests let through because their check failed (`onKanaError: 'allow'`). */
  failedOpen: number;
  /** Enforced requests not checked because `userId` gave no id or failed (they are not billed either). */
  unchecked: number;
  /** Enforced requests decided from an expired answer because Kana could not be asked (`staleIfError`). */
  staleHits: number;
  /** Requests `enforce: 'shadow'` would have refused: they were served and billed. */
  shadowDenied: number;
  /** GraphQL calls made for entitlement checks: batches of checks, re-asks and probes. */
  checkCalls: number;
  /** Times checks became unavailable (timeouts, Kana unreachable, 429, 5xx) and requests started being decided at once. */
  checkOutages: number;
  /** False while checks are unavailable: requests are decided at once and a probe retries with backoff. */
  checksAvailable: boolean;
  /** Requests answered with a stored response (Idempotency-Key): the handler did not run, nothing was billed. */
  idempotentReplays: number;
  /** Idempotency keys dropped before their TTL because `idempotencyKey.maxKeys` or `maxBytes` were reached (a retry of one runs, and is billed, again). */
  idempotencyEvictions: number;
  /** (user, feature) entitlements in the cache now (a gauge). */
  entitlements: number;
  /** Entitlement answers taken from the store, fresh from another instance's check, without a Kana call. */
  sharedAnswers: number;
  /** Enforced decisions (and `check()`s) made by this instance alone because the store could not be asked (unreachable, too slow, failing). */
  storeFallbacks: number;
  /** False while the store (Redis) is unreachable: decisions are made per instance until it answers again. Always true for the default MemoryStore. */
  storeAvailable: boolean;
  /** Commands sent to the store over the network (0 for MemoryStore). */
  storeCommands: number;
  /** Store commands that failed or timed out. */
  storeFailures: number;
  /** Times the store went from available to unreachable. */
  storeOutages: number;
  /** (user, feature) keys this instance holds a lease on now: units reserved in the store (a gauge). */
  storeLeases: number;
  /** Units reserved by this instance and not spent yet, over every lease it holds (a gauge). */
  storeLeasedUnits: number;
  /** Enforced requests refused with 401 because `userId` gave no id or failed (`anonymous: 'refuse'`, the default). */
  refusedNoUser: number;
  /** While Kana refuses the API key: the KanaError code (`'KANA_UNAUTHENTICATED'`, or `'KANA_CONFIG_ERROR'` when the HTTP layer cannot send it); null otherwise (a gauge). */
  configError: string | null;
  /** Audit trail lines that could not be written (a full disk, an unwritable file, a disk too slow); requests and delivery went on. */
  auditErrors: number;
  /** Enforced requests not decided within the gate's bound (see docs/enforcement.md): `onKanaError` decided them. */
  gateTimeouts: number;
  /** Store calls that did not settle within their time limit (the store's `timeoutMs`, else 1000 ms). */
  storeTimeouts: number;
}

/** Counters kept by the store itself (its stats()). */
export type StoreCounter = 'storeCommands' | 'storeFailures' | 'storeOutages';

/** The fields of KanaMeterStats that are kanaMeter's own counters (the store's are StoreCounter; the rest are gauges). */
export type Counter = Exclude<
  keyof KanaMeterStats,
  | 'pending'
  | 'pendingKeys'
  | 'inFlight'
  | 'kanaAvailable'
  | 'checksAvailable'
  | 'entitlements'
  | 'storeAvailable'
  | 'storeLeases'
  | 'storeLeasedUnits'
  | 'configError'
  | StoreCounter
>;

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
    internalErrors: 0,
    allowed: 0,
    denied: 0,
    cacheHits: 0,
    checks: 0,
    checkErrors: 0,
    failedOpen: 0,
    unchecked: 0,
    staleHits: 0,
    shadowDenied: 0,
    checkCalls: 0,
    checkOutages: 0,
    idempotentReplays: 0,
    idempotencyEvictions: 0,
    sharedAnswers: 0,
    storeFallbacks: 0,
    refusedNoUser: 0,
    auditErrors: 0,
    gateTimeouts: 0,
    storeTimeouts: 0,
  };
}
