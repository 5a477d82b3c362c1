// MemoryStore: the default store, the ledger and the idempotency window in this process's memory, with RedisStore's semantics (its Lua scripts, in TypeScript).

import { checkFunction, checkInteger, knownKeys, optionError, rejectUnknownKeys } from '../config/option-checks.js';
import type { IdempotencyWindow } from '../metering/idempotency-window.js';
import { MemoryIdempotencyWindow } from '../metering/idempotency-window.js';
import type {
  AnswerReceipt,
  AnswerRequest,
  CheckRequest,
  CheckTicket,
  IdempotencyWindowOptions,
  KanaMeterStore,
  LeaseState,
  LedgerTotals,
  ReportRequest,
  ReserveRequest,
  StoreContext,
  StoredAnswer,
  StoreKey,
  StoreStats,
} from './store.js';
import { ledgerClaim, ledgerOwed, rebuildMs } from './store.js';

/** Options of the default store; none is needed (it serves one kanaMeter() in one process). */
export interface MemoryStoreOptions {
  /**
   * How long a lease on units of an allowance lasts without being renewed, in milliseconds. In one
   * process a lease ends when its kanaMeter() closes; this only bounds it otherwise.
   * @default 10000
   * @example 5000
   */
  leaseMs?: number;
  /**
   * Most units reserved and not spent at once per key, requests in flight and holds included (the
   * blocks shrink to one unit at the end; a burst past it waits, at most a second, for units to be
   * spent). In one process they only spare work.
   * @default 64
   * @example 256
   */
  maxBlock?: number;
  /**
   * How long a key's ledger is kept after its last write, in milliseconds (a key evicted from the
   * entitlement cache goes at once).
   * @default 3600000 (1 hour)
   * @example 600_000
   */
  retainMs?: number;
  /**
   * The clock, in epoch milliseconds: for tests that move time.
   * @default Date.now
   * @example () => clock.now
   */
  now?: () => number;
}

interface InstanceRecord {
  granted: number;
  returned: number;
  spent: number;
  confirmed: number;
  held: number;
  /** When its lease ends; 0 without one. */
  leaseEnd: number;
  /** When it is forgotten if it does not report again. */
  forgetAt: number;
}

interface KeyRecord {
  answer: (Omit<StoredAnswer, 'ttlMs'> & { expiresAt: number; conf: number }) | undefined;
  /** Checks begun (the last one's epoch). */
  checks: number;
  lock: { id: string; expiresAt: number; conf: number; failed: string | undefined } | undefined;
  /** Sum owed by the instances, sum they confirmed, leases held. */
  out: number;
  conf: number;
  live: number;
  /** The earliest lease end or forget time: no sweep before it. */
  nextSweep: number;
  /** Found lost (an instance was granted units under a newer answer): no grants until then; 0 if never. */
  rebuildUntil: number;
  readonly instances: Map<string, InstanceRecord>;
  writtenAt: number;
}

/**
 * The default store: one process's memory. It shares nothing with other processes (pass a
 * RedisStore for that); it keeps kanaMeter's state behind the same interface, with the same
 * semantics, answering at once so that a decision never waits for it.
 * @example kanaMeter({ apiKey, userId, store: new MemoryStore() }) // the same as leaving `store` out
 */
export class MemoryStore implements KanaMeterStore {
  readonly available = true;
  readonly #records = new Map<string, KeyRecord>();
  readonly #leaseMs: number;
  readonly #maxBlock: number;
  readonly #retainMs: number;
  readonly #now: () => number;
  /** When #write next looks for records not written for retainMs. */
  #nextSweepAt = 0;
  #bound = false;

