// This instance's record in the store's ledger for one (user, feature): its running totals, and the block of units it may spend without asking.

import type { LedgerTotals } from '../stores/store.js';
import type { OutageBase } from './outage-share.js';

/** A request waiting for units until the next reservation answers. */
export interface Taker {
  readonly delta: number;
  /** Hold the units until the request ends (a request), or only look (check()). */
  readonly hold: boolean;
  /** Set when decided; `settle` is called then if the taker waited. */
  taken: Taken | undefined;
  settle: ((taken: Taken) => void) | undefined;
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

export class KeyLedger {
  /** Units counted as used: captured here, plus what was waiting for delivery when this record began. */
  spent: number;
  /** Units of the grants given back. */
  returned = 0;
  /** Units of `spent` no longer waiting for Kana (delivered, or failed for good). */
  confirmed = 0;
  /** Units the store granted, as it last said (a running total). */
  granted = 0;
  /** The totals the store last acknowledged: a settle is due when they differ. */
  reportedSpent = 0;
  reportedReturned = 0;
  reportedConfirmed = 0;
  /** The answer epoch the block was granted under: spent only while the entry's answer has it. */
  blockEpoch = -1;
  /** performance.now() until which the block may be spent: its lease end, measured from when the call was sent. */
  blockUntil = 0;
  /** Length of the lease the store gave last (renewed once half of it has passed). */
  leaseMs = 0;
  /** The store says this instance holds a lease on the key. */
  leased = false;
  /** Units nobody had used, reserved or held when the store last answered. */
  remoteLeft = 0;
  /** This instance's claim on the allowance, max(granted - returned, spent + held), as the store counted it in that answer. */
  claimAtReply = 0;
  /** Units the last grant added: the next block asks for as many again. */
  lastGrant = 0;
  /** performance.now() of the last units taken (the block goes back once idle). */
  lastTakeAt = 0;
  /** A store call for this key is in flight (one at a time, so replies arrive in order). */
  busy = false;
  /** The last store call answered synchronously (an in-process store: nothing to prefetch). */
  immediate = false;
  /** Requests waiting for the reservation after the one in flight. */
  waiting: Taker[] = [];
  /** Requests waiting for units reserved here to be spent or given back (maxBlock reached): tried again each settle interval. */
  capped: Taker[] = [];
  /** The highest answer epoch units were granted under: a store with an older answer lost the ledger. */
  lastEpoch = 0;
  /** clock() of the store's last answer to a report or reservation. */
  reportedAt = 0;
  /** Evicted from the cache: its record was forgotten in the store. */
  retired = false;
  /** What the store last said about the allowance: this instance's share of it while the store cannot answer. */
  outage: OutageBase | undefined = undefined;

  constructor(
    /** The store's name for this record: this instance, this incarnation of the entry. */
    readonly id: string,
    spent: number,
  ) {
    this.spent = spent;
  }

  /** Totals to report, with the units held by requests in flight now. */
  totals(held: number): LedgerTotals {
    return { spent: this.spent, returned: this.returned, confirmed: this.confirmed, held };
  }

  /** Whether the store has not been told of the latest totals. */
  get dirty(): boolean {
    return (
      this.spent !== this.reportedSpent ||
      this.returned !== this.reportedReturned ||
      this.confirmed !== this.reportedConfirmed
    );
  }

  acknowledged(totals: LedgerTotals): void {
    this.reportedSpent = Math.max(this.reportedSpent, totals.spent);
    this.reportedReturned = Math.max(this.reportedReturned, totals.returned);
    this.reportedConfirmed = Math.max(this.reportedConfirmed, totals.confirmed);
  }
}
