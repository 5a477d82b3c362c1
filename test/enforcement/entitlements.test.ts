// EntitlementCache alone: TTL, stale-if-error, period end, shared calls, local accounting, failures and eviction, on a fake Kana and clock.

import { describe, expect, it } from 'vitest';
import { KanaError } from '../../src/config/errors.js';
import { type Answered, Entitlement, EntitlementCache, verdict } from '../../src/enforcement/entitlements.js';
import type { EntitlementAnswer, EntitlementQuery } from '../../src/kana/client.js';

/** Kana as the cache sees it: each ask waits until the test calls `answer()` or `fail()`. */
class FakeKana {
  readonly queries: EntitlementQuery[] = [];
  readonly #waiting: { resolve: (answer: EntitlementAnswer) => void; reject: (error: unknown) => void }[] = [];

  /** An answer of this instance's own (epoch 0), fresh for the cache's TTL. */
  ask = (query: EntitlementQuery): Promise<Answered> => {
    this.queries.push(query);
    return new Promise<EntitlementAnswer>((resolve, reject) => this.#waiting.push({ resolve, reject })).then(
      (answer) => ({ answer, epoch: 0, ttlMs: undefined }),
    );
  };

  answer(answer: Partial<EntitlementAnswer> = {}): void {
    this.#waiting.shift()?.resolve({ access: true, reason: '', consumption: null, period: null, ...answer });
  }

  fail(error: unknown): void {
    this.#waiting.shift()?.reject(error);
  }
}

function setup(overrides: { ttl?: number; staleIfError?: number; maxEntries?: number; undelivered?: number } = {}) {
  const kana = new FakeKana();
  const clock = { now: 1_000_000 };
  const cache = new EntitlementCache({
    ask: kana.ask,
    ttl: overrides.ttl ?? 30_000,
    staleIfError: overrides.staleIfError ?? 300_000,
    maxEntries: overrides.maxEntries ?? 100,
    undelivered: () => overrides.undelivered ?? 0,
    now: () => clock.now,
  });
  return { kana, clock, cache };
}

const consumption = (used: number, budget: number | null, overageEnabled = false) => ({
  consumption: { used, budget, overageEnabled },
});