  constructor(options: MemoryStoreOptions = {}) {
    if (typeof options !== 'object' || options === null) {
      throw optionError('MemoryStore', options, 'an object such as { maxBlock: 64 }, or nothing');
    }
    rejectUnknownKeys('MemoryStore.', options, KNOWN_OPTIONS);
    this.#leaseMs = checkInteger('MemoryStore.leaseMs', options.leaseMs, 10_000, 100);
    this.#maxBlock = checkInteger('MemoryStore.maxBlock', options.maxBlock, 64, 1);
    this.#retainMs = checkInteger('MemoryStore.retainMs', options.retainMs, 3_600_000, this.#leaseMs);
    this.#now = checkFunction<() => number>('MemoryStore.now', options.now) ?? Date.now;
  }

  bind(_context: StoreContext): void {
    if (this.#bound) {
      throw new TypeError(
        'kana-meter: option `store` must be a store no other kanaMeter() uses; got a MemoryStore already bound to one.',
      );
    }
    this.#bound = true;
  }

  /** Keys with a ledger now. */
  get size(): number {
    return this.#records.size;
  }

  reserve(key: StoreKey, request: ReserveRequest): LeaseState {
    const now = this.#now();
    const record = this.#write(key, now);
    const self = this.#merge(record, request.instance, request.totals, now);
    const { answer } = record;
    // Units were granted under a newer answer than this record has: it lost the ledger. Rebuilt from
    // the instances' reports before anything is granted again; later checks get newer epochs.
    if ((request.lastEpoch ?? 0) > (answer?.epoch ?? 0) && record.rebuildUntil === 0) {
      record.rebuildUntil = now + rebuildMs(this.#leaseMs);
      record.checks = Math.max(record.checks, request.lastEpoch ?? 0);
      // An answer taken meanwhile is asked again once every instance has reported.
      if (answer !== undefined && answer.expiresAt > record.rebuildUntil) answer.expiresAt = record.rebuildUntil;
    }
    if (answer === undefined || answer.epoch < request.epoch) return this.#state(record, 'check', self, now, false);
    const newer = answer.epoch > request.epoch;
    if (!answer.consumable) return this.#state(record, answer.access ? 'allow' : 'not-in-plan', self, now, newer);
    if (answer.budget === null || answer.overageEnabled) return this.#state(record, 'allow', self, now, newer);
    const remaining = answer.budget - effective(record);
    if (remaining < request.need || record.rebuildUntil > now) return this.#state(record, 'limit', self, now, newer);
    const share = Math.floor(remaining / (2 * (record.live + 1)));
    const usable = Math.min(
      remaining,
      Math.max(request.want, Math.min(this.#maxBlock, share)),
      blockRoom(self, this.#maxBlock, request.need),
    );
    if (usable < request.need) return this.#state(record, 'limit', self, now, newer);
    const before = owed(self);
    self.granted = claim(self) + usable + self.returned;
    record.out += owed(self) - before;
    if (self.leaseEnd === 0) record.live++;
    this.#renew(record, self, now);
    return this.#state(record, 'granted', self, now, newer);
  }

  report(key: StoreKey, request: ReportRequest): LeaseState {
    const now = this.#now();
    const record = this.#write(key, now);
    const self = this.#merge(record, request.instance, request.totals, now);
    if (request.mode === 'forget') {
      this.#forget(record, request.instance, true);
      // Nobody else uses this key: its ledger goes with the instance's record.
      if (record.instances.size === 0 && record.lock === undefined) this.#records.delete(recordKey(key));
      return this.#state(record, 'reported', undefined, now, false);
    }
    if (request.mode === 'release') this.#release(record, self);
    else if (self.leaseEnd !== 0) this.#renew(record, self, now);
    return this.#state(record, 'reported', self, now, false);
  }

  beginCheck(key: StoreKey, request: CheckRequest): CheckTicket {
    const now = this.#now();
    const record = this.#write(key, now);
    const { answer, lock } = record;
    if (answer !== undefined && answer.expiresAt > now) return { status: 'fresh', answer: shared(answer, now) };
    if (lock !== undefined && lock.expiresAt > now) {
      return lock.failed === undefined
        ? { status: 'wait', waitMs: lock.expiresAt - now }
        : { status: 'failed', code: lock.failed };
    }
    const epoch = Math.max(record.checks + 1, (answer?.epoch ?? 0) + 1);
    record.checks = epoch;
    record.lock = { id: request.instance, expiresAt: now + request.lockMs, conf: record.conf, failed: undefined };
    return { status: 'check', epoch };
  }

  storeAnswer(key: StoreKey, request: AnswerRequest): AnswerReceipt {
    const now = this.#now();
    const record = this.#write(key, now);
    const { lock } = record;
    if (lock === undefined || lock.id !== request.instance || record.checks !== request.epoch)
      return { status: 'stale' };
    const { outcome } = request;
    if ('failed' in outcome) {
      lock.failed = outcome.failed;
      return { status: 'failed' };
    }
    let expiresAt = now + outcome.ttlMs;
    if (outcome.periodEnd !== null && outcome.periodEnd > now && outcome.periodEnd < expiresAt) {
      expiresAt = outcome.periodEnd;
    }
    // While the ledger is rebuilt, the answer is asked again once every instance has reported.
    if (record.rebuildUntil > now && record.rebuildUntil < expiresAt) expiresAt = record.rebuildUntil;
    const { ttlMs: _ttl, ...fields } = outcome;
    record.answer = { ...fields, epoch: request.epoch, expiresAt, conf: lock.conf };
    record.lock = undefined;
    return { status: 'stored', answer: shared(record.answer, now) };
  }

  idempotencyWindow(options: IdempotencyWindowOptions): IdempotencyWindow {
    return new MemoryIdempotencyWindow(options);
  }

  stats(): StoreStats {
    return { available: true, commands: 0, failures: 0, outages: 0 };
  }

  /**
   * The key's record, created if needed, moved to the end of the write order. Records not written
   * for retainMs go, looked for at most once a second: each look starts at the front of the Map,
   * over the holes its moves left there (3 µs a write with 5,000 keys, when it looked every time).
   */
  #write(key: StoreKey, now: number): KeyRecord {
    const id = recordKey(key);
    let record = this.#records.get(id);
    if (record === undefined) {
      record = {
        answer: undefined,
        checks: 0,
        lock: undefined,
        out: 0,
        conf: 0,
        live: 0,
        nextSweep: 0,
        rebuildUntil: 0,
        instances: new Map(),
        writtenAt: now,
      };
    } else {
      this.#records.delete(id);
    }
    record.writtenAt = now;
    this.#records.set(id, record);
    if (now >= this.#nextSweepAt) {
      this.#nextSweepAt = now + SWEEP_INTERVAL_MS;
      for (const [oldest, old] of this.#records) {
        if (old.writtenAt + this.#retainMs > now) break;
        this.#records.delete(oldest);
      }
    }
    return record;
  }

  /** Ends expired leases, then merges the instance's totals (as the scripts' LEDGER_PROLOGUE). */
  #merge(record: KeyRecord, id: string, totals: LedgerTotals, now: number): InstanceRecord {
    this.#sweep(record, now);
    let self = record.instances.get(id);
    if (self === undefined) {
      self = { granted: 0, returned: 0, spent: 0, confirmed: 0, held: 0, leaseEnd: 0, forgetAt: 0 };
      record.instances.set(id, self);
    }
    const before = owed(self);
    const confirmedBefore = self.confirmed;
    self.spent = Math.max(self.spent, totals.spent);
    self.returned = Math.max(self.returned, totals.returned);
    self.confirmed = Math.max(self.confirmed, totals.confirmed);
    self.held = totals.held;
    self.forgetAt = now + this.#retainMs;
    record.out += owed(self) - before;
    record.conf += self.confirmed - confirmedBefore;
    this.#schedule(record, self.forgetAt);
    return self;
  }

  /** The instance's lease lasts leaseMs from now. */
  #renew(record: KeyRecord, self: InstanceRecord, now: number): void {
    self.leaseEnd = now + this.#leaseMs;
    this.#schedule(record, self.leaseEnd);
  }

  #release(record: KeyRecord, self: InstanceRecord): void {
    if (self.leaseEnd === 0) return;
    self.leaseEnd = 0;
    const before = owed(self);
    self.returned = Math.max(self.returned, self.granted - self.spent);
    self.held = 0;
    record.out += owed(self) - before;
    record.live--;
  }

  #forget(record: KeyRecord, id: string, retired: boolean): void {
    const self = record.instances.get(id);
    if (self === undefined) return;
    this.#release(record, self);
    record.out -= owed(self);
    if (retired && self.spent > self.confirmed) record.conf += self.spent - self.confirmed;
    record.instances.delete(id);
  }

