// Leases on allowances: units reserved from the store in blocks and spent here without asking it, totals reported in the background, blocks given back when idle; decisions per instance when the store cannot answer.

import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { logCodes } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import type { Counter } from '../config/stats.js';
import { isPromise } from '../config/thenable.js';
import {
  type KanaMeterStore,
  type LeaseState,
  type LedgerTotals,
  type ReportRequest,
  type StoredAnswer,
  type StoreKey,
  UNCONFIRMED_REPORT_MS,
} from '../stores/store.js';
import { type Entitlement, verdict } from './entitlements.js';
import type { Taken, Taker } from './key-ledger.js';
import { announcePresence, FleetSize, fitsShare } from './outage-share.js';
import { RestingLeases } from './resting-leases.js';

/** How often totals are reported and leases renewed, at most, per key (and whether a block went idle). */
export const REPORT_INTERVAL_MS = 100;
/** A block not touched for this long, with nothing held, goes back to the store for the others (far from the end of the allowance, at its renewal). */
export const IDLE_MS = 1000;
/** Longest a request waits for units of this instance's block to come free once it has `maxBlock` reserved; then refused. */
export const CAP_WAIT_MS = 1000;

export interface LeasesOptions {
  store: KanaMeterStore;
  counters: Record<Counter, number>;
  logger: KanaLogger;
  /** Takes a newer answer the store gave with a reservation (another instance asked Kana). */
  adoptAnswer: (entry: Entitlement, answer: StoredAnswer) => void;
  /** Asks for the key's answer again (the store had none this recent: it lost it); resolves once the entry has it. */
  recheck?: (entry: Entitlement) => Promise<unknown>;
  /** A monotonic clock in ms. @default performance.now */
  clock?: () => number;
}

/**
 * The instance side of the shared ledger. A limited allowance is decided from a block of units
 * the store granted this instance: taking one is synchronous; a reservation (one store call,
 * shared by the requests that arrive meanwhile) happens only when the block runs out, and ahead
 * of time while it runs low. Units are spent only while the block's lease lasts by this clock
 * (measured from when the call was sent, so never after the store takes them back) and under
 * the answer they were granted under.
 */
export class Leases {
  /** This process's kanaMeter in the store: random, so restarts and other processes never share it. */
  readonly instanceId = randomBytes(6).toString('hex');
  readonly #options: LeasesOptions;
  readonly #store: KanaMeterStore;
  readonly #clock: () => number;
  /** Entries with a lease or unreported totals: visited each report interval. */
  readonly #active = new Set<Entitlement>();
  /**
   * Leased entries far from the end of the allowance with nothing to report before their lease's
   * renewal: visited then, not every interval (thousands of keys with a request now and then would
   * otherwise be scanned ten times a second). A request or a confirmation makes one active again.
   */
  readonly #resting = new RestingLeases<Entitlement>();
  #ledgers = 0;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #commandFailureLogged = false;
  /** A store call finding out whether an unavailable store is back is in flight: no other is sent meanwhile. */
  #probing = false;
  /** The most instances seen sharing a key or the store lately: the share of a key the store never answered about, while it cannot. */
  readonly #fleet = new FleetSize();
  /** Stops telling a shared store that this instance uses it, and tells it that it left. */
  readonly #stopAnnouncing: () => Promise<void>;
  /** A store written to the interface before `report` was named so: its `settle` method reports. */
  readonly #legacySettle: boolean;

  constructor(options: LeasesOptions) {
    this.#options = options;
    this.#store = options.store;
    this.#clock = options.clock ?? (() => performance.now());
    // Our stores define no `settle`: one present is a custom store's (or a subclass's) implementation of the old name.
    this.#legacySettle = typeof (options.store as { settle?: unknown }).settle === 'function';
    this.#stopAnnouncing = announcePresence(this.#store, this.instanceId, this.#fleet, this.#clock);
  }

  /** A new ledger id: this instance, and a new record for each entry (an evicted key comes back as a new one). */
  ledgerId(): string {
    return `${this.instanceId}.${(++this.#ledgers).toString(36)}`;
  }

