// The entitlement cache: Kana's answer per (user, feature), reused for a TTL, plus this process's own usage on top.

import type { EntitlementAnswer, EntitlementQuery } from '../kana/client.js';
import { KeyLedger } from './key-ledger.js';

/** Kana's answer for a key as the cache keeps it: from this instance's own check, or shared through the store. */
export interface Answered {
  readonly answer: EntitlementAnswer;
  /** The store's epoch for it (which check produced it); 0 when the store does not keep it. */
  readonly epoch: number;
  /** How long it stays fresh from now, in ms; the cache's TTL when undefined. */
  readonly ttlMs: number | undefined;
}

/**
 * One (user, feature) entry: Kana's last answer, the local accounting on top of it, and this
 * instance's ledger in the store. Kana's `used` does not include usage still waiting in the
 * delivery queue, nor usage captured after it answered, so, as far as this instance alone can
 * tell: effective used = used + local + held. With the store, leases decide instead (leases.ts).
 */
export class Entitlement {
  /** Kana has answered at least once. */
  loaded = false;
  /** The store's epoch of the answer (0: not kept by the store). */
  epoch = 0;
  /** Kana's verdict, for entries without consumption (BINARY, or not in the plan). */
  access = false;
  /** The answer had a consumption: a CONSUMABLE feature in the user's plan. */
  consumable = false;
  used = 0;
  /** null = unlimited. */
  budget: number | null = null;
  overageEnabled = false;
  resetAt: Date | null = null;
  /** Length of the usage period in seconds, when it resets. */
  periodSeconds: number | undefined = undefined;
  /** Epoch ms after which the answer is not reused. */
  expiresAt = 0;
  /** Epoch ms until which the answer may still decide when Kana cannot be asked (stale-if-error). */
  staleUntil = 0;
  /** Units this process captured that Kana's `used` does not include. */
  local = 0;
  /** The Kana call in flight, shared by every request that misses meanwhile. */
  loading: Promise<Entitlement> | undefined = undefined;
  /** Undelivered units when the call in flight started, and units captured since. */
  fetchBase = 0;
  sinceFetch = 0;
  /** The RateLimit-Policy value for this answer: computed on first use, null when none applies. */
  policyHeader: string | null | undefined = undefined;
  /** The feature id as a Structured Fields String, set with policyHeader. */
  policyName: string | undefined = undefined;

  /** This instance's record in the store's ledger for the key. */
  readonly ledger: KeyLedger;

  constructor(
    readonly key: string,
    readonly userId: string,
    readonly featureId: string,
    ledger?: KeyLedger,
  ) {
    this.ledger = ledger ?? new KeyLedger('', 0);
  }

  /** Units of allowed requests (and holds) that have not ended yet: the ledger's, which alone changes them. */
  get held(): number {
    return this.ledger.held;
  }

  /** Units used as far as this process knows, before the request being decided. */
  effectiveUsed(): number {
    return this.used + this.local + this.ledger.held;
  }
}

export interface EntitlementCacheOptions {
  /** Asks Kana, or the store for another instance's answer (`probe`: the breaker's probe, sent even while checks are unavailable). */
  ask: (query: EntitlementQuery, probe: boolean) => Promise<Answered>;
  /** How long an answer is reused, in ms. */
  ttl: number;
  /** How long past its TTL an answer may still decide when Kana cannot be asked, in ms. */
  staleIfError: number;
  /** Most entries kept. */
  maxEntries: number;
  /** Units captured for a key and not confirmed by Kana yet (the delivery queue's). */
  undelivered: (userId: string, featureId: string) => number;
  /** A new entry's ledger id in the store (one per entry: an evicted key comes back as a new record). @default none */
  ledgerId?: () => string;
  /** Told of an entry evicted from the cache (its ledger record is forgotten). */
  onEvict?: (entry: Entitlement) => void;
  /** The clock. @default Date.now */
  now?: () => number;
}

/** Whether a request of `delta` units may go ahead, from an entry Kana has answered. */
export function verdict(entry: Entitlement, delta: number): 'allowed' | 'not-in-plan' | 'limit-reached' {
  if (!entry.consumable) return entry.access ? 'allowed' : 'not-in-plan';
  if (entry.budget === null || entry.overageEnabled) return 'allowed';
  return entry.effectiveUsed() + delta <= entry.budget ? 'allowed' : 'limit-reached';
}

/** Entries scanned for one that is idle before the oldest is evicted anyway. */
const EVICTION_SCAN = 16;

/**
 * Kana's answers per (user, feature), with a TTL and a stale-if-error horizon, one Kana call per
 * key at a time, bounded size (the least recently fetched entry goes first), and local
 * accounting of usage and holds.
 */
export class EntitlementCache {
  readonly #entries = new Map<string, Entitlement>();
  readonly #options: EntitlementCacheOptions;
  readonly #now: () => number;

