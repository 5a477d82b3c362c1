// The store interface: the state kanaMeter instances share (Kana's answers, leases on allowances, idempotency keys); MemoryStore keeps it in this process, RedisStore in Redis.

import type { KanaLogger } from '../config/logger.js';
import type { IdempotencyWindow } from '../metering/idempotency-window.js';

/** A value now, or a promise of it: MemoryStore answers at once, a networked store later. */
export type Promisable<T> = T | Promise<T>;

/** One (user, feature): every operation of the ledger is about one key, and touches nothing else. */
export interface StoreKey {
  readonly userId: string;
  readonly featureId: string;
}

/** Kana's answer for one key as a store keeps it, for every instance to decide from. */
export interface StoredAnswer {
  /** The check that produced it: each check of a key gets a higher epoch (a fence against late answers). */
  readonly epoch: number;
  /** Kana's verdict, which decides for a feature without an allowance (BINARY, or not in the plan). */
  readonly access: boolean;
  /** A consumable feature in the user's plan: `used`, `budget` and `overageEnabled` apply. */
  readonly consumable: boolean;
  /** Units Kana counted this period when it answered. */
  readonly used: number;
  /** The allowance; null when unlimited. */
  readonly budget: number | null;
  readonly overageEnabled: boolean;
  /** The usage period (epoch milliseconds); null when Kana gave none. */
  readonly periodStart: number | null;
  readonly periodEnd: number | null;
  /** How long the answer is still fresh, in milliseconds from now (0: expired; it may still be used stale). */
  readonly ttlMs: number;
}

/**
 * One instance's running totals for one key. They only grow: the store keeps the largest value it
 * was told, so a report that is repeated, or lands late after a timeout, changes nothing.
 * With `granted` (kept by the store), what an instance owes the allowance is its {@link ledgerClaim}
 * less `confirmed` ({@link ledgerOwed}).
 */
export interface LedgerTotals {
  /** Units counted as used: usage the instance captured, and usage it had not delivered yet when it started the key. */
  readonly spent: number;
  /** Units of its grants it gave back. */
  readonly returned: number;
  /** Units of `spent` no longer waiting for Kana: delivered (Kana counts them now) or failed for good. */
  readonly confirmed: number;
  /** Units held right now by requests in flight (not a running total: the latest value counts). */
  readonly held: number;
}

/** Asks for units of the allowance, to be spent by this instance without asking again. */
export interface ReserveRequest {
  /** The instance's ledger id for this key. */
  readonly instance: string;
  readonly totals: LedgerTotals;
  /** The epoch of the answer the instance decides from. */
  readonly epoch: number;
  /** Units wanted (the store may grant more, to spare round trips, or fewer, down to `need`). */
  readonly want: number;
  /** Fewest units worth granting: with fewer left, the answer is `limit`. */
  readonly need: number;
  /**
   * The highest answer epoch this record was ever granted units under (0: none). A store whose answer
   * is older than that has lost the ledger (Redis flushed, or restarted empty): it grants nothing for
   * {@link rebuildMs} while the instances report what they still hold or have not confirmed. Absent: 0.
   */
  readonly lastEpoch?: number;
}

/** Instances with usage Kana has not confirmed yet report their totals at least this often (a store that lost them learns them again). */
export const UNCONFIRMED_REPORT_MS = 1000;

/**
 * How long a store that lost a ledger grants nothing for the key: every block granted before the loss
 * has ended by then (leases last `leaseMs`), and every instance has reported its holds and its usage
 * Kana has not confirmed (renewals at half a lease, {@link UNCONFIRMED_REPORT_MS}).
 */
export function rebuildMs(leaseMs: number): number {
  return Math.max(leaseMs, 2 * UNCONFIRMED_REPORT_MS);
}

/**
 * An instance's claim on the allowance: `max(granted - returned, spent + held)`, units reserved and
 * not given back, or spent and held if more. The one TypeScript copy of the formula (the Lua one is
 * `owed` in ledger-scripts.ts): MemoryStore and the instance's own ledger (KeyLedger) use it.
 */
export function ledgerClaim(granted: number, returned: number, spent: number, held: number): number {
  return Math.max(granted - returned, spent + held);
}

/** What an instance owes the allowance: its claim less the units Kana has counted (`confirmed`). */
export function ledgerOwed(granted: number, returned: number, spent: number, held: number, confirmed: number): number {
  return ledgerClaim(granted, returned, spent, held) - confirmed;
}