  /**
   * Takes `delta` units for a request (`hold`: until it ends) or only looks (check()). At once from
   * the block, or from Kana's answer when there is no allowance to lease; else after a reservation.
   */
  take(entry: Entitlement, delta: number, hold: boolean): Taken | Promise<Taken> {
    const quick = this.#takeNow(entry, delta, hold);
    if (quick !== undefined) return quick;
    const ledger = entry.ledger;
    const taker: Taker = { delta, hold, taken: undefined, resume: undefined };
    if (ledger.busy) ledger.queue(taker);
    else this.#reserve(entry, [taker]);
    // An in-process store has answered already.
    if (taker.taken !== undefined) return taker.taken;
    return new Promise((resolve) => {
      taker.resume = resolve;
    });
  }

  /** A decision without waiting for the store, when there is one: the block, Kana's answer alone, or this instance alone. */
  #takeNow(entry: Entitlement, delta: number, hold: boolean): Taken | undefined {
    if (!leasable(entry)) return unleased(entry, delta, hold);
    const ledger = entry.ledger;
    const now = this.#clock();
    const available = ledger.available();
    if (available >= delta && ledger.blockUsable(entry.epoch, now)) {
      const used = ledger.usedBefore(entry.budget as number, available);
      ledger.take(delta, hold, now);
      if (available - delta < ledger.lastGrant / 2 && ledger.refillable()) this.#refill(entry);
      return { outcome: 'allowed', used, held: hold ? delta : 0 };
    }
    if (this.#closed) return this.#decideHere(entry, delta, hold);
    if (!this.#store.available) {
      // Decided here at once; one reservation in the background finds out when the store is back.
      if (!ledger.busy && !this.#probing) {
        this.#probing = true;
        this.#reserve(entry, []);
      }
      return this.#decideAlone(entry, delta, hold);
    }
    return undefined;
  }

