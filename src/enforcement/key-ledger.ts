// This instance's record in the store's ledger for one (user, feature): its running totals, its holds, and the block of units it may spend without asking; changed only through its methods.

import { type LeaseState, type LedgerTotals, ledgerClaim } from '../stores/store.js';
import type { Entitlement } from './entitlements.js';
import { type OutageBase, outageBase } from './outage-share.js';

/** A request waiting for units until the next reservation answers. */
export interface Taker {
  readonly delta: number;
  /** Hold the units until the request ends (a request), or only look (check()). */
  readonly hold: boolean;
  /** Set when decided; `resume` is called then if the taker waited. */
  taken: Taken | undefined;
  resume: ((taken: Taken) => void) | undefined;
  /** Asked Kana again once already because the store had no answer this recent: not again. */
  rechecked?: boolean;
  /** clock() when it first waited for units of this instance's block to come free (maxBlock reached). */
  cappedAt?: number;
}

/** What taking units for a request decided. */
export interface Taken {
  readonly outcome: 'allowed' | 'not-in-plan' | 'limit-reached';
  /** Units used before this request, as far as this instance knows; null without an allowance (BINARY, not in plan). */
  readonly used: number | null;
  /** Units the request now holds (0 when refused, or only looking). */
  readonly held: number;
}

/**
 * The state of one key's ledger on this instance. Leases (leases.ts) decides when to reserve,
 * report and give back; this class keeps what those steps leave, so that every change to the
 * key's totals, holds and block goes through one of its methods.
 */
export class KeyLedger {
  /** Units counted as used: captured here, plus what was waiting for delivery when this record began. */
  #spent: number;
  /** Units of the grants given back. */
  #returned = 0;
  /** Units of `spent` no longer waiting for Kana (delivered, or failed for good). */
  #confirmed = 0;
  /** Units the store granted, as it last said (a running total). */
  #granted = 0;
  /** Units held by requests (and kana.hold() jobs) in flight now. */
  #held = 0;
  /** The totals the store last acknowledged: a report is due when they differ. */
  #reportedSpent = 0;
  #reportedReturned = 0;
  #reportedConfirmed = 0;
  /** The answer epoch the block was granted under: spent only while the entry's answer has it. */
  #blockEpoch = -1;
  /** performance.now() until which the block may be spent: its lease end, measured from when the call was sent. */
  #blockUntil = 0;
  /** Length of the lease the store gave last (renewed once half of it has passed). */
  #leaseMs = 0;
  /** The store says this instance holds a lease on the key. */
  #leased = false;
  /** Units nobody had used, reserved or held when the store last answered. */
  #remoteLeft = 0;
  /** Far from the end of the allowance when the store last answered (see `plentiful`). */
  #plentiful = false;
  /** This instance's claim on the allowance (ledgerClaim) as the store counted it in that answer. */
  #claimAtReply = 0;
  /** Units the last grant added: the next block asks for as many again. */
  #lastGrant = 0;
  /** performance.now() of the last units taken (the block goes back once idle). */
  #lastTakeAt = 0;
  /** A store call for this key is in flight (one at a time, so replies arrive in order). */
  #busy = false;
  /** The last store call answered synchronously (an in-process store: nothing to prefetch). */
  #immediate = false;
  /** Requests waiting for the reservation after the one in flight. */
  #waiting: Taker[] = [];
  /** Requests waiting for units reserved here to be spent or given back (maxBlock reached): tried again each report interval. */
  #capped: Taker[] = [];
  /** The highest answer epoch units were granted under: a store with an older answer lost the ledger. */
  #lastEpoch = 0;
  /** clock() of the store's last answer to a report or reservation. */
  #reportedAt = 0;
  /** Evicted from the cache: its record was forgotten in the store. */
  #retired = false;
  /** What the store last said about the allowance: this instance's share of it while the store cannot answer. */
  #outage: OutageBase | undefined = undefined;

  constructor(
    /** The store's name for this record: this instance, this incarnation of the entry. */
    readonly id: string,
    spent: number,
  ) {
    this.#spent = spent;
  }

