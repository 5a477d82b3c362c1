// Where a decision's entitlement comes from: the cache while fresh, else Kana, else a stale answer (stale-if-error), else nothing (onKanaError decides).

import type { CheckBreaker } from './check-breaker.js';
import type { Entitlement, EntitlementCache } from './entitlements.js';

/** An entitlement found for a decision, and where from; `error` says why Kana could not be asked ('stale', 'fallback'). */
export type Lookup =
  | { readonly source: 'cache' | 'kana' | 'stale'; readonly entry: Entitlement; readonly error: unknown }
  | { readonly source: 'fallback'; readonly entry: undefined; readonly error: unknown };

export class EntitlementLookup {
  readonly #cache: EntitlementCache;
  readonly #breaker: CheckBreaker;

  constructor(cache: EntitlementCache, breaker: CheckBreaker) {
    this.#cache = cache;
    this.#breaker = breaker;
  }

  /** A fresh answer at once; otherwise see `missed`. */
  find(userId: string, featureId: string, delta: number): Lookup | Promise<Lookup> {
    const entry = this.#cache.fresh(userId, featureId);
    return entry === undefined ? this.missed(userId, featureId, delta) : { source: 'cache', entry, error: undefined };
  }

  /**
   * After a cache miss: asks Kana, and if that fails, falls back to a stale answer or nothing.
   * While checks are unavailable (the breaker is open), answers at once without asking.
   */
  missed(userId: string, featureId: string, delta: number): Lookup | Promise<Lookup> {
    if (this.#breaker.isOpen) {
      this.#breaker.wanted({ userId, featureId, delta });
      return this.#withoutKana(userId, featureId, this.#breaker.error);
    }
    return this.#cache.load(userId, featureId, delta).then(
      (entry): Lookup => ({ source: 'kana', entry, error: undefined }),
      (error: unknown) => this.#withoutKana(userId, featureId, error),
    );
  }

  #withoutKana(userId: string, featureId: string, error: unknown): Lookup {
    const entry = this.#cache.stale(userId, featureId);
    return entry === undefined ? { source: 'fallback', entry, error } : { source: 'stale', entry, error };
  }
}