  /**
   * Units were spent or confirmed on this entry: report them soon (the report interval). At once when
   * the spending went past this instance's block (record(), a delta computed after the response):
   * the other instances must see those units before they reserve; and at the very end of an
   * allowance (blocks of one unit), so that an instance dying then leaves no spent unit unreported.
   */
  changed(entry: Entitlement | undefined): void {
    if (entry === undefined || entry.ledger.retired) return;
    const ledger = entry.ledger;
    // Units may have come free (a hold ended, held units spent): requests waiting on maxBlock try again.
    if (ledger.hasCapped && !ledger.busy) this.#retryCapped(entry);
    // Usage before any answer (record() in a worker, a route metered and not enforced): reported so that
    // every instance counts it before it reserves. A key the ticks were not reporting goes once this
    // turn's usage is counted (a burst elsewhere right after record() calls counts them); while the ticks
    // are reporting it, it waits for the next one.
    if (!entry.loaded) {
      if (!this.#active.has(entry)) queueMicrotask(() => this.#reportWoken(entry));
      this.#activate(entry);
      return;
    }
    // No allowance to lease (unlimited, overage, BINARY): nothing to report; the totals go with
    // the first reservation if the plan becomes limited.
    if (!leasable(entry)) return;
    const urgent = ledger.available() < 0 || (ledger.lastGrant === 1 && ledger.leased);
    if (urgent && !ledger.busy && !this.#closed && this.#store.available) this.#report(entry, 'keep');
    else this.#activate(entry);
  }

  /**
   * The entry left the cache: its record in the store is forgotten (its block and holds released;
   * an in-process store drops the key's ledger with it, so it stays as bounded as the cache).
   */
  retire(entry: Entitlement): void {
    entry.ledger.retire();
    this.#active.delete(entry);
    this.#resting.delete(entry);
    this.#decideCapped(entry);
    whenAnswered(
      () => this.#callReport(entry, this.#reportRequest(entry, 'forget', 0)),
      () => {},
      () => {},
    );
  }

  /** Gauges for stats(): keys this instance holds a lease on, and the units reserved there and not spent. */
  gauges(): { storeLeases: number; storeLeasedUnits: number } {
    let storeLeases = 0;
    let storeLeasedUnits = 0;
    for (const entries of [this.#active, this.#resting.entries()]) {
      for (const entry of entries) {
        if (!entry.ledger.leased) continue;
        storeLeases++;
        storeLeasedUnits += entry.ledger.reservedUnspent();
      }
    }
    return { storeLeases, storeLeasedUnits };
  }

  /** Reports the final totals and gives every block back (requests still running will not be billed). */
  async close(): Promise<void> {
    this.#closed = true;
    const left = this.#stopAnnouncing();
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const entry of this.#resting.entries()) this.#active.add(entry);
    this.#resting.clear();
    for (const entry of this.#active) this.#decideCapped(entry);
    const last = [...this.#active].map(
      (entry) =>
        new Promise<void>((resolve) => {
          whenAnswered(
            () => this.#callReport(entry, this.#reportRequest(entry, 'release', 0)),
            (state) => {
              this.#adopt(entry, state, 0, entry.ledger.totals(0));
              resolve();
            },
            () => resolve(),
          );
        }),
    );
    this.#active.clear();
    await Promise.all([...last, left]);
  }

  /** One reservation for `takers` (none: ahead of time, or a probe); the requests that arrive meanwhile wait for the next. */
  #reserve(entry: Entitlement, takers: Taker[]): void {
    const ledger = entry.ledger;
    let want = 0;
    let need = Number.POSITIVE_INFINITY;
    for (const taker of takers) {
      want += taker.delta;
      need = Math.min(need, taker.delta);
    }
    if (takers.length === 0) {
      want = Math.max(1, ledger.lastGrant);
      need = 1;
    }
    // Units of the block that can no longer be spent (another answer, its lease ended), or too few for
    // these requests, go back with this call: counted in what remains, they can be granted again.
    const spare = ledger.available();
    const current = ledger.blockUsable(entry.epoch, this.#clock());
    if (spare > 0 && (!current || (takers.length > 0 && spare < need))) ledger.giveBack(spare);
    const totals = ledger.totals();
    const sentAt = this.#clock();
    ledger.beginCall();
    const { lastEpoch } = ledger;
    whenAnswered(
      () => this.#store.reserve(entry, { instance: ledger.id, totals, epoch: entry.epoch, want, need, lastEpoch }),
      (state, immediate) => {
        ledger.callAnswered(immediate, totals);
        this.#probing = false;
        this.#adopt(entry, state, sentAt, totals);
        this.#serve(entry, takers, state);
        this.#next(entry);
      },
      (error) => {
        ledger.callFailed();
        this.#probing = false;
        this.#failed(error);
        for (const taker of takers) {
          if (taker.taken === undefined) this.#decide(taker, this.#decideAlone(entry, taker.delta, taker.hold));
        }
        this.#next(entry);
      },
    );
  }

  /** Decides the requests a reservation was for, from the block it left. */
  #serve(entry: Entitlement, takers: Taker[], state: LeaseState): void {
    const recheck: Taker[] = [];
    for (const taker of takers) {
      if (state.status === 'allow' || state.status === 'not-in-plan') {
        this.#decide(taker, unleased(entry, taker.delta, taker.hold));
      } else if (state.status === 'check') {
        // The store has no answer this recent (it lost its state): never decided here alone, which
        // would pass what every instance thinks is left; the answer is asked for again, then the store.
        if (taker.rechecked || this.#options.recheck === undefined) {
          this.#decide(taker, { outcome: 'limit-reached', used: entry.effectiveUsed(), held: 0 });
        } else recheck.push(taker);
      } else {
        const taken = this.#fromBlock(entry, taker.delta, taker.hold);
        if (taken.outcome === 'allowed' || state.remaining < taker.delta || !this.#capWait(entry, taker)) {
          this.#decide(taker, taken);
        }
      }
    }
    if (recheck.length > 0) this.#recheck(entry, recheck);
  }

  /**
   * The store had units left but this instance has `maxBlock` reserved and not spent (its block and
   * its holds): the request waits for some to be spent or given back, at most CAP_WAIT_MS.
   */
  #capWait(entry: Entitlement, taker: Taker): boolean {
    const now = this.#clock();
    taker.cappedAt ??= now;
    if (now - taker.cappedAt >= CAP_WAIT_MS) return false;
    entry.ledger.cap(taker);
    this.#activate(entry);
    return true;
  }

  /** Requests waiting on maxBlock when the store will not be asked for this entry again: decided here. */
  #decideCapped(entry: Entitlement): void {
    for (const taker of entry.ledger.takeCapped()) {
      this.#decide(taker, this.#decideHere(entry, taker.delta, taker.hold));
    }
  }

  /** Requests waiting on maxBlock: from the block if they fit now, else one more reservation. */
  #retryCapped(entry: Entitlement): void {
    entry.ledger.retryCapped();
    this.#next(entry);
  }

