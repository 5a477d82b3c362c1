// Usage waiting for delivery: one batch per (user, feature) key, pending or outbound, and the flush generations.

import { MAX_DELTA } from '../metering/metered-feature.js';

/** Usage for one (user, feature) key: events coalesced by adding their deltas. */
export interface Batch {
  readonly key: string;
  readonly userId: string;
  readonly featureId: string;
  /** Sum of the deltas; may pass MAX_DELTA, and is then sent in several calls. */
  delta: number;
  events: number;
  firstCapturedAt: number;
  /** The flush generation it belongs to: a flush waits for every batch of its generation or older. */
  generation: number;
}

export function usageKey(userId: string, featureId: string): string {
  return `${userId}\u0000${featureId}`;
}

/**
 * Each key has at most one pending batch (accumulating) and one outbound batch (taken for sending),
 * so memory is O(distinct keys), and Kana never sees two calls for one key at once.
 */
export class PendingUsage {
  readonly #pending = new Map<string, Batch>();
  readonly #outbound = new Map<string, Batch>();
  /** Live batches per flush generation. */
  readonly #liveByGeneration = new Map<number, number>();
  #generation = 0;
  #waiters: { generation: number; resolve: () => void }[] = [];

  /**
   * Adds usage to its key's pending batch. A key without one gets a new batch, unless `maxKeys`
   * keys are held already: then nothing is added and the result is 'full'.
   */
  add(
    userId: string,
    featureId: string,
    delta: number,
    events = 1,
    firstCapturedAt?: number,
    maxKeys = Number.POSITIVE_INFINITY,
  ): 'merged' | 'added' | 'full' {
    const key = usageKey(userId, featureId);
    const batch = this.#pending.get(key);
    if (batch) {
      batch.delta += delta;
      batch.events += events;
      if (firstCapturedAt !== undefined && firstCapturedAt < batch.firstCapturedAt) {
        batch.firstCapturedAt = firstCapturedAt;
      }
      return 'merged';
    }
    if (this.keyCount >= maxKeys && !this.#outbound.has(key)) return 'full';
    const capturedAt = firstCapturedAt ?? Date.now();
    this.#pending.set(key, this.#newBatch(key, userId, featureId, delta, events, capturedAt, this.#generation));
    return 'added';
  }

  /** Distinct keys held, pending or outbound (a key in both counts twice: an upper bound). */
  get keyCount(): number {
    return this.#pending.size + this.#outbound.size;
  }

  get pendingCount(): number {
    return this.#pending.size;
  }

  get isEmpty(): boolean {
    return this.#pending.size === 0 && this.#outbound.size === 0;
  }

  /** True when some pending key is not outbound, so a tick would send something. */
  get hasSendable(): boolean {
    for (const key of this.#pending.keys()) if (!this.#outbound.has(key)) return true;
    return false;
  }

  /** Moves pending batches whose key is not outbound to outbound, oldest first, at most `limit`. */
  takeSendable(limit = Number.POSITIVE_INFINITY): Batch[] {
    const taken: Batch[] = [];
    for (const [key, batch] of this.#pending) {
      if (taken.length >= limit) break;
      if (this.#outbound.has(key)) continue;
      this.#pending.delete(key);
      if (batch.delta > MAX_DELTA) {
        // Kana's delta is a 32-bit Int: the rest stays pending, in the same flush generation.
        const rest = batch.delta - MAX_DELTA;
        const restBatch = this.#newBatch(
          key,
          batch.userId,
          batch.featureId,
          rest,
          0,
          batch.firstCapturedAt,
          batch.generation,
        );
        this.#pending.set(key, restBatch);
        batch.delta = MAX_DELTA;
      }
      this.#outbound.set(key, batch);
      taken.push(batch);
    }
    return taken;
  }

  /** An outbound batch is done with: delivered, or failed for good. */
  retire(batch: Batch): void {
    this.#outbound.delete(batch.key);
    this.#leaveGeneration(batch.generation);
  }

  /** An outbound batch goes back to pending, merged with newer usage for its key, and queued last. */
  requeue(batch: Batch): void {
    this.#outbound.delete(batch.key);
    const newer = this.#pending.get(batch.key);
    if (newer) {
      this.#pending.delete(batch.key);
      batch.delta += newer.delta;
      batch.events += newer.events;
      this.#leaveGeneration(newer.generation);
    }
    this.#pending.set(batch.key, batch);
  }

  /** Removes and returns everything held (no flush waits for it any more). */
  drain(): Batch[] {
    const all = [...this.#outbound.values(), ...this.#pending.values()];
    this.#outbound.clear();
    this.#pending.clear();
    for (const batch of all) this.#leaveGeneration(batch.generation);
    return all;
  }

  /** Everything held, merged per key (for a spool snapshot). */
  snapshot(): Batch[] {
    const merged = new Map<string, Batch>();
    for (const batch of [...this.#outbound.values(), ...this.#pending.values()]) {
      const seen = merged.get(batch.key);
      if (seen) {
        seen.delta += batch.delta;
        seen.events += batch.events;
        seen.firstCapturedAt = Math.min(seen.firstCapturedAt, batch.firstCapturedAt);
      } else {
        merged.set(batch.key, { ...batch });
      }
    }
    return [...merged.values()];
  }

  /** Units of this key not confirmed by Kana yet. */
  undeliveredDelta(userId: string, featureId: string): number {
    const key = usageKey(userId, featureId);
    return (this.#pending.get(key)?.delta ?? 0) + (this.#outbound.get(key)?.delta ?? 0);
  }

  /** Events held, and distinct keys. */
  gauges(): { pending: number; pendingKeys: number } {
    let pending = 0;
    for (const batch of this.#pending.values()) pending += batch.events;
    let pendingKeys = this.#pending.size;
    for (const batch of this.#outbound.values()) {
      pending += batch.events;
      if (!this.#pending.has(batch.key)) pendingKeys++;
    }
    return { pending, pendingKeys };
  }

  /** Resolves once every batch held now (and usage merged into it later) is done with: delivered, failed or drained. */
  whenDone(): Promise<void> {
    const generation = this.#generation;
    if (this.#liveUpTo(generation) === 0) return Promise.resolve();
    this.#generation++;
    return new Promise((resolve) => this.#waiters.push({ generation, resolve }));
  }

  get hasWaiters(): boolean {
    return this.#waiters.length > 0;
  }

  #newBatch(
    key: string,
    userId: string,
    featureId: string,
    delta: number,
    events: number,
    firstCapturedAt: number,
    generation: number,
  ): Batch {
    this.#liveByGeneration.set(generation, (this.#liveByGeneration.get(generation) ?? 0) + 1);
    return { key, userId, featureId, delta, events, firstCapturedAt, generation };
  }

  /** One batch of `generation` is gone: flush() waiters whose generations are all gone are resolved. */
  #leaveGeneration(generation: number): void {
    const left = (this.#liveByGeneration.get(generation) ?? 1) - 1;
    if (left === 0) this.#liveByGeneration.delete(generation);
    else this.#liveByGeneration.set(generation, left);
    if (this.#waiters.length === 0) return;
    this.#waiters = this.#waiters.filter((waiter) => {
      if (this.#liveUpTo(waiter.generation) > 0) return true;
      waiter.resolve();
      return false;
    });
  }

  #liveUpTo(generation: number): number {
    let live = 0;
    for (const [batchGeneration, count] of this.#liveByGeneration) {
      if (batchGeneration <= generation) live += count;
    }
    return live;
  }
}
