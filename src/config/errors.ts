// KanaError and the stable codes used in errors, log lines and stats.

/** Codes of a failed Kana call (`KanaError.code`). */
export type KanaErrorCode =
  | 'KANA_UNREACHABLE'
  | 'KANA_TIMEOUT'
  | 'KANA_RATE_LIMITED'
  | 'KANA_SERVER_ERROR'
  | 'KANA_HTTP_ERROR'
  | 'KANA_NOT_RECORDED'
  | 'KANA_BAD_RESPONSE'
  | 'KANA_UNAUTHENTICATED'
  | 'KANA_REJECTED'
  | 'KANA_ABORTED'
  | 'KANA_CLOSED'
  | 'KANA_CONFIG_ERROR';

/**
 * Codes of the problems kana-meter logs at request time (the `code` field of each log line).
 * They are stable: alert on them.
 */
export const logCodes = {
  /** The `userId` option threw or rejected; the request was not metered. */
  userIdFailed: 'KANA_METER_USER_ID_FAILED',
  /** A delta was not an integer in 1..2147483647; the event was not sent. */
  invalidDelta: 'KANA_METER_INVALID_DELTA',
  /** A user hook (`isSuccess`, `delta`, `onDeliveryFailure`, `onDrop`, `onDenied`) or `metrics.observeKanaCall` threw. */
  hookFailed: 'KANA_METER_HOOK_FAILED',
  /** `meter()` ran on a request that kanaMeter() did not see. */
  meterWithoutMiddleware: 'KANA_METER_NOT_MOUNTED',
  /** A usage event failed for good (permanent error, or retries exhausted). */
  deliveryFailed: 'KANA_METER_DELIVERY_FAILED',
  /** A Kana call failed and will be retried. */
  deliveryRetry: 'KANA_METER_DELIVERY_RETRY',
  /** Usage was captured after close(): it cannot be sent. */
  capturedAfterClose: 'KANA_METER_CAPTURED_AFTER_CLOSE',
  /** close() reached its deadline with usage still undelivered (and no spool). */
  undeliveredAtClose: 'KANA_METER_UNDELIVERED_AT_CLOSE',
  /** Retries ran out on a transient error: sending pauses, usage is kept, and a probe retries later. Logged once per outage. */
  kanaUnavailable: 'KANA_METER_KANA_UNAVAILABLE',
  /** A probe got through after an outage: sending resumes. */
  kanaAvailable: 'KANA_METER_KANA_AVAILABLE',
  /** maxPendingKeys reached: usage for new keys is spilled to the spool, or dropped. Logged once per episode. */
  queueFull: 'KANA_METER_QUEUE_FULL',
  /** Usage kept in the spool by an earlier run is being sent. */
  spoolReplayed: 'KANA_METER_SPOOL_REPLAYED',
  /** The spool could not be written; usage stays in memory. */
  spoolFailed: 'KANA_METER_SPOOL_FAILED',
  /** close() left usage in the spool for the next start. */
  spooledAtClose: 'KANA_METER_SPOOLED_AT_CLOSE',
  /** An entitlement check failed (unreachable, timeout, error answer); `onKanaError` decided the requests waiting for it. */
  checkFailed: 'KANA_METER_CHECK_FAILED',
  /** An enforced request had no user id, so it was not checked (nor billed). Logged once per kanaMeter(). */
  uncheckedNoUser: 'KANA_METER_UNCHECKED_NO_USER',
  /** An unexpected error inside the entitlement gate (a bug): logged, never thrown into the request. */
  gateFailed: 'KANA_METER_GATE_FAILED',
  /** The shared store (Redis) failed or timed out: requests are decided per instance until it answers again. Logged once per outage. */
  storeUnavailable: 'KANA_METER_STORE_UNAVAILABLE',
  /** The shared store answered again after an outage (an info line). */
  storeAvailable: 'KANA_METER_STORE_AVAILABLE',
  /** A store command failed with something other than Redis being unreachable (an error reply such as WRONGTYPE, a bad reply, a store's bug): decided per instance. Logged once per kanaMeter(). */
  storeCommandFailed: 'KANA_METER_STORE_COMMAND_FAILED',
  /** Checks time out or cannot reach Kana: requests are decided at once (stale answer, else onKanaError) and one probe at a time tests whether Kana is back. Logged once per outage. */
  checksUnavailable: 'KANA_METER_CHECKS_UNAVAILABLE',
  /** A check got through after an outage of checks: requests wait for Kana again (`unavailableMs`). */
  checksAvailable: 'KANA_METER_CHECKS_AVAILABLE',
  /** showUsage (the usage period) failed while canUseFeature answered: decisions go on without the period end, and checks stop asking for it for a while. Logged once until it answers again. */
  periodUnavailable: 'KANA_METER_PERIOD_UNAVAILABLE',
  /** In shadow mode, enforcement would have refused a request (it was served and billed). Rate-limited. */
  shadowDenied: 'KANA_METER_SHADOW_DENIED',
  /** An error of kana-meter's own (a bug, not Kana nor the network) while sending usage: the usage is kept, sending backs off. Logged once per cause, with its stack. */
  internalError: 'KANA_METER_INTERNAL_ERROR',
  /** An unexpected error while capturing a finished request's usage (a bug, or a hook value nothing could read): logged, never thrown. */
  captureFailed: 'KANA_METER_CAPTURE_FAILED',
  /** Kana refuses the API key (wrong or revoked), or the HTTP layer refuses to build a Kana call from the configuration (a header or URL it rejects): permanent, never retried. Logged at error level at most once a minute while it lasts (`stats().configError`). */
  configError: 'KANA_METER_CONFIG_ERROR',
  /** The endpoint is plain `http://` to a host that is not loopback: the API key travels in cleartext. Logged once, at creation. */
  insecureEndpoint: 'KANA_METER_INSECURE_ENDPOINT',
  /** A spool lock whose holder is provably gone was taken over (the reason is in the line). */
  spoolLockRecovered: 'KANA_METER_SPOOL_LOCK_RECOVERED',
  /** The spill file was rewritten with its records merged per key, because it had grown large. */
  spoolCompacted: 'KANA_METER_SPOOL_COMPACTED',
  /** Redis's `maxmemory-policy` may evict RedisStore's keys (allkeys-*, or volatile-*: every key has a TTL), which drops ledgers as a restart does; use noeviction. Logged once, at start. */
  storeEviction: 'KANA_METER_STORE_EVICTION',
  /** An enforced request had no user id (or `userId` failed) and was refused with 401 (`anonymous: 'refuse'`). Logged once per kanaMeter(). */
  refusedNoUser: 'KANA_METER_REFUSED_NO_USER',
  /** Kana accepts the API key again after refusing it: `stats().configError` is cleared (an info line). */
  keyAccepted: 'KANA_METER_KEY_ACCEPTED',
  /** A request to a route that is only metered succeeded without a user id: nothing to bill it to (`stats().skippedNoUser`). Logged once per kanaMeter(). */
  skippedNoUser: 'KANA_METER_SKIPPED_NO_USER',
  /** The audit trail could not be written (a full disk, an unwritable file): its lines are lost, counted in `auditErrors`. Logged once until writes work again. */
  auditFailed: 'KANA_METER_AUDIT_FAILED',
  /** An enforced request was not decided within the gate's bound (a hook, the store or a bug kept it waiting): `onKanaError` decided it. */
  gateTimeout: 'KANA_METER_GATE_TIMEOUT',
  /** A store call did not settle within its time limit: requests are decided per instance until the store answers again. Logged once per stall. */
  storeTimeout: 'KANA_METER_STORE_TIMEOUT',
} as const;