  /** Asks for the answer again, then the store again, for requests the store could not decide from an answer it lost. */
  #recheck(entry: Entitlement, takers: Taker[]): void {
    for (const taker of takers) taker.rechecked = true;
    entry.expiresAt = 0;
    const again = () => {
      entry.ledger.requeue(takers);
      this.#next(entry);
    };
    (this.#options.recheck as (entry: Entitlement) => Promise<unknown>)(entry).then(again, () => {
      // Kana cannot be asked either: decided per instance, as without a store.
      for (const taker of takers) this.#decide(taker, this.#decideHere(entry, taker.delta, taker.hold));
    });
  }

  /** After a reservation: units from the block if it has them, else refused (the store had too few left). */
  #fromBlock(entry: Entitlement, delta: number, hold: boolean): Taken {
    const ledger = entry.ledger;
    const available = ledger.available();
    const used = ledger.usedBefore(entry.budget as number, available);
    if (available < delta || ledger.blockOutdated(entry.epoch)) return { outcome: 'limit-reached', used, held: 0 };
    ledger.take(delta, hold, this.#clock());
    return { outcome: 'allowed', used, held: hold ? delta : 0 };
  }

  /** Requests that arrived while a call was in flight: from the block if they fit now, else the next reservation. */
  #next(entry: Entitlement): void {
    const ledger = entry.ledger;
    if (ledger.busy || !ledger.hasWaiting) return;
    const waiting = ledger.takeWaiting();
    const left: Taker[] = [];
    for (const taker of waiting) {
      // While the store cannot answer, every waiter is decided here now, not after the probe one of them starts.
      const taken = ledger.busy && this.#store.available ? undefined : this.#takeNow(entry, taker.delta, taker.hold);
      if (taken === undefined) left.push(taker);
      else this.#decide(taker, taken);
    }
    if (left.length === 0) return;
    if (ledger.busy) ledger.requeue(left);
    else this.#reserve(entry, left);
  }

  /** An instance decision, when the store cannot be asked: Kana's answer plus this instance's own usage and holds. */
  #decideHere(entry: Entitlement, delta: number, hold: boolean): Taken {
    this.#options.counters.storeFallbacks++;
    const outcome = verdict(entry, delta);
    const used = entry.effectiveUsed();
    if (outcome === 'allowed' && hold) entry.ledger.hold(delta);
    return { outcome, used, held: outcome === 'allowed' && hold ? delta : 0 };
  }

  /**
   * Decided here because the store did not answer: as #decideHere, and within this instance's share
   * of what the store last said was left (outage-share.ts), so that the fleet passes at most that.
   */
  #decideAlone(entry: Entitlement, delta: number, hold: boolean): Taken {
    if (!leasable(entry) || fitsShare(entry, delta, entry.ledger.outage, this.#fleet.estimate)) {
      return this.#decideHere(entry, delta, hold);
    }
    this.#options.counters.storeFallbacks++;
    return { outcome: 'limit-reached', used: entry.effectiveUsed(), held: 0 };
  }

  #decide(taker: Taker, taken: Taken): void {
    taker.taken = taken;
    taker.resume?.(taken);
  }

  /** What the store said: a newer answer another instance stored, then the ledger's part (KeyLedger.adopt). */
  #adopt(entry: Entitlement, state: LeaseState, sentAt: number, sent: LedgerTotals): void {
    // A newer answer another instance stored; not an expired one over an answer this instance got alone (epoch 0).
    const { answer } = state;
    if (answer !== undefined && answer.epoch > entry.epoch && (entry.epoch > 0 || answer.ttlMs > 0)) {
      this.#options.adoptAnswer(entry, answer);
    }
    const ledger = entry.ledger;
    const active = ledger.adopt(entry, state, sentAt, sent, this.#clock());
    if (ledger.outage !== undefined) this.#fleet.seen(ledger.outage.instances, this.#clock());
    // The store has no answer this recent (it lost it): ask again on the next request.
    if (state.status === 'check') entry.expiresAt = 0;
    if (active) this.#activate(entry);
  }

  /** A key with usage and no answer, which the ticks were not reporting: its usage goes to the store now. */
  #reportWoken(entry: Entitlement): void {
    const ledger = entry.ledger;
    if (!ledger.retired && !ledger.busy && ledger.dirty && !this.#closed && this.#store.available) {
      this.#report(entry, 'keep');
    }
  }

  /** Ahead of time, while the block runs low: the next block arrives before it is needed. */
  #refill(entry: Entitlement): void {
    if (!entry.ledger.busy && this.#store.available) this.#reserve(entry, []);
  }

  #activate(entry: Entitlement): void {
    this.#resting.delete(entry);
    this.#active.add(entry);
    if (this.#timer === undefined && !this.#closed) {
      this.#timer = setTimeout(() => this.#tick(), REPORT_INTERVAL_MS);
      this.#timer.unref();
    }
  }

  /** Every REPORT_INTERVAL_MS while some entry has a lease or totals to report: one timer, restarted once the tick is done. */
  #tick(): void {
    try {
      this.#reportDue();
    } finally {
      // Cleared only now: a store that answers at once activates entries during the tick, and a
      // timer started by each of those would run beside this one, one more every interval.
      this.#timer = undefined;
      if ((this.#active.size > 0 || this.#resting.size > 0) && !this.#closed) {
        this.#timer = setTimeout(() => this.#tick(), REPORT_INTERVAL_MS);
        this.#timer.unref();
      }
    }
  }

  /** Reports totals, renews leases in use, gives idle blocks back; at most one call per key in flight. */
  #reportDue(): void {
    const now = this.#clock();
    // While the store is unreachable, one call per tick finds out whether it is back; the rest wait.
    let calls = this.#store.available ? Number.POSITIVE_INFINITY : 1;
    for (const entry of this.#resting.wake(now)) this.#active.add(entry);
    for (const entry of this.#active) {
      const ledger = entry.ledger;
      if (ledger.busy) continue;
      if (ledger.hasCapped) {
        this.#retryCapped(entry);
        if (ledger.busy) continue;
      }
      const idle = ledger.held === 0 && now - ledger.lastTakeAt >= IDLE_MS;
      const renew = ledger.leased && ledger.blockUntil - now < ledger.leaseMs / 2;
      // Usage Kana has not confirmed is reported again now and then: a store that lost it learns it again.
      const unconfirmed = ledger.spent > ledger.confirmed && (!entry.loaded || leasable(entry));
      const remind = unconfirmed && now - ledger.reportedAt >= UNCONFIRMED_REPORT_MS;
      // Far from the end, a key with a request now and then costs a reservation and a report, not four calls.
      const plentiful = ledger.plentiful;
      const release = ledger.leased && idle && (!plentiful || renew);
      const due = plentiful ? ledger.spendingUnreported : ledger.dirty;
      const mode = release ? 'release' : due || renew || remind ? 'keep' : undefined;
      if (mode === undefined) {
        if (!ledger.leased && !unconfirmed && !ledger.hasCapped) this.#active.delete(entry);
        else if (plentiful && !ledger.hasCapped) this.#rest(entry, unconfirmed);
      } else if (calls > 0) {
        calls--;
        this.#report(entry, mode);
      }
    }
  }

  /**
   * Nothing to report before the lease's renewal (or, with usage Kana has not confirmed, before it
   * is reported again): the entry waits for that, or for a request or a confirmation.
   */
  #rest(entry: Entitlement, unconfirmed: boolean): void {
    const ledger = entry.ledger;
    const renewal = ledger.blockUntil - ledger.leaseMs / 2;
    this.#active.delete(entry);
    this.#resting.add(entry, unconfirmed ? Math.min(renewal, ledger.reportedAt + UNCONFIRMED_REPORT_MS) : renewal);
  }

  /** Reports the entry's totals to the store, and keeps, gives back (`release`) or forgets its lease. */
  #report(entry: Entitlement, mode: ReportRequest['mode']): void {
    const ledger = entry.ledger;
    const request = this.#reportRequest(entry, mode, ledger.held);
    const sentAt = this.#clock();
    ledger.beginCall();
    whenAnswered(
      () => this.#callReport(entry, request),
      (state, immediate) => {
        ledger.callAnswered(immediate, request.totals);
        this.#adopt(entry, state, sentAt, request.totals);
        this.#next(entry);
      },
      (error) => {
        ledger.callFailed();
        this.#failed(error);
        this.#next(entry);
      },
    );
  }

  #reportRequest(entry: Entitlement, mode: ReportRequest['mode'], held: number): ReportRequest {
    const ledger = entry.ledger;
    // Giving the block back: everything granted and not spent or held.
    if (mode !== 'keep') ledger.giveBackUnspent(held);
    return { instance: ledger.id, totals: ledger.totals(held), mode };
  }

  /** The store's `report` (a store written to the old interface: its `settle`); a `settled` reply reads as `reported`. */
  #callReport(entry: Entitlement, request: ReportRequest): LeaseState | Promise<LeaseState> {
    if (!this.#legacySettle) return this.#store.report(entry, request);
    const reply = (this.#store as unknown as LegacyStore).settle(entry, request);
    return isPromise(reply) ? reply.then(fromLegacy) : fromLegacy(reply);
  }

  /** Redis unreachable is logged once per outage by the store; any other failure (an error reply, a bug) once here. */
  #failed(error: unknown): void {
    const code = (error as { code?: unknown } | null)?.code;
    const unreachable = (error as { unreachable?: unknown } | null)?.unreachable === true;
    if (unreachable || this.#commandFailureLogged) return;
    this.#commandFailureLogged = true;
    this.#options.logger.error(
      { code: logCodes.storeCommandFailed, err: error, storeCode: code },
      'kana-meter: a store command failed; requests are decided per instance when it does (logged once)',
    );
  }
}

