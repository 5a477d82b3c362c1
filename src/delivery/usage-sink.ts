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
}

/**
 * A destination for usage. The queue calls `deliver` once per attempt, with one (user, feature)
 * batch, never two calls for one key at once; `classify` tells it what a rejection means.
 */
export interface UsageSink {
  /** Delivers one batch in one attempt: resolves once the sink accepted it, rejects otherwise. */
  deliver(batch: UsageBatch, signal: AbortSignal): Promise<void>;
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
