// Whether Kana accepts the API key: ready()'s verification, stats().configError, and a loud, rate-limited log while it refuses it.

import { KanaError, logCodes, summarizeKanaError } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import type { KanaClient } from './client.js';

/** While Kana refuses the key, at most one error line per this interval (and one re-verification). */
export const CONFIG_ERROR_LOG_INTERVAL_MS = 60_000;

/** ready()'s default deadline for verifying the key while Kana cannot be reached. */
export const DEFAULT_READY_TIMEOUT_MS = 10_000;

/** First and longest wait between two verifications in ready() while Kana cannot be reached. */
const READY_RETRY_MIN_MS = 100;
const READY_RETRY_MAX_MS = 2000;

/** A Kana error that says the key (or what the HTTP layer makes of it) is refused: a configuration error, not an outage. */
export function isKeyRefusal(error: unknown): error is KanaError {
  return error instanceof KanaError && (error.code === 'KANA_UNAUTHENTICATED' || error.code === 'KANA_CONFIG_ERROR');
}

export interface KeyStatusOptions {
  client: KanaClient;
  logger: KanaLogger;
  /** For the log line: what enforced requests get meanwhile. */
  onConfigError: 'deny' | 'allow';
  /** The clock. @default Date.now */
  now?: () => number;
}

/**
 * Told the outcome of every Kana call (KanaClient.watchKey): an answer means the key is accepted,
 * a key refusal sets `configError`. While refused, the key is verified again every minute, so the
 * error line keeps coming and the state clears by itself once the key is accepted.
 */
export class KeyStatus {
  readonly #options: KeyStatusOptions;
  readonly #now: () => number;
  readonly #unwatch: () => void;
  #refusal: KanaError | undefined;
  #accepted = false;
  #refusedSince = 0;
  #loggedAt = Number.NEGATIVE_INFINITY;
  #notLogged = 0;
  #recheckTimer: NodeJS.Timeout | undefined;
  #verifying: Promise<void> | undefined;
  #closed = false;

  constructor(options: KeyStatusOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#unwatch = options.client.watchKey((refusal) => this.#answered(refusal));
  }

  /** Kana's refusal of the key while it lasts. */
  get refusal(): KanaError | undefined {
    return this.#refusal;
  }

  /** The code of the refusal while Kana refuses the key, else null. */
  get configError(): string | null {
    return this.#refusal === undefined ? null : this.#refusal.code;
  }

  /**
   * Resolves once Kana has accepted the key (at once if a call already showed it, and it has not
   * been refused since). Rejects with a
   * KanaError: `KANA_UNAUTHENTICATED` or `KANA_CONFIG_ERROR` (retryable: false) when the key is
   * refused; otherwise, when Kana could not be reached within `timeoutMs`, with the last failure's
   * code (`KANA_UNREACHABLE`, `KANA_TIMEOUT`, `KANA_SERVER_ERROR`, ...; retryable: true).
   */
  ready(timeoutMs: number): Promise<void> {
    // While refused, each ready() asks again: the key may have been restored in Kana since.
    if (this.#accepted) return Promise.resolve();
    this.#verifying ??= this.#verify(timeoutMs).finally(() => {
      this.#verifying = undefined;
    });
    return this.#verifying;
  }

  /** Stops the re-verification and stops listening to the client. Idempotent. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#recheckTimer);
    this.#recheckTimer = undefined;
    this.#unwatch();
  }

  async #verify(timeoutMs: number): Promise<void> {
    const deadline = this.#now() + timeoutMs;
    let wait = READY_RETRY_MIN_MS;
    for (;;) {
      const left = Math.max(1, deadline - this.#now());
      let failure: unknown;
      try {
        await this.#options.client.verifyKey(Math.min(left, this.#options.client.timeoutMs));
        return;
      } catch (error) {
        failure = error;
      }
      if (isKeyRefusal(failure)) throw refusedError(failure);
      const retryable = failure instanceof KanaError && failure.retryable;
      if (!retryable || this.#now() + wait >= deadline) throw notVerifiedError(failure, timeoutMs);
      // A plain (ref'd) timer: a process awaiting ready() before listening must not exit meanwhile.
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, READY_RETRY_MAX_MS);
    }
  }

  /** `refusal` undefined: Kana answered, so it accepts the key. */
  #answered(refusal: KanaError | undefined): void {
    if (refusal === undefined) {
      this.#accepted = true;
      if (this.#refusal === undefined) return;
      const refusedForMs = this.#now() - this.#refusedSince;
      this.#refusal = undefined;
      this.#loggedAt = Number.NEGATIVE_INFINITY;
      this.#notLogged = 0;
      clearTimeout(this.#recheckTimer);
      this.#recheckTimer = undefined;
      this.#options.logger.info(
        { code: logCodes.keyAccepted, refusedForMs },
        'kana-meter: Kana accepts the API key again; configError is cleared',
      );
      return;
    }
    const now = this.#now();
    if (this.#refusal === undefined) this.#refusedSince = now;
    this.#refusal = refusal;
    this.#accepted = false;
    if (now - this.#loggedAt >= CONFIG_ERROR_LOG_INTERVAL_MS) {
      const { onConfigError } = this.#options;
      this.#options.logger.error(
        {
          code: logCodes.configError,
          err: summarizeKanaError(refusal),
          refusedForMs: now - this.#refusedSince,
          notLogged: this.#notLogged,
          onConfigError,
        },
        `kana-meter: Kana refuses the API key (wrong, revoked, or for another environment): usage cannot be billed, and enforced requests are ${onConfigError === 'deny' ? 'refused with 503' : 'served unbilled'} (onConfigError) until it is fixed. Logged at most once a minute while it lasts.`,
      );
      this.#loggedAt = now;
      this.#notLogged = 0;
    } else {
      this.#notLogged++;
    }
    this.#scheduleRecheck();
  }

  /** While refused: verify the key again in a minute (no traffic needed for the line to come back, or for the state to clear). */
  #scheduleRecheck(): void {
    if (this.#closed || this.#recheckTimer !== undefined) return;
    this.#recheckTimer = setTimeout(() => {
      this.#recheckTimer = undefined;
      if (this.#closed || this.#refusal === undefined) return;
      this.#options.client.verifyKey().then(
        () => undefined,
        // A refusal was told through watchKey; an outage says nothing of the key: try again later.
        () => this.#scheduleRecheck(),
      );
    }, CONFIG_ERROR_LOG_INTERVAL_MS);
    this.#recheckTimer.unref();
  }
}

function refusedError(refusal: KanaError): KanaError {
  const what =
    refusal.code === 'KANA_CONFIG_ERROR'
      ? 'the HTTP client cannot send the Kana API key or endpoint as configured'
      : 'Kana refused the API key (wrong, revoked, or for another environment)';
  return new KanaError(refusal.code, `kana-meter: ${what}: ${refusal.message}. Check apiKey and endpoint.`, {
    retryable: false,
    status: refusal.status,
    cause: refusal,
  });
}

function notVerifiedError(failure: unknown, timeoutMs: number): KanaError {
  if (!(failure instanceof KanaError)) {
    return new KanaError('KANA_BAD_RESPONSE', `kana-meter: the API key could not be verified: ${String(failure)}`, {
      retryable: true,
      cause: failure,
    });
  }
  return new KanaError(
    failure.code,
    `kana-meter: the API key could not be verified within ${timeoutMs} ms: ${failure.message}`,
    { retryable: failure.retryable, status: failure.status, cause: failure },
  );
}