/** Whether the answer has an allowance to lease units of: consumable, limited, without overage. */
function leasable(entry: Entitlement): boolean {
  return entry.consumable && entry.budget !== null && !entry.overageEnabled;
}

/** A store written to the interface before `report` was named so. */
interface LegacyStore {
  settle(key: StoreKey, request: ReportRequest): LeaseState | Promise<LeaseState>;
}

/** The old name of the reply to a report, `settled`, read as `reported`. */
function fromLegacy(state: LeaseState): LeaseState {
  return (state.status as string) === 'settled' ? { ...state, status: 'reported' } : state;
}

/** No allowance to lease (BINARY, not in the plan, unlimited, overage): Kana's answer decides. */
function unleased(entry: Entitlement, delta: number, hold: boolean): Taken {
  const outcome = verdict(entry, delta);
  const used = entry.consumable ? entry.effectiveUsed() : null;
  const held = outcome === 'allowed' && hold && entry.consumable ? delta : 0;
  if (held > 0) entry.ledger.hold(held);
  return { outcome, used, held };
}

/**
 * Calls the store: `then` gets its answer at once when it answers at once (an in-process store, so a
 * request is decided in the same tick), else when its promise resolves; `immediate` says which.
 * A throw is a failure too.
 */
function whenAnswered<T>(
  call: () => T | Promise<T>,
  then: (value: T, immediate: boolean) => void,
  failed: (error: unknown) => void,
): void {
  let result: T | Promise<T>;
  try {
    result = call();
  } catch (error) {
    failed(error);
    return;
  }
  if (isPromise(result)) {
    // `then` throwing (a bug) must not become an unhandled rejection: the requests are decided without the store.
    result.then((value) => then(value, false), failed).catch(failed);
    return;
  }
  try {
    then(result, true);
  } catch (error) {
    // An answer `then` cannot read (a custom store's bad value): a failure, as when it comes later.
    failed(error);
  }
}