/** Reports an instance's totals; `release` gives back its unspent units, `forget` also drops its record. */
export interface ReportRequest {
  readonly instance: string;
  readonly totals: LedgerTotals;
  /**
   * `'keep'`: report, and extend the lease if the instance has one. `'release'`: give back the
   * units reserved and not spent or held, and end the lease. `'forget'`: the instance will not use
   * this key again: end the lease, count its unconfirmed usage as confirmed (until the next
   * answer, which counts it if Kana has it), and drop its record.
   */
  readonly mode: 'keep' | 'release' | 'forget';
}

/** @deprecated Renamed {@link ReportRequest}, as the store method `settle` is now `report`. */
export type SettleRequest = ReportRequest;

/** The store's answer to `reserve` or `report`. */
export interface LeaseState {
  /**
   * `granted`: units were added to the instance's grant. `limit`: fewer than `need` units are left
   * (`remaining` says so), or this instance already has `maxBlock` units reserved and not spent
   * (`remaining` is at least `need` then: ask again once some are spent or given back).
   * `allow` / `not-in-plan`: the answer has no allowance to lease (unlimited, overage, BINARY, or
   * not in the plan). `check`: the store has no answer as recent as the request's (ask Kana).
   * `reported`: the reply to `report` (a store written before it was renamed from `settle` may say
   * `settled`: read the same).
   */
  readonly status: 'granted' | 'limit' | 'allow' | 'not-in-plan' | 'check' | 'reported';
  /** The store's record of the instance's grants (running total); lower than the instance's own if the store lost its state. */
  readonly granted: number;
  /** The store's record of the instance's returns (running total): a lease that expired has given back its units. */
  readonly returned: number;
  /** Milliseconds left on the instance's lease; 0 when it has none. */
  readonly leaseMs: number;
  /** Units of the allowance nobody has used, reserved or held, after this call (for a limited answer). */
  readonly remaining: number;
  /** The answer, when the store has one newer than the request's epoch (reserve only). */
  readonly answer: StoredAnswer | undefined;
  /**
   * Instances holding a lease on the key after this call, this one included if it holds one: while
   * the store cannot answer, each spends at most its share of `remaining` among them. Undefined when
   * a store does not say (kanaMeter then counts 1: each may spend all of it, as before).
   */
  readonly leases?: number;
}

/** Begins a check of a key for the whole fleet: at most one instance asks Kana at a time. */
export interface CheckRequest {
  readonly instance: string;
  /** How long the lock is held at most (the checker's time limit for one Kana check, and a margin). */
  readonly lockMs: number;
}

/**
 * `fresh`: another instance's answer is still fresh: use it. `wait`: another instance is asking Kana:
 * ask again shortly (never block). `check`: this instance holds the lock: ask Kana, then `storeAnswer`.
 * `failed`: another instance's check failed just now (`code`: its KanaError code): decide without Kana.
 */
export type CheckTicket =
  | { readonly status: 'fresh'; readonly answer: StoredAnswer }
  | { readonly status: 'wait'; readonly waitMs: number }
  | { readonly status: 'check'; readonly epoch: number }
  | { readonly status: 'failed'; readonly code: string };

/** Kana's answer (or failure) for the check `epoch` began. */
export interface AnswerRequest {
  readonly instance: string;
  readonly epoch: number;
  /** Kana's answer, with how long it stays fresh (capped by the store at the period end); or the code of the KanaError the check failed with. */
  readonly outcome: Omit<StoredAnswer, 'epoch'> | { readonly failed: string };
}

/** `stored`: the answer every instance now shares. `stale`: another check began since (the lock was lost); the answer was not stored. */
export type AnswerReceipt =
  | { readonly status: 'stored'; readonly answer: StoredAnswer }
  | { readonly status: 'stale' }
  | { readonly status: 'failed' };

/** Settings of the idempotency window kanaMeter asks a store for (its `idempotencyKey` option). */
export interface IdempotencyWindowOptions {
  /** How long a stored response is kept, in milliseconds. */
  readonly ttlMs: number;
  /** Most keys kept (in this process's memory; in a shared store, stored responses for the whole fleet). */
  readonly maxKeys: number;
  /** Most bytes of stored responses kept (bodies and headers), likewise. */
  readonly maxBytes: number;
  /** Called when a key is forgotten early because `maxKeys` or `maxBytes` were reached. */
  readonly onEvict: () => void;
}