  get spent(): number {
    return this.#spent;
  }
  get confirmed(): number {
    return this.#confirmed;
  }
  get held(): number {
    return this.#held;
  }
  get leased(): boolean {
    return this.#leased;
  }
  get leaseMs(): number {
    return this.#leaseMs;
  }
  get blockUntil(): number {
    return this.#blockUntil;
  }
  get lastGrant(): number {
    return this.#lastGrant;
  }
  get lastTakeAt(): number {
    return this.#lastTakeAt;
  }
  /** The highest answer epoch units were granted under (sent with each reservation). */
  get lastEpoch(): number {
    return this.#lastEpoch;
  }
  get reportedAt(): number {
    return this.#reportedAt;
  }
  get busy(): boolean {
    return this.#busy;
  }
  get retired(): boolean {
    return this.#retired;
  }
  get outage(): OutageBase | undefined {
    return this.#outage;
  }
  get hasWaiting(): boolean {
    return this.#waiting.length > 0;
  }
  get hasCapped(): boolean {
    return this.#capped.length > 0;
  }

  /** Units of the block not spent nor held (negative when usage went past it). */
  available(): number {
    return this.#granted - this.#returned - this.#spent - this.#held;
  }

  /** Units reserved and neither spent nor given back (holds included): the stats gauge. */
  reservedUnspent(): number {
    return Math.max(0, this.#granted - this.#returned - this.#spent);
  }

  /** Whether the block may be spent now: granted under the entry's answer, and its lease not over by this clock. */
  blockUsable(epoch: number, now: number): boolean {
    return this.#blockEpoch === epoch && now < this.#blockUntil;
  }

  /** The block was granted under an answer older or newer than the entry's: none of it may be spent. */
  blockOutdated(epoch: number): boolean {
    return this.#blockEpoch !== epoch;
  }

  /**
   * Units used before a request, with `available` units in the block then: what the store counted as
   * used, reserved or held when it last answered (of `budget`), plus what this instance's claim grew
   * by since (usage it has not reported yet), less the units of its block nobody holds.
   */
  usedBefore(budget: number, available: number): number {
    const claim = ledgerClaim(this.#granted, this.#returned, this.#spent, this.#held);
    const counted = budget - this.#remoteLeft;
    return Math.max(0, counted + claim - this.#claimAtReply - Math.max(0, available));
  }

  /**
   * Whether to reserve the next block before this one runs out: only far from the end of the
   * allowance (near it, units sitting in one instance's next block would refuse the others early),
   * and only for a store across the network (an in-process one answers at once anyway).
   */
  refillable(): boolean {
    return !this.#immediate && this.#lastGrant > 1 && this.#remoteLeft >= 2 * this.#lastGrant;
  }

  /** Units taken from the block at `now` (`hold`: kept aside until the request ends). */
  take(delta: number, hold: boolean, now: number): void {
    this.#lastTakeAt = now;
    if (hold) this.#held += delta;
  }

  /** Units kept aside for a request or job in flight, decided without the block (no allowance to lease, or this instance alone). */
  hold(delta: number): void {
    this.#held += delta;
  }

  /** A hold ended: its units come back (what it used comes back as spent usage). */
  releaseHeld(delta: number): void {
    this.#held -= delta;
  }

  /** Units captured here (already in the delivery queue). */
  spend(delta: number): void {
    this.#spent += delta;
  }

  /** Units the delivery queue no longer waits for; never more than were counted as spent. */
  confirm(delta: number): void {
    this.#confirmed = Math.min(this.#spent, this.#confirmed + delta);
  }

  /** Units of the block given back with the next store call (they can no longer be spent, or are too few). */
  giveBack(units: number): void {
    this.#returned += units;
  }

  /** Gives the whole block back: everything granted and not spent or `held`. */
  giveBackUnspent(held: number): void {
    this.#returned = Math.max(this.#returned, this.#granted - this.#spent - held);
  }

  /** Totals to report, with the units held by requests in flight now (or `held`, when the holds will not be billed). */
  totals(held = this.#held): LedgerTotals {
    return { spent: this.#spent, returned: this.#returned, confirmed: this.#confirmed, held };
  }

  /** Whether the store has not been told of the latest totals. */
  get dirty(): boolean {
    return this.spendingUnreported || this.#confirmed !== this.#reportedConfirmed;
  }

  /** Whether the store has not been told of the latest spending or returns (Kana's confirmations aside). */
  get spendingUnreported(): boolean {
    return this.#spent !== this.#reportedSpent || this.#returned !== this.#reportedReturned;
  }

  /**
   * Leased, and far from the end of the allowance: when the store last answered, what was left
   * would still grant a block as big as the last one to every instance holding one, twice over.
   * There, Kana's confirmations wait for the next store call, and an idle block for its renewal to
   * go back: they change no decision that far from the end, and cost a call each.
   */
  get plentiful(): boolean {
    return this.#leased && this.#plentiful;
  }

  /** A store call for this key is sent: no other until it answers. */
  beginCall(): void {
    this.#busy = true;
  }

  /** The store answered the call (`immediate`: at once, in process), having counted `sent`. */
  callAnswered(immediate: boolean, sent: LedgerTotals): void {
    this.#immediate = immediate;
    this.#busy = false;
    this.#reportedSpent = Math.max(this.#reportedSpent, sent.spent);
    this.#reportedReturned = Math.max(this.#reportedReturned, sent.returned);
    this.#reportedConfirmed = Math.max(this.#reportedConfirmed, sent.confirmed);
  }

  /** The store call failed: the next may be sent. */
  callFailed(): void {
    this.#busy = false;
  }

  /**
   * What the store said, for a call sent at `sentAt` with `sent`: its record of our grants (it may
   * have lost them: then its word counts), our lease, what is left, and this instance's share of it
   * for an outage. Returns whether the lease or unreported totals need the report interval.
   */
  adopt(entry: Entitlement, state: LeaseState, sentAt: number, sent: LedgerTotals, now: number): boolean {
    const before = this.#granted - this.#returned;
    this.#reportedAt = now;
    this.#granted = state.granted;
    this.#returned = Math.max(this.#returned, state.returned);
    this.#remoteLeft = state.remaining;
    this.#claimAtReply = ledgerClaim(state.granted, state.returned, sent.spent, sent.held);
    this.#outage = outageBase(entry, state, this.#claimAtReply, this.#outage);
    this.#leased = state.leaseMs > 0;
    this.#blockUntil = this.#leased ? sentAt + state.leaseMs : 0;
    if (this.#leased) this.#leaseMs = state.leaseMs;
    if (state.status === 'granted') {
      this.#blockEpoch = entry.epoch;
      this.#lastEpoch = Math.max(this.#lastEpoch, entry.epoch);
      this.#lastGrant = Math.max(1, this.#granted - this.#returned - before);
    }
    // The store grants each instance at most remaining / (2 × (leases + 1)) (ledger-scripts.ts).
    const sharing = (state.leases ?? 1) + 1;
    this.#plentiful = this.#lastGrant > 1 && state.remaining >= 2 * 2 * sharing * this.#lastGrant;
    return this.#leased || this.dirty;
  }

  /** A request waits for the reservation after the one in flight. */
  queue(taker: Taker): void {
    this.#waiting.push(taker);
  }

  /** Requests put back to wait for the next reservation. */
  requeue(takers: Taker[]): void {
    for (const taker of takers) this.#waiting.push(taker);
  }

  /** The requests waiting, handed over (the ledger's list starts empty again). */
  takeWaiting(): Taker[] {
    const waiting = this.#waiting;
    this.#waiting = [];
    return waiting;
  }

  /** A request waits for units of this instance's block to come free (maxBlock reached). */
  cap(taker: Taker): void {
    this.#capped.push(taker);
  }

  /** The requests waiting on maxBlock, handed over. */
  takeCapped(): Taker[] {
    const capped = this.#capped;
    this.#capped = [];
    return capped;
  }

  /** Requests waiting on maxBlock try again with the next reservation. */
  retryCapped(): void {
    for (const taker of this.#capped) this.#waiting.push(taker);
    this.#capped = [];
  }

  /** Evicted from the cache: the store forgets this record. */
  retire(): void {
    this.#retired = true;
  }
}