  constructor(options: EntitlementCacheOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The entry for this key if its answer is still fresh; synchronous, no Kana call. */
  fresh(userId: string, featureId: string): Entitlement | undefined {
    const entry = this.#entries.get(entryKey(userId, featureId));
    return entry !== undefined && entry.expiresAt > this.#now() ? entry : undefined;
  }

  /**
   * The entry for this key if Kana has answered for it and that answer, expired or not, is within
   * `staleIfError` past its TTL and still in its usage period: what decides when Kana cannot be asked.
   */
  stale(userId: string, featureId: string): Entitlement | undefined {
    const entry = this.#entries.get(entryKey(userId, featureId));
    return entry?.loaded === true && entry.staleUntil > this.#now() ? entry : undefined;
  }

  /** Asks Kana for this key, or joins the call already in flight for it. */
  load(userId: string, featureId: string, delta: number, probe = false): Promise<Entitlement> {
    const key = entryKey(userId, featureId);
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      if (this.#entries.size >= this.#options.maxEntries) this.#evictOne();
      // Usage already waiting for delivery counts as this record's: it is spent, and not confirmed yet.
      const ledger = new KeyLedger(this.#options.ledgerId?.() ?? '', this.#options.undelivered(userId, featureId));
      entry = new Entitlement(key, userId, featureId, ledger);
      this.#entries.set(key, entry);
    }
    if (entry.loading !== undefined) return entry.loading;
    const target = entry;
    // Usage waiting in the queue now is not in the answer; usage captured from now on is counted as it comes.
    target.fetchBase = this.#options.undelivered(userId, featureId);
    target.sinceFetch = 0;
    target.loading = this.#options.ask({ userId, featureId, delta }, probe).then(
      (answered) => {
        target.loading = undefined;
        this.#apply(target, answered);
        // Re-inserted at the end: eviction takes the least recently fetched first.
        if (this.#entries.get(key) === target) this.#entries.delete(key);
        this.#entries.set(key, target);
        return target;
      },
      (error: unknown) => {
        target.loading = undefined;
        // Kept while its ledger has usage the store was told of: its confirmations must reach the store too.
        if (
          !target.loaded &&
          target.ledger.held === 0 &&
          target.ledger.spent === 0 &&
          this.#entries.get(key) === target
        ) {
          this.#entries.delete(key);
        }
        throw error;
      },
    );
    return target.loading;
  }

  /**
   * Counts units this process just captured for delivery (already in the queue) against the cached
   * allowance. With `createEntry` (a store other instances share), a key without an entry gets one, not
   * answered yet: its ledger reports the usage to the store, so that every instance counts it before
   * Kana does (record() in a worker, unenforced routes). Without, such usage is the queue's alone.
   */
  countUsage(userId: string, featureId: string, delta: number, createEntry = true): Entitlement | undefined {
    // A process that only meters (nothing checked yet) pays no key for it.
    if (!createEntry && this.#entries.size === 0) return undefined;
    const key = entryKey(userId, featureId);
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      if (!createEntry) return undefined;
      if (this.#entries.size >= this.#options.maxEntries) this.#evictOne();
      // The queue has the units already: they are spent, and not confirmed.
      const ledger = new KeyLedger(this.#options.ledgerId?.() ?? '', this.#options.undelivered(userId, featureId));
      entry = new Entitlement(key, userId, featureId, ledger);
      this.#entries.set(key, entry);
      return entry;
    }
    entry.local += delta;
    entry.sinceFetch += delta;
    entry.ledger.spend(delta);
    return entry;
  }

  /** Units of a key the delivery queue no longer waits for (delivered, or failed for good); the entry, if there is one. */
  confirm(userId: string, featureId: string, delta: number): Entitlement | undefined {
    if (this.#entries.size === 0) return undefined;
    const entry = this.#entries.get(entryKey(userId, featureId));
    if (entry === undefined) return undefined;
    // Never more than was counted: usage captured before the entry began is in its `spent` only if still waiting then.
    entry.ledger.confirm(delta);
    return entry;
  }

  /** Takes a newer answer the store gave (another instance asked Kana) without a fetch of its own. */
  adopt(entry: Entitlement, answered: Answered): void {
    entry.fetchBase = this.#options.undelivered(entry.userId, entry.featureId);
    entry.sinceFetch = 0;
    this.#apply(entry, answered);
  }

  #apply(entry: Entitlement, { answer, epoch, ttlMs }: Answered): void {
    const now = this.#now();
    const consumption = answer.consumption;
    entry.loaded = true;
    entry.epoch = epoch;
    entry.access = answer.access;
    entry.consumable = consumption !== null;
    entry.used = consumption?.used ?? 0;
    entry.budget = consumption?.budget ?? null;
    entry.overageEnabled = consumption?.overageEnabled ?? false;
    entry.resetAt = answer.period?.end ?? null;
    entry.periodSeconds =
      answer.period === null
        ? undefined
        : Math.round((answer.period.end.getTime() - answer.period.start.getTime()) / 1000);
    entry.local = entry.fetchBase + entry.sinceFetch;
    entry.policyHeader = undefined;
    entry.expiresAt = now + (ttlMs ?? this.#options.ttl);
    entry.staleUntil = entry.expiresAt + this.#options.staleIfError;
    // The allowance comes back when the period ends: do not reuse the answer past it, stale or not.
    const end = entry.resetAt?.getTime();
    if (end !== undefined && end > now && end < entry.expiresAt) entry.expiresAt = end;
    if (end !== undefined && end < entry.staleUntil) entry.staleUntil = end;
  }

  #evictOne(): void {
    let victim: string | undefined;
    let scanned = 0;
    for (const [key, entry] of this.#entries) {
      victim ??= key;
      // Idle: nothing held, no call in flight, no lease (its units would go back to the store early).
      if (entry.ledger.held === 0 && entry.loading === undefined && !entry.ledger.leased && !entry.ledger.busy) {
        victim = key;
        break;
      }
      if (++scanned >= EVICTION_SCAN) break;
    }
    // An entry evicted while busy still decides its waiting requests and ends its holds; a new one starts clean.
    if (victim === undefined) return;
    const evicted = this.#entries.get(victim) as Entitlement;
    this.#entries.delete(victim);
    this.#options.onEvict?.(evicted);
  }
}

function entryKey(userId: string, featureId: string): string {
  return `${userId}\u0000${featureId}`;
}
