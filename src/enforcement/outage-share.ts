// While the store cannot answer: each instance spends at most its own claim plus its share of what the store last said was left, so the fleet together passes at most what was left.

import { withTimeLimit } from '../config/time-limit.js';
import type { KanaMeterStore, LeaseState } from '../stores/store.js';
import type { Entitlement } from './entitlements.js';
import { storeTimeoutOf } from './store-time-limit.js';

/** What the store last said about one key, under one answer: the base of this instance's share while it cannot be asked. */
export interface OutageBase {
  /** The answer epoch it was said under: another answer, another allowance. */
  readonly epoch: number;
  /** This instance's claim, max(granted - returned, spent + held), as the store counted it then. */
  readonly claim: number;
  /** Units nobody had used, reserved or held then. */
  readonly left: number;
  /** Instances sharing what was left: those holding a lease, and this one. */
  readonly instances: number;
}

/** How long the largest fleet seen is remembered (two windows of this): a fleet that shrank stops counting after 5 to 10 minutes. */
const FLEET_WINDOW_MS = 5 * 60_000;

/**
 * The largest number of instances seen sharing one key, or the store, lately (at least 1): the share of an
 * instance that has no word from the store on a key (its entry is new, or under another answer).
 */
export class FleetSize {
  #current = 1;
  #previous = 1;
  #windowStart = 0;

  seen(instances: number, now: number): void {
    if (now - this.#windowStart >= FLEET_WINDOW_MS) {
      this.#previous = now - this.#windowStart >= 2 * FLEET_WINDOW_MS ? 1 : this.#current;
      this.#current = 1;
      this.#windowStart = now;
    }
    this.#current = Math.max(this.#current, instances);
  }

  get estimate(): number {
    return Math.max(this.#current, this.#previous);
  }
}

/** How often an instance tells a store several processes share that it uses it; its entry lasts three of these. */
export const ANNOUNCE_MS = 1_000;

/**
 * Tells a shared store (one with `announce`) that this instance uses it, at start and every ANNOUNCE_MS, and
 * counts the instances it answers into `fleet`: a fleet whose store stalls before it shared any allowance (just
 * started or deployed) still divides what Kana's answer left among its instances, not one each.
 * Returns what stops it and removes this instance (close()), resolving once the store answered or the time limit
 * passed. A failed or slow announcement is dropped, not counted as a store failure (the ledger's calls tell whether
 * the store answers): the next one tries again.
 */
export function announcePresence(
  store: KanaMeterStore,
  instance: string,
  fleet: FleetSize,
  clock: () => number,
): () => Promise<void> {
  const { announce } = store;
  if (typeof announce !== 'function') return async () => {};
  const limitMs = storeTimeoutOf(store);
  const send = (ttlMs: number) =>
    withTimeLimit(
      Promise.resolve().then(() => announce.call(store, instance, ttlMs)),
      limitMs,
      'store.announce',
    );
  const tell = async () => {
    try {
      fleet.seen(await send(3 * ANNOUNCE_MS), clock());
    } catch {}
  };
  void tell();
  const timer = setInterval(tell, ANNOUNCE_MS);
  timer.unref();
  return async () => {
    clearInterval(timer);
    // Leaving, after any announcement still queued in the client (Redis unreachable, then back): a late
    // one must not count this instance for 3 s more in the fleet's outage shares. Awaited (within the time
    // limit): an app that exits once close() resolves would otherwise drop it unsent.
    await send(0).catch(() => {});
  };
}

/**
 * The base after a store reply, or undefined when the reply says nothing about a limited allowance
 * (no answer in the store, unlimited, BINARY). A `reported` reply (no grant) updates a base of the same answer.
 */
export function outageBase(
  entry: Entitlement,
  state: LeaseState,
  claim: number,
  previous: OutageBase | undefined,
): OutageBase | undefined {
  const limited = state.status === 'granted' || state.status === 'limit';
  const same = state.status === 'reported' && previous !== undefined && previous.epoch === entry.epoch;
  if (!limited && !same) return state.status === 'reported' ? previous : undefined;
  const leases = state.leases ?? 0;
  return {
    epoch: entry.epoch,
    claim,
    left: Math.max(0, state.remaining),
    instances: leases + (state.leaseMs > 0 ? 0 : 1),
  };
}

/**
 * Whether `delta` more units fit this instance's share while the store cannot be asked:
 * its claim when the store last answered plus what was left then divided among the instances
 * (rounded down). Without a base for the current answer: Kana's answer alone, what it left divided
 * among the largest fleet seen. Summed over the instances, at most what was left.
 */
export function fitsShare(entry: Entitlement, delta: number, base: OutageBase | undefined, fleet: number): boolean {
  if (entry.budget === null) return true;
  if (base !== undefined && base.epoch === entry.epoch) {
    const instances = Math.max(1, base.instances, fleet);
    const taken = entry.ledger.spent + entry.ledger.held;
    return taken + delta <= base.claim + Math.floor(base.left / instances);
  }
  const left = Math.max(0, entry.budget - entry.used);
  return entry.local + entry.ledger.held + delta <= Math.floor(left / Math.max(1, fleet));
}
