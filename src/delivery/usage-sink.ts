// UsageSink: where the delivery queue sends usage. Kana's client is one sink; retries, outages, the spool and shutdown work for any.

/** One call's worth of usage: the sum of the deltas captured for one (user, feature) key. */
export interface UsageBatch {
  readonly userId: string;
  readonly featureId: string;
  readonly delta: number;
}

/** How the queue treats a failed delivery. */
export interface SinkFailure {
  /** True: worth retrying (with backoff, then riding out an outage). False: the usage fails for good. */
  readonly retryable: boolean;
  /** Wait at least this long before the next attempt (a `Retry-After`). */
  readonly retryAfterMs?: number;
  /**
   * The sink refused a `deliverMany` call for what it held, before applying any of it: one batch
   * may be the cause, so each is sent again alone, and only the one it refuses fails.
   */
  readonly refusedWhole?: boolean;
}

/**
 * A destination for usage. The queue sends each (user, feature) batch in attempts, never two
 * attempts for one key at once, and `classify` tells it what a failure means. A sink that takes
 * several batches in one call has `deliverMany`: batches waiting for the same call slot go
 * together, up to `maxBatchesPerCall`. Otherwise each attempt is one `deliver` call.
 */
export interface UsageSink {
  /** Delivers one batch in one attempt: resolves once the sink accepted it, rejects otherwise. */
  deliver(batch: UsageBatch, signal: AbortSignal): Promise<void>;
  /**
   * Delivers several batches in one call: resolves with each batch's outcome, in order (undefined:
   * accepted; else its failure, for `classify`), or rejects when the whole call failed.
   */
  deliverMany?(batches: readonly UsageBatch[], signal: AbortSignal): Promise<readonly unknown[]>;
  /** Most batches one `deliverMany` call takes. @default 1 */
  readonly maxBatchesPerCall?: number;
  /**
   * What a rejection of `deliver` means. `undefined`: not a delivery failure but a bug (the usage
   * is kept, counted in `internalErrors`, and sending backs off as for a transient failure).
   */
  classify(error: unknown): SinkFailure | undefined;
  /** What a delivery call is named (Kana's: its mutation), for traces. */
  readonly mutation?: string;
  /** Where deliveries go (Kana's: its GraphQL endpoint), for traces. */
  readonly endpoint?: string;
}