  #sweep(record: KeyRecord, now: number): void {
    if (record.nextSweep === 0 || record.nextSweep > now) return;
    let next = 0;
    for (const [id, self] of record.instances) {
      if (self.leaseEnd !== 0 && self.leaseEnd <= now) this.#release(record, self);
      if (self.forgetAt <= now) {
        this.#forget(record, id, false);
        continue;
      }
      for (const at of [self.leaseEnd, self.forgetAt]) if (at !== 0 && (next === 0 || at < next)) next = at;
    }
    record.nextSweep = next;
  }

  #schedule(record: KeyRecord, at: number): void {
    if (record.nextSweep === 0 || at < record.nextSweep) record.nextSweep = at;
  }

  #state(
    record: KeyRecord,
    status: LeaseState['status'],
    self: InstanceRecord | undefined,
    now: number,
    withAnswer: boolean,
  ): LeaseState {
    // As the scripts compute it: an unlimited budget is -1, no answer 0 (status says which).
    const budget = record.answer === undefined ? 0 : (record.answer.budget ?? -1);
    return {
      status,
      granted: self?.granted ?? 0,
      returned: self?.returned ?? 0,
      leaseMs: self === undefined || self.leaseEnd === 0 ? 0 : Math.max(0, self.leaseEnd - now),
      // While the ledger is rebuilt nothing is granted: nothing remains to take.
      remaining: record.rebuildUntil > now ? Math.min(0, budget - effective(record)) : budget - effective(record),
      answer: withAnswer && record.answer !== undefined ? shared(record.answer, now) : undefined,
      leases: record.live,
    };
  }
}