export type LogCode = (typeof logCodes)[keyof typeof logCodes];

export interface KanaErrorOptions {
  /** Whether trying the same call again may succeed. */
  retryable: boolean;
  /** HTTP status of Kana's answer, when there was one. */
  status?: number;
  /** Delay Kana asked for with `Retry-After`, in milliseconds. */
  retryAfterMs?: number;
  cause?: unknown;
}

/** A failed call to Kana, with a stable `code` and the original error as `cause`. */
export class KanaError extends Error {
  override readonly name = 'KanaError';
  readonly code: KanaErrorCode;
  readonly retryable: boolean;
  readonly status: number | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(code: KanaErrorCode, message: string, options: KanaErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable;
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** What a log line says of a failed Kana call: code, message, status; never the request. */
export function summarizeKanaError(error: unknown): unknown {
  if (!(error instanceof KanaError)) return error;
  return error.status === undefined
    ? { code: error.code, message: error.message }
    : { code: error.code, message: error.message, status: error.status };
}

/** Codes of a spool that cannot be opened or written (`SpoolError.code`). */
export type SpoolErrorCode =
  /** Another process, or another kanaMeter() in this process, holds the spool's lock. */
  | 'KANA_SPOOL_LOCKED'
  /** A spool file is a symbolic link, not a regular file, has other hard links, or belongs to another user. */
  | 'KANA_SPOOL_UNSAFE'
  /** A file at the spool's path is not a kana-meter spool. */
  | 'KANA_SPOOL_FOREIGN'
  /** The spool holds a line that is not a usage record. */
  | 'KANA_SPOOL_CORRUPT'
  /** A write, fsync or rename failed. */
  | 'KANA_SPOOL_WRITE_FAILED'
  /** The filesystem accepted fewer bytes than were written, and then none. */
  | 'KANA_SPOOL_SHORT_WRITE';

/** The spool cannot be opened (thrown by kanaMeter()) or written (logged and counted in `stats().spoolErrors`). */
export class SpoolError extends Error {
  override readonly name = 'SpoolError';
  readonly code: SpoolErrorCode;
  /** The file concerned. */
  readonly path: string;

  constructor(code: SpoolErrorCode, path: string, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.code = code;
    this.path = path;
  }
}