describe('EntitlementCache', () => {
  it('reuses an answer for the TTL, then asks again', async () => {
    const { kana, clock, cache } = setup({ ttl: 1000 });
    const loading = cache.load('u1', 'api-calls', 2);
    expect(kana.queries).toEqual([{ userId: 'u1', featureId: 'api-calls', delta: 2 }]);
    expect(cache.fresh('u1', 'api-calls')).toBeUndefined(); // not answered yet
    kana.answer(consumption(1, 5));
    const entry = await loading;
    expect(cache.fresh('u1', 'api-calls')).toBe(entry);
    clock.now += 999;
    expect(cache.fresh('u1', 'api-calls')).toBe(entry);
    clock.now += 1;
    expect(cache.fresh('u1', 'api-calls')).toBeUndefined();
    expect(cache.fresh('u2', 'api-calls')).toBeUndefined();
  });

  it('does not reuse an answer past the end of its usage period', async () => {
    const { kana, clock, cache } = setup({ ttl: 30_000 });
    const loading = cache.load('u1', 'api-calls', 1);
    kana.answer({
      ...consumption(5, 5),
      period: { start: new Date(clock.now - 86_390_000), end: new Date(clock.now + 10_000) },
    });
    const entry = await loading;
    expect(entry.resetAt?.getTime()).toBe(clock.now + 10_000);
    expect(entry.periodSeconds).toBe(86_400);
    clock.now += 10_000;
    expect(cache.fresh('u1', 'api-calls')).toBeUndefined();
  });

  it('shares one Kana call between concurrent misses for a key', async () => {
    const { kana, cache } = setup();
    const loads = [cache.load('u1', 'f', 1), cache.load('u1', 'f', 1), cache.load('u1', 'f', 3)];
    const other = cache.load('u2', 'f', 1);
    expect(kana.queries).toHaveLength(2);
    kana.answer();
    kana.answer();
    const [a, b, c] = await Promise.all(loads);
    expect(a).toBe(b);
    expect(b).toBe(c);
    expect(await other).not.toBe(a);
  });

  it('counts usage waiting for delivery when asked, and usage captured since, on top of Kana used', async () => {
    const { kana, cache } = setup({ undelivered: 2 });
    const loading = cache.load('u1', 'f', 1);
    cache.countUsage('u1', 'f', 1); // captured while Kana is being asked
    kana.answer(consumption(1, 10));
    const entry = await loading;
    expect(entry.local).toBe(3);
    cache.countUsage('u1', 'f', 4);
    cache.countUsage('u2', 'f', 100); // no entry: ignored
    expect(entry.local).toBe(7);
    entry.ledger.hold(1);
    expect(entry.effectiveUsed()).toBe(9);
    expect(verdict(entry, 1)).toBe('allowed');
    expect(verdict(entry, 2)).toBe('limit-reached');
  });

  it('starts local accounting again from what Kana has not confirmed when an answer is refreshed', async () => {
    const { kana, clock, cache } = setup({ ttl: 10 });
    const first = cache.load('u1', 'f', 1);
    kana.answer(consumption(0, 10));
    const entry = await first;
    cache.countUsage('u1', 'f', 4);
    entry.ledger.hold(2);
    clock.now += 10;
    const second = cache.load('u1', 'f', 1);
    kana.answer(consumption(4, 10)); // Kana has the 4 units now; nothing is waiting (undelivered 0)
    expect(await second).toBe(entry);
    expect(entry).toMatchObject({ used: 4, local: 0, held: 2 }); // holds outlive a refresh
  });

  it('rejects every waiter of a failed call, and forgets an entry never answered', async () => {
    const { kana, cache } = setup();
    const loads = [cache.load('u1', 'f', 1), cache.load('u1', 'f', 1)];
    const error = new KanaError('KANA_UNREACHABLE', 'down', { retryable: true });
    kana.fail(error);
    for (const load of loads) await expect(load).rejects.toBe(error);
    expect(kana.queries).toHaveLength(1);
    expect(cache.size).toBe(0);
    expect(cache.stale('u1', 'f')).toBeUndefined();
  });

  it('keeps an answer usable when Kana fails for staleIfError past its TTL, local usage included', async () => {
    const { kana, clock, cache } = setup({ ttl: 1000, staleIfError: 5000 });
    const first = cache.load('u1', 'f', 1);
    kana.answer(consumption(3, 5));
    const entry = await first;
    clock.now += 1000;
    expect(cache.fresh('u1', 'f')).toBeUndefined();
    const refresh = cache.load('u1', 'f', 1);
    cache.countUsage('u1', 'f', 1); // captured while the refresh is failing
    kana.fail(new KanaError('KANA_TIMEOUT', 'slow', { retryable: true }));
    await expect(refresh).rejects.toThrow('slow');
    expect(cache.stale('u1', 'f')).toBe(entry);
    expect(entry.effectiveUsed()).toBe(4);
    clock.now += 4999;
    expect(cache.stale('u1', 'f')).toBe(entry);
    clock.now += 1;
    expect(cache.stale('u1', 'f')).toBeUndefined();
  });

  it('does not keep a stale answer past the end of its usage period', async () => {
    const { kana, clock, cache } = setup({ ttl: 1000, staleIfError: 300_000 });
    const loading = cache.load('u1', 'f', 1);
    kana.answer({
      ...consumption(5, 5),
      period: { start: new Date(clock.now - 86_000_000), end: new Date(clock.now + 60_000) },
    });
    await loading;
    clock.now += 59_999;
    expect(cache.stale('u1', 'f')).toBeDefined();
    clock.now += 1;
    expect(cache.stale('u1', 'f')).toBeUndefined(); // the allowance it described is gone
  });

  it('keeps at most maxEntries, evicting the least recently fetched idle entry', async () => {
    const { kana, cache } = setup({ maxEntries: 2 });
    const answered = async (userId: string): Promise<Entitlement> => {
      const loading = cache.load(userId, 'f', 1);
      kana.answer(consumption(0, 5));
      return loading;
    };
    const u1 = await answered('u1');
    u1.ledger.hold(1); // busy: skipped by eviction
    await answered('u2');
    await answered('u3');
    expect(cache.size).toBe(2);
    expect(cache.fresh('u1', 'f')).toBe(u1);
    expect(cache.fresh('u2', 'f')).toBeUndefined();
    expect(cache.fresh('u3', 'f')).toBeDefined();
  });
});

describe('verdict', () => {
  it.each([
    ['BINARY with access', { consumable: false, access: true }, 1, 'allowed'],
    ['not in plan', { consumable: false, access: false }, 1, 'not-in-plan'],
    ['unlimited', { consumable: true, used: 10 ** 9, budget: null }, 5, 'allowed'],
    ['overage', { consumable: true, used: 10, budget: 5, overageEnabled: true }, 1, 'allowed'],
    ['exactly the budget', { consumable: true, used: 3, budget: 5 }, 2, 'allowed'],
    ['one past it', { consumable: true, used: 3, budget: 5 }, 3, 'limit-reached'],
    ['local and held units count', { consumable: true, used: 1, local: 2, held: 2, budget: 5 }, 1, 'limit-reached'],
  ] as const)('%s', (_label, fields, delta, expected) => {
    // Held units are the ledger's: changed through its methods only.
    const { held = 0, ...answer } = fields as typeof fields & { held?: number };
    const entry = Object.assign(new Entitlement('key', 'u1', 'f'), answer);
    entry.ledger.hold(held);
    expect(verdict(entry, delta)).toBe(expected);
  });
});
