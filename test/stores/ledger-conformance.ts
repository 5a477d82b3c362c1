// What a store must do (the KanaMeterStore contract), as tests any store runs: several simulated instances share
// allowances and never overshoot them; leases, holds, fences, confirmations and the edge cases of Kana's answers.

import { beforeEach, describe, expect, it } from 'vitest';
import type {
  AnswerReceipt,
  KanaMeterStore,
  LeaseState,
  LedgerTotals,
  StoredAnswer,
  StoreKey,
} from '../../src/stores/store.js';

/** A store under test, and how to let its clock move. */
export interface LedgerHarness {
  readonly store: KanaMeterStore;
  /** Resolves once the store's clock has moved `ms` past now. */
  advance(ms: number): Promise<void>;
}

export interface HarnessOptions {
  leaseMs: number;
  retainMs: number;
  maxBlock: number;
}

type Answer = Omit<StoredAnswer, 'epoch' | 'ttlMs'> & { ttlMs?: number };

const limited = (used: number, budget: number): Answer => ({
  access: true,
  consumable: true,
  used,
  budget,
  overageEnabled: false,
  periodStart: null,
  periodEnd: null,
});

let keys = 0;

/** One kanaMeter process as the store sees it: running totals, and units it may spend without asking. */
class Instance {
  spent = 0;
  returned = 0;
  confirmed = 0;
  held = 0;
  granted = 0;
  epoch = 0;
  readonly grants: number[] = [];

  constructor(
    readonly id: string,
    readonly store: KanaMeterStore,
    readonly key: StoreKey,
  ) {}

  get totals(): LedgerTotals {
    return { spent: this.spent, returned: this.returned, confirmed: this.confirmed, held: this.held };
  }

  get available(): number {
    return this.granted - this.returned - this.spent - this.held;
  }

  adopt(state: LeaseState): LeaseState {
    const before = this.granted - this.returned;
    this.granted = Math.max(this.granted, state.granted);
    this.returned = Math.max(this.returned, state.returned);
    if (state.status === 'granted') this.grants.push(this.granted - this.returned - before);
    if (state.answer) this.epoch = state.answer.epoch;
    return state;
  }

  /** Epoch 0 at first: the store answers with its answer, newer than that, and the instance adopts it. */
  async reserve(want: number, need = want): Promise<LeaseState> {
    return this.adopt(
      await this.store.reserve(this.key, { instance: this.id, totals: this.totals, epoch: this.epoch, want, need }),
    );
  }

  /** Decides one request of `delta` units: from its block when it has them, else one reservation. */
  async request(delta = 1): Promise<boolean> {
    if (this.available < delta) {
      const state = await this.reserve(delta);
      if (state.status === 'allow') {
        this.spent += delta;
        return true;
      }
      if (this.available < delta) return false;
    }
    this.spent += delta;
    return true;
  }

  async report(mode: 'keep' | 'release' | 'forget' = 'keep'): Promise<LeaseState> {
    if (mode === 'release') this.returned = Math.max(this.returned, this.granted - this.spent - this.held);
    return this.adopt(await this.store.report(this.key, { instance: this.id, totals: this.totals, mode }));
  }
}