/** What the store has done, as `kana.stats()` shows it. */
export interface StoreStats {
  /** False from a failure or timeout until the store answers again. */
  readonly available: boolean;
  /** Commands sent over the network (0 for MemoryStore). */
  readonly commands: number;
  /** Commands that failed or timed out. */
  readonly failures: number;
  /** Times the store went from available to unreachable. */
  readonly outages: number;
}

/** What kanaMeter() gives its store when it binds it. */
export interface StoreContext {
  /** kanaMeter's logger: where a store logs that it is unreachable, and back. */
  readonly logger: KanaLogger;
}

/**
 * Where kanaMeter keeps the state its instances share: Kana's answers (one check per key per TTL
 * for the whole fleet), leases on each allowance (so instances never pass more than it together),
 * and the idempotency window. `MemoryStore` (the default) keeps it in this process; `RedisStore`
 * (`kana-meter/redis`) in Redis, for several processes.
 *
 * To write another store, implement these methods with the semantics documented on each, every
 * ledger method atomic for its key (in Redis, a Lua script each). Methods may answer at once or
 * with a promise; a rejected promise (or a throw) is a store failure: kanaMeter decides per instance
 * then, and tries the store again later. kana-meter does the rest: it spends leased units locally,
 * gives back what it does not use, reports what Kana confirmed, and polls while another instance
 * checks. `test/stores/ledger-conformance.ts` in kana-meter's repository is the behaviour a store
 * must have, run against both stores.
 *
 * Owed by an instance: {@link ledgerOwed}, `max(granted - returned, spent + held) - confirmed`. Effective used =
 * answer's used + everything owed + units confirmed since the answer's check began. A grant is made
 * only if it fits under the budget, so the fleet never passes more than the allowance; and only
 * while the instance's claim less what it spent stays within `maxBlock` (one request bigger than
 * that may have its own units when nothing else is reserved), so that an instance that dies locks
 * away at most `maxBlock` units per key. A store that finds it lost a ledger (see
 * `ReserveRequest.lastEpoch`) grants nothing for `rebuildMs(leaseMs)`, reporting `remaining: 0`.
 */
export interface KanaMeterStore {
  /** Called once by kanaMeter() at creation. A store serves one kanaMeter(): binding it twice throws a TypeError. */
  bind(context: StoreContext): void;
  /** Whether the store answers now; while false, kanaMeter decides per instance without waiting for it. */
  readonly available: boolean;
  /**
   * Merges the instance's totals, ends expired leases, then grants at least `need` units (up to what
   * remains) if the store's answer is at least as recent as `epoch`, and extends the instance's lease.
   */
  reserve(key: StoreKey, request: ReserveRequest): Promisable<LeaseState>;
  /**
   * Merges the instance's totals, then keeps, releases or forgets its lease (see ReportRequest.mode).
   * A store written to the old interface names it `settle`: kanaMeter calls a `settle` method in its place.
   */
  report(key: StoreKey, request: ReportRequest): Promisable<LeaseState>;
  /** A fresh answer, or the lock to ask Kana, or how long another instance's check may still take. */
  beginCheck(key: StoreKey, request: CheckRequest): Promisable<CheckTicket>;
  /** Stores Kana's answer for the check `epoch` began, if no other check began since; releases the lock. */
  storeAnswer(key: StoreKey, request: AnswerRequest): Promisable<AnswerReceipt>;
  /** The idempotency window (`idempotencyKey`): shared by every instance when the store is. */
  idempotencyWindow(options: IdempotencyWindowOptions): IdempotencyWindow;
  /** Counters and state for `kana.stats()`. */
  stats(): StoreStats;
  /**
   * Optional, for a store several processes share: records that the kanaMeter `instance` uses it, for
   * `ttlMs`, and answers how many instances do (itself included). kanaMeter calls it at start and every
   * second: while the store cannot be asked, an instance divides what Kana's answer left among that many,
   * even on an allowance no instance has shared yet (a fleet just started or deployed). A failed or
   * slow answer (past the store's `timeoutMs`) is dropped: it does not count as a store failure.
   * `ttlMs` 0: the instance is closing; remove it (the others stop counting it at once).
   */
  announce?(instance: string, ttlMs: number): Promisable<number>;
  /**
   * The time limit of one call, in ms, if the store bounds its calls itself (RedisStore's
   * `timeoutMs`). kanaMeter gives every call that returns a promise this limit (plus 100 ms), else
   * 1000 ms: a call past it is a failure, and the store counts as unavailable until a call settles.
   */
  readonly timeoutMs?: number;
}
