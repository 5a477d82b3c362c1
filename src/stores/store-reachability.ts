// Whether the shared store answers: down on a failure or timeout (logged once), up on the next answer (one info line).

import { logCodes } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import type { StoreError } from './store-error.js';

export class StoreReachability {
  /** False from a failure or timeout until the store answers again. */
  available = true;
  /** Times the store went from available to unavailable. */
  outages = 0;
  #unavailableSince = 0;
  readonly #logger: KanaLogger;

  constructor(logger: KanaLogger) {
    this.#logger = logger;
  }

  /** The store answered (even with an error reply: it is there). */
  markAnswered(): void {
    if (this.available) return;
    this.available = true;
    this.#logger.info(
      { code: logCodes.storeAvailable, unavailableMs: Date.now() - this.#unavailableSince },
      'kana-meter: Redis is available again; the store is shared again',
    );
  }

  /** The store did not answer usefully: timeout, connection failure, or an error reply meaning it cannot serve. */
  markUnreachable(error: StoreError): void {
    if (!this.available) return;
    this.available = false;
    this.outages++;
    this.#unavailableSince = Date.now();
    this.#logger.warn(
      { code: logCodes.storeUnavailable, err: { code: error.code, message: error.message } },
      'kana-meter: Redis is unreachable; requests are decided per instance until it answers again',
    );
  }
}