export function describeLedger(name: string, setup: (options: HarnessOptions) => Promise<LedgerHarness>): void {
  describe(`the ledger of ${name}`, () => {
    const defaults: HarnessOptions = { leaseMs: 10_000, retainMs: 60_000, maxBlock: 64 };
    let harness: LedgerHarness;
    let store: KanaMeterStore;
    let key: StoreKey;

    const fleet = (ids: string[], target = key) => ids.map((id) => new Instance(id, store, target));

    /**
     * One check of `target` (after the answer before it has expired) and its answer, fresh for `ttlMs`:
     * 1 ms unless a test needs it fresh (reservations do not depend on freshness; instances do).
     */
    async function answer(value: Answer, target = key, ttlMs = 1): Promise<AnswerReceipt> {
      let ticket = await store.beginCheck(target, { instance: 'checker', lockMs: 5000 });
      if (ticket.status === 'fresh') {
        await harness.advance(ticket.answer.ttlMs);
        ticket = await store.beginCheck(target, { instance: 'checker', lockMs: 5000 });
      }
      expect(ticket.status).toBe('check');
      const epoch = (ticket as { epoch: number }).epoch;
      return store.storeAnswer(target, { instance: 'checker', epoch, outcome: { ttlMs, ...value } });
    }

    async function use(options: Partial<HarnessOptions> = {}) {
      harness = await setup({ ...defaults, ...options });
      store = harness.store;
      key = { userId: `user:${++keys}`, featureId: 'api-calls' };
    }

    beforeEach(() => use());

    it('3 instances in turn never pass more than the allowance, and the blocks shrink to 1 unit at the end', async () => {
      await answer(limited(0, 30));
      const instances = fleet(['a', 'b', 'c']);
      let passed = 0;
      for (let i = 0; i < 90; i++) if (await (instances[i % 3] as Instance).request()) passed++;
      expect(passed).toBe(30);
      expect(instances.reduce((sum, one) => sum + one.spent, 0)).toBe(30);
      const grants = instances.flatMap((one) => one.grants);
      expect(grants.at(-1)).toBe(1);
      expect(Math.max(...grants)).toBeGreaterThan(1);
    });

    it('3 instances in a burst of 60 for a budget of 20: exactly 20 pass', async () => {
      await answer(limited(0, 20));
      const instances = fleet(['a', 'b', 'c']);
      const results = await Promise.all(Array.from({ length: 60 }, (_, i) => (instances[i % 3] as Instance).request()));
      expect(results.filter(Boolean)).toHaveLength(20);
      expect((await (instances[0] as Instance).report()).remaining).toBe(0);
    });

    it('many users and features at once stay within their own allowances', async () => {
      const targets = Array.from({ length: 8 }, (_, i) => ({ userId: `many:${++keys}`, featureId: `f${i % 2}` }));
      await Promise.all(targets.map((target, i) => answer(limited(i, 10), target)));
      const passed = await Promise.all(
        targets.map(async (target) => {
          const instances = fleet(['a', 'b', 'c'], target);
          const results = await Promise.all(
            Array.from({ length: 30 }, (_, i) => (instances[i % 3] as Instance).request()),
          );
          return results.filter(Boolean).length;
        }),
      );
      expect(passed).toEqual(targets.map((_, i) => 10 - i));
    });

    it('each reply says how many instances hold a lease on the key (their share while the store is down)', async () => {
      await answer(limited(0, 100));
      const [a, b, c] = fleet(['a', 'b', 'c']) as [Instance, Instance, Instance];
      expect((await a.reserve(1)).leases).toBe(1);
      expect((await b.reserve(1)).leases).toBe(2);
      expect((await c.report()).leases).toBe(2); // c reports, holds no lease
      expect((await a.report('release')).leases).toBe(1);
      expect((await b.report('keep')).leases).toBe(1);
    });

    it('units an instance reserved and did not spend come back when it releases its lease', async () => {
      await answer(limited(0, 20));
      const [a, b] = fleet(['a', 'b']) as [Instance, Instance];
      expect(await a.request()).toBe(true);
      const unspent = a.available;
      expect(unspent).toBeGreaterThan(0);
      let passedB = 0;
      while (await b.request()) passedB++;
      expect(passedB).toBe(20 - 1 - unspent); // refused early: a still holds its block
      expect((await a.report('release')).leaseMs).toBe(0);
      while (await b.request()) passedB++;
      expect(passedB).toBe(19);
    });

    it('units held by requests in flight count as used, also past the grant, and are not given back while leased', async () => {
      await answer(limited(0, 10));
      const [a, b] = fleet(['a', 'b']) as [Instance, Instance];
      await a.reserve(4);
      a.held = 4; // four requests in flight
      a.spent = 3; // and three units recorded after the responses (a delta computed late)
      await a.report();
      let passedB = 0;
      while (await b.request()) passedB++;
      expect(passedB).toBe(10 - 7);
      a.held = 0; // they failed: nothing billed
      await a.report('release');
      while (await b.request()) passedB++;
      expect(passedB).toBe(10 - 3);
    });

    it('a grant covers spending past the previous one first: the units it adds are all usable', async () => {
      await answer(limited(0, 100));
      const a = new Instance('a', store, key);
      await a.reserve(2);
      a.spent = a.granted + 5; // 5 units spent past the block (record(), a late delta)
      const state = await a.reserve(3, 3);
      expect(state.status).toBe('granted');
      expect(a.available).toBeGreaterThanOrEqual(3);
      expect(state.remaining).toBe(100 - (a.granted - a.returned));
    });

    it("a dead instance's reserved and held units come back when its lease expires; what it spent stays counted", async () => {
      await use({ leaseMs: 300 });
      await answer(limited(0, 10));
      const [dead, alive] = fleet(['dead', 'alive']) as [Instance, Instance];
      const grant = await dead.reserve(5);
      expect(dead.available).toBe(5);
      dead.spent = 2;
      dead.held = 1;
      await dead.report(); // it reported 2 spent and 1 in flight, then was SIGKILLed holding 3 units
      let passed = 0;
      while (await alive.request()) passed++;
      expect(passed).toBe(5);
      await harness.advance(grant.leaseMs + 1);
      while (await alive.request()) passed++;
      expect(passed).toBe(8);
    });

    it('late or repeated reports change nothing; a late reserve only parks units until they are given back', async () => {
      await answer(limited(0, 100));
      const a = new Instance('a', store, key);
      for (let i = 0; i < 10; i++) await a.request();
      a.confirmed = 4;
      const now = await a.report();
      const same = { granted: now.granted, returned: now.returned, remaining: now.remaining };
      expect(await store.report(key, { instance: 'a', totals: a.totals, mode: 'keep' })).toMatchObject(same);
      const older = { spent: 3, returned: 0, confirmed: 1, held: 0 };
      expect(await store.report(key, { instance: 'a', totals: older, mode: 'keep' })).toMatchObject(same);
      // A reserve that timed out and landed anyway: more units granted, counted, and given back with the rest.
      const late = await store.reserve(key, { instance: 'a', totals: older, epoch: a.epoch, want: 1, need: 1 });
      expect(late.granted).toBeGreaterThan(now.granted);
      expect(late.remaining).toBeLessThan(now.remaining);
      a.adopt(late);
      expect((await a.report('release')).remaining).toBe(100 - 10);
    });

    describe('usage Kana confirmed is counted once', () => {
      it('confirmed before the check began: in the answer only', async () => {
        await answer(limited(0, 100));
        const a = new Instance('a', store, key);
        for (let i = 0; i < 10; i++) await a.request();
        a.confirmed = 10;
        expect((await a.report('release')).remaining).toBe(90);
        expect((await answer(limited(10, 100))).status).toBe('stored');
        expect((await a.report()).remaining).toBe(90);
      });

      it('unconfirmed when the check began, confirmed after the answer: in the shared count only', async () => {
        await answer(limited(0, 100));
        const a = new Instance('a', store, key);
        for (let i = 0; i < 10; i++) await a.request();
        await a.report('release');
        await answer(limited(0, 100));
        expect((await a.report()).remaining).toBe(90);
        a.confirmed = 10;
        expect((await a.report()).remaining).toBe(90);
        await answer(limited(10, 100));
        expect((await a.report()).remaining).toBe(90);
      });

      it('confirmed while the check was in flight: counted twice until the next answer (refused early, never over)', async () => {
        await answer(limited(0, 100));
        const a = new Instance('a', store, key);
        for (let i = 0; i < 10; i++) await a.request();
        await a.report('release');
        await harness.advance(1);
        const ticket = await store.beginCheck(key, { instance: 'checker', lockMs: 5000 });
        expect(ticket.status).toBe('check');
        a.confirmed = 10;
        await a.report();
        // Kana may or may not have counted them in this answer: the ledger cannot tell, so they count twice.
        const epoch = (ticket as { epoch: number }).epoch;
        await store.storeAnswer(key, { instance: 'checker', epoch, outcome: { ...limited(10, 100), ttlMs: 1 } });
        expect((await a.report()).remaining).toBe(80);
        await answer(limited(10, 100));
        expect((await a.report()).remaining).toBe(90);
      });

      it('an instance that retires a key counts its unconfirmed usage as confirmed until the next answer', async () => {
        await answer(limited(0, 100));
        const [a, b] = fleet(['a', 'b']) as [Instance, Instance];
        for (let i = 0; i < 10; i++) await a.request();
        expect((await b.report()).remaining).toBeLessThan(90); // a's block counts
        a.confirmed = 4;
        await a.report('forget');
        expect((await b.report()).remaining).toBe(90);
        await answer(limited(4, 100)); // Kana has the 4; the 6 others were never delivered by a
        expect((await b.report()).remaining).toBe(96);
      });
    });

    it('forgets an instance silent for retainMs: its unconfirmed usage stops counting', async () => {
      await use({ leaseMs: 200, retainMs: 400 });
      await answer(limited(0, 50));
      const [gone, alive] = fleet(['gone', 'alive']) as [Instance, Instance];
      for (let i = 0; i < 5; i++) await gone.request();
      await gone.report('release');
      expect((await alive.report()).remaining).toBe(45);
      await harness.advance(250);
      expect((await alive.report()).remaining).toBe(45); // not yet
      await harness.advance(200);
      expect((await alive.report()).remaining).toBe(50);
    });

    it('one Kana check for the fleet: others wait, then share the answer; a check whose lock was taken over is dropped', async () => {
      await use({ leaseMs: 10_000 });
      const first = await store.beginCheck(key, { instance: 'a', lockMs: 300 });
      expect(first.status).toBe('check');
      const waiting = await store.beginCheck(key, { instance: 'b', lockMs: 300 });
      expect(waiting).toMatchObject({ status: 'wait' });
      expect((waiting as { waitMs: number }).waitMs).toBeGreaterThan(0);
      await harness.advance(301); // a hung or died: b takes over
      const second = await store.beginCheck(key, { instance: 'b', lockMs: 300 });
      const [firstEpoch, secondEpoch] = [(first as { epoch: number }).epoch, (second as { epoch: number }).epoch];
      expect(second.status).toBe('check');
      expect(secondEpoch).toBeGreaterThan(firstEpoch);
      const late = { ...limited(0, 5), ttlMs: 60_000 };
      expect((await store.storeAnswer(key, { instance: 'a', epoch: firstEpoch, outcome: late })).status).toBe('stale');
      const stored = await store.storeAnswer(key, {
        instance: 'b',
        epoch: secondEpoch,
        outcome: { ...limited(1, 5), ttlMs: 60_000 },
      });
      expect(stored).toMatchObject({ status: 'stored', answer: { epoch: secondEpoch, used: 1, budget: 5 } });
      const fresh = await store.beginCheck(key, { instance: 'c', lockMs: 300 });
      expect(fresh).toMatchObject({ status: 'fresh', answer: { epoch: secondEpoch, used: 1 } });
      expect((fresh as { answer: StoredAnswer }).answer.ttlMs).toBeGreaterThan(50_000);
    });

    it('a failed check tells the others so until its lock ends (nobody asks Kana meanwhile), then one may check again', async () => {
      const first = await store.beginCheck(key, { instance: 'a', lockMs: 300 });
      const epoch = (first as { epoch: number }).epoch;
      expect(await store.storeAnswer(key, { instance: 'a', epoch, outcome: { failed: 'KANA_TIMEOUT' } })).toEqual({
        status: 'failed',
      });
      expect(await store.beginCheck(key, { instance: 'b', lockMs: 300 })).toEqual({
        status: 'failed',
        code: 'KANA_TIMEOUT',
      });
      await harness.advance(301);
      expect((await store.beginCheck(key, { instance: 'b', lockMs: 300 })).status).toBe('check');
    });

    it('reserve tells an instance of a newer answer, and asks for a check when the store has none as recent', async () => {
      expect((await store.reserve(key, { instance: 'a', totals: zero, epoch: 0, want: 1, need: 1 })).status).toBe(
        'check',
      );
      const first = await answer(limited(0, 10));
      const epoch = (first as { answer: StoredAnswer }).answer.epoch;
      const known = await store.reserve(key, { instance: 'a', totals: zero, epoch, want: 1, need: 1 });
      expect(known).toMatchObject({ status: 'granted', answer: undefined });
      const stale = await store.reserve(key, { instance: 'b', totals: zero, epoch: epoch - 1, want: 1, need: 1 });
      expect(stale.answer).toMatchObject({ epoch, used: 0, budget: 10 });
      const ahead = await store.reserve(key, { instance: 'c', totals: zero, epoch: epoch + 1, want: 1, need: 1 });
      expect(ahead.status).toBe('check');
    });

    it('maxBlock caps what one instance has reserved and not spent, holds included; one bigger request has its own units', async () => {
      await use({ maxBlock: 8 });
      await answer(limited(0, 1000));
      const a = new Instance('a', store, key);
      // A burst of 100 waiting requests asks for 100: it gets 8.
      expect((await a.reserve(100, 1)).status).toBe('granted');
      expect(a.available).toBe(8);
      a.held = 8; // all in flight
      const capped = await a.reserve(1, 1);
      expect(capped.status).toBe('limit');
      expect(capped.remaining).toBeGreaterThanOrEqual(1); // not the allowance: this instance's cap
      a.held = 0;
      a.spent = 8; // they ended: spent, so units may be reserved again
      expect((await a.reserve(100, 1)).status).toBe('granted');
      expect(a.available).toBe(8);
      // With nothing reserved and unspent, one request of 20 gets its 20, and no more.
      const b = new Instance('b', store, key);
      expect((await b.reserve(20, 20)).status).toBe('granted');
      expect(b.available).toBe(20);
      expect((await b.reserve(1, 1)).status).toBe('limit');
    });

    it('a lost ledger (an instance was granted units under a newer answer) grants nothing until the instances have reported', async () => {
      await use({ leaseMs: 300 });
      await answer(limited(0, 10), key, 60_000);
      const a = new Instance('a', store, key);
      a.spent = 3; // it still has 3 units Kana has not confirmed, from before the loss
      const lost = await store.reserve(key, {
        instance: 'a',
        totals: a.totals,
        epoch: 1,
        want: 1,
        need: 1,
        lastEpoch: 7,
      });
      expect(lost).toMatchObject({ status: 'limit', remaining: 0 });
      const b = new Instance('b', store, key);
      expect(await b.request()).toBe(false);
      // The answer taken meanwhile is asked again once the rebuild ends; new checks get newer epochs.
      const ticket = await store.beginCheck(key, { instance: 'b', lockMs: 5000 });
      expect(ticket.status).toBe('fresh');
      expect((ticket as { answer: StoredAnswer }).answer.ttlMs).toBeLessThanOrEqual(2000);
      await harness.advance(2000);
      let passed = 0;
      while (await b.request()) passed++;
      expect(passed).toBe(10 - 3);
      const next = await store.beginCheck(key, { instance: 'b', lockMs: 5000 });
      expect(next).toMatchObject({ status: 'check' });
      expect((next as { epoch: number }).epoch).toBeGreaterThan(7);
    });

    describe('edge cases', () => {
      it('allowance reached exactly: the last unit is granted, then refused', async () => {
        await answer(limited(29, 30));
        const a = new Instance('a', store, key);
        expect(await a.request()).toBe(true);
        expect(a.grants).toEqual([1]);
        expect(await a.request()).toBe(false);
        const full = { userId: `full:${++keys}`, featureId: 'api-calls' };
        await answer(limited(30, 30), full);
        expect((await new Instance('a', store, full).reserve(1)).status).toBe('limit');
      });

      it('a request wanting more units than remain is refused, one that fits is not', async () => {
        await answer(limited(0, 5));
        const a = new Instance('a', store, key);
        expect((await a.reserve(6)).status).toBe('limit');
        expect(await a.reserve(5)).toMatchObject({ status: 'granted', granted: 5, remaining: 0 });
      });

      it('unlimited, overage on, BINARY with access, not in the plan: no units reserved', async () => {
        const cases: [Answer, string][] = [
          [{ ...limited(500, 0), budget: null }, 'allow'],
          [{ ...limited(500, 10), overageEnabled: true }, 'allow'],
          [{ ...limited(0, 0), consumable: false }, 'allow'],
          [{ ...limited(0, 0), consumable: false, access: false }, 'not-in-plan'],
        ];
        for (const [value, status] of cases) {
          const target = { userId: `edge:${++keys}`, featureId: 'api-calls' };
          await answer(value, target);
          expect(await new Instance('a', store, target).reserve(1)).toMatchObject({ status, granted: 0, leaseMs: 0 });
        }
      });

      it('period reset: the answer ends with the period, units still unconfirmed carry over to the next one', async () => {
        const first = await store.beginCheck(key, { instance: 'checker', lockMs: 5000 });
        const stored = await store.storeAnswer(key, {
          instance: 'checker',
          epoch: (first as { epoch: number }).epoch,
          outcome: {
            ...limited(95, 100),
            periodStart: Date.now() - 86_000_000,
            periodEnd: Date.now() + 400,
            ttlMs: 60_000,
          },
        });
        const ttlMs = (stored as { answer: StoredAnswer }).answer.ttlMs;
        expect(ttlMs).toBeLessThan(1000); // the period end, not the 60 s TTL
        const a = new Instance('a', store, key);
        for (let i = 0; i < 5; i++) expect(await a.request()).toBe(true);
        expect(await a.request()).toBe(false);
        await harness.advance(ttlMs + 1);
        const check = await store.beginCheck(key, { instance: 'checker', lockMs: 5000 });
        expect(check.status).toBe('check');
        // New period: Kana has not seen the 5 units yet (they will land in it), so they still count.
        const next = await store.storeAnswer(key, {
          instance: 'checker',
          epoch: (check as { epoch: number }).epoch,
          outcome: { ...limited(0, 100), ttlMs: 60_000 },
        });
        expect(next.status).toBe('stored');
        expect((await new Instance('b', store, key).reserve(1, 1)).remaining).toBeLessThanOrEqual(95 - 1);
      });
    });
  });
}

const zero: LedgerTotals = { spent: 0, returned: 0, confirmed: 0, held: 0 };