/** How often #write looks for records to drop. */
const SWEEP_INTERVAL_MS = 1000;

const KNOWN_OPTIONS = knownKeys<MemoryStoreOptions>({ leaseMs: true, maxBlock: true, retainMs: true, now: true });

function recordKey(key: StoreKey): string {
  return `${key.userId}\u0000${key.featureId}`;
}

function claim(self: InstanceRecord): number {
  return ledgerClaim(self.granted, self.returned, self.spent, self.held);
}

/**
 * Units a grant may add without the instance's claim less its spending (its block and its holds)
 * going past maxBlock; with nothing reserved and unspent, one request bigger than that gets its own.
 */
function blockRoom(self: InstanceRecord, maxBlock: number, need: number): number {
  const unspent = claim(self) - self.spent;
  return unspent <= 0 ? Math.max(maxBlock, need) : maxBlock - unspent;
}

function owed(self: InstanceRecord): number {
  return ledgerOwed(self.granted, self.returned, self.spent, self.held, self.confirmed);
}

function effective(record: KeyRecord): number {
  return (record.answer?.used ?? 0) + record.out + record.conf - (record.answer?.conf ?? 0);
}

function shared(answer: NonNullable<KeyRecord['answer']>, now: number): StoredAnswer {
  const { expiresAt, conf: _conf, ...fields } = answer;
  return { ...fields, ttlMs: Math.max(0, expiresAt - now) };
}
