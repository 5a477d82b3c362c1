// The delivery queue: coalesces usage per (user, feature), sends it with bounded concurrency and p-retry, flushes and closes.

import pRetry from 'p-retry';
import type { KanaClient } from './client.js';
import { KanaError, logCodes } from './errors.js';
import type { KanaLogger } from './logger.js';
import { MAX_DELTA } from './metered-feature.js';
import type { KanaMeterConfig, UndeliveredUsage } from './options.js';
import type { Counter } from './stats.js';
import { raceTimeout, sleep } from './timers.js';

/** Usage for one (user, feature) key: events coalesced by adding their deltas. */
interface Batch {
  readonly key: string;
  readonly userId: string;
  readonly featureId: string;
  /** Sum of the deltas; may pass MAX_DELTA, and is then sent in several calls. */
  delta: number;
  events: number;
  firstCapturedAt: number;
  /** The flush generation it belongs to: flush() waits for every batch of its generation or older. */
  generation: number;
}

interface FlushWaiter {
  generation: number;
  resolve: () => void;
}

export const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;

export interface CloseOptions {
  /**
   * How long close() may take, in milliseconds. At the deadline, calls and retry waits are
   * aborted and what is left is reported undelivered.
   * @default 10000
   */
  timeoutMs?: number;
}

type DeliveryConfig = Pick<
  KanaMeterConfig,
  'client' | 'retry' | 'flushInterval' | 'concurrency' | 'onDeliveryFailure' | 'logger'
>;

export class DeliveryQueue {
  readonly #client: KanaClient;
  readonly #config: DeliveryConfig;
  readonly #logger: KanaLogger;
  readonly #counters: Record<Counter, number>;
  /** Usage accumulating until the next tick. */
  readonly #pending = new Map<string, Batch>();
  /** Usage taken by a tick: waiting for a free slot, or in flight. At most one per key. */
  readonly #outbound = new Map<string, Batch>();
  /** Outbound batches waiting for a slot, oldest first (#readyHead is the next to send). */
  #ready: Batch[] = [];
  #readyHead = 0;
  readonly #calls = new Set<Promise<void>>();
  /** Live batches per flush generation. */
  readonly #liveByGeneration = new Map<number, number>();
  #generation = 0;
  #flushWaiters: FlushWaiter[] = [];
  #timer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  /** Aborts calls and retry waits when close() reaches its deadline. */
  readonly #shutdown = new AbortController();

  constructor(config: DeliveryConfig, counters: Record<Counter, number>) {
    this.#client = config.client;
    this.#config = config;
    this.#logger = config.logger;
    this.#counters = counters;
  }

  /** Queues one event. After close(), the event is reported undelivered instead. */
  enqueue(userId: string, featureId: string, delta: number): void {
    if (this.#closing) {
      this.rejectClosed(userId, featureId, delta);
      return;
    }
    this.#counters.captured++;
    const key = usageKey(userId, featureId);
    const batch = this.#pending.get(key);
    if (batch) {
      batch.delta += delta;
      batch.events++;
      return;
    }
    this.#pending.set(key, this.#newBatch(key, userId, featureId, delta, 1, Date.now()));
    this.#schedule();
  }

  /** Reports an event captured after close() began: it cannot be sent any more. */
  rejectClosed(userId: string, featureId: string, delta: number): void {
    this.#counters.captured++;
    const usage = { userId, featureId, delta, events: 1, firstCapturedAt: new Date() };
    const error = new KanaError('KANA_CLOSED', 'usage was captured after close()', { retryable: false });
    this.#logger.error(
      { code: logCodes.capturedAfterClose, userId, featureId, delta },
      'kana-meter: usage captured after close() was not sent',
    );
    this.#reportFailure(usage, 1, error);
  }

  /** Resolves when every event captured before this call is delivered or reported undelivered. */
  flush(): Promise<void> {
    if (this.#liveBatches(this.#generation) === 0) return Promise.resolve();
    const waiter = { generation: this.#generation } as FlushWaiter;
    this.#generation++;
    const settled = new Promise<void>((resolve) => {
      waiter.resolve = resolve;
    });
    this.#flushWaiters.push(waiter);
    this.#tick();
    return settled;
  }

  /** Stops intake, flushes until the deadline, then aborts and reports what is left. Idempotent. */
  close(options: CloseOptions = {}): Promise<void> {
    this.#closing ??= this.#closeWithin(options.timeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS);
    return this.#closing;
  }

  /** Units captured for this (user, feature) that Kana has not confirmed yet: waiting or in flight. */
  undeliveredDelta(userId: string, featureId: string): number {
    const key = usageKey(userId, featureId);
    return (this.#pending.get(key)?.delta ?? 0) + (this.#outbound.get(key)?.delta ?? 0);
  }

  /** Gauges for stats(). */
  gauges(): { pending: number; pendingKeys: number; inFlight: number } {
    let pending = 0;
    for (const batch of this.#pending.values()) pending += batch.events;
    for (const batch of this.#outbound.values()) pending += batch.events;
    const keys = new Set([...this.#pending.keys(), ...this.#outbound.keys()]);
    return { pending, pendingKeys: keys.size, inFlight: this.#calls.size };
  }

  async #closeWithin(timeoutMs: number): Promise<void> {
    await raceTimeout(this.flush(), timeoutMs);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#shutdown.abort(new KanaError('KANA_ABORTED', 'close() reached its deadline', { retryable: false }));
    await Promise.allSettled([...this.#calls]);
    this.#reportUndeliveredAtClose(timeoutMs);
  }

  #newBatch(
    key: string,
    userId: string,
    featureId: string,
    delta: number,
    events: number,
    firstCapturedAt: number,
    generation = this.#generation,
  ): Batch {
    this.#liveByGeneration.set(generation, (this.#liveByGeneration.get(generation) ?? 0) + 1);
    return { key, userId, featureId, delta, events, firstCapturedAt, generation };
  }

  #settle(batch: Batch): void {
    const left = (this.#liveByGeneration.get(batch.generation) ?? 1) - 1;
    if (left === 0) this.#liveByGeneration.delete(batch.generation);
    else this.#liveByGeneration.set(batch.generation, left);
    if (this.#flushWaiters.length > 0) {
      this.#flushWaiters = this.#flushWaiters.filter((waiter) => {
        if (this.#liveBatches(waiter.generation) > 0) return true;
        waiter.resolve();
        return false;
      });
    }
  }

  /** Live batches of this generation or older. */
  #liveBatches(generation: number): number {
    let live = 0;
    for (const [batchGeneration, count] of this.#liveByGeneration) {
      if (batchGeneration <= generation) live += count;
    }
    return live;
  }

  #schedule(): void {
    if (this.#timer || this.#pending.size === 0) return;
    if (this.#flushWaiters.length === 0) {
      this.#timer = setTimeout(() => this.#tick(), this.#config.flushInterval);
    } else if (this.#hasSendablePending()) {
      // flush() is waiting: send now. Keys still in flight are rescheduled when their call ends.
      this.#timer = setTimeout(() => this.#tick(), 0);
    } else {
      return;
    }
    // Pending usage must not keep an idle process alive; close() is how it is delivered at exit.
    this.#timer.unref();
  }

  #hasSendablePending(): boolean {
    for (const key of this.#pending.keys()) if (!this.#outbound.has(key)) return true;
    return false;
  }

  /** Moves pending usage to outbound (one batch per key at a time) and sends what slots allow. */
  #tick(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#shutdown.signal.aborted) return;
    for (const [key, batch] of this.#pending) {
      // A key already outbound waits for the next tick: Kana sees one call per key at a time.
      if (this.#outbound.has(key)) continue;
      this.#pending.delete(key);
      if (batch.delta > MAX_DELTA) {
        // Kana's delta is a 32-bit Int: the rest stays pending (its events already counted here).
        const rest = batch.delta - MAX_DELTA;
        this.#pending.set(
          key,
          this.#newBatch(key, batch.userId, batch.featureId, rest, 0, batch.firstCapturedAt, batch.generation),
        );
        batch.delta = MAX_DELTA;
      }
      this.#outbound.set(key, batch);
      this.#ready.push(batch);
    }
    this.#dispatch();
    this.#schedule();
  }

  #dispatch(): void {
    while (this.#calls.size < this.#config.concurrency && this.#readyHead < this.#ready.length) {
      const batch = this.#ready[this.#readyHead++] as Batch;
      const call = this.#send(batch).finally(() => {
        this.#calls.delete(call);
        this.#dispatch();
      });
      this.#calls.add(call);
    }
    if (this.#readyHead === this.#ready.length) {
      this.#ready = [];
      this.#readyHead = 0;
    }
  }

  async #send(batch: Batch): Promise<void> {
    const { retry } = this.#config;
    const signal = this.#shutdown.signal;
    const usage = { userId: batch.userId, featureId: batch.featureId, delta: batch.delta };
    try {
      await pRetry(
        () => {
          this.#counters.calls++;
          return this.#client.recordUsage(usage, signal);
        },
        {
          ...retry,
          signal,
          unref: true,
          shouldRetry: async ({ error, retriesLeft }) => {
            if (!(error instanceof KanaError) || !error.retryable) return false;
            this.#counters.retries++;
            this.#logger.debug(
              {
                code: logCodes.deliveryRetry,
                userId: batch.userId,
                featureId: batch.featureId,
                err: summarize(error),
                retriesLeft,
              },
              'kana-meter: Kana call failed, retrying',
            );
            if (error.retryAfterMs) await sleep(error.retryAfterMs, signal);
            return true;
          },
        },
      );
      this.#outbound.delete(batch.key);
      this.#counters.delivered += batch.events;
      this.#settle(batch);
    } catch (caught) {
      // At close()'s deadline the batch stays outbound: close() reports it with the rest.
      if (signal.aborted) return;
      this.#outbound.delete(batch.key);
      const error =
        caught instanceof KanaError
          ? caught
          : new KanaError('KANA_BAD_RESPONSE', String((caught as Error)?.message ?? caught), {
              retryable: false,
              cause: caught,
            });
      this.#logger.error(
        {
          code: logCodes.deliveryFailed,
          userId: batch.userId,
          featureId: batch.featureId,
          delta: batch.delta,
          events: batch.events,
          err: summarize(error),
        },
        'kana-meter: usage could not be delivered to Kana',
      );
      this.#reportFailure(toUndelivered(batch), batch.events, error);
      this.#settle(batch);
    } finally {
      this.#schedule();
    }
  }

  #reportUndeliveredAtClose(timeoutMs: number): void {
    const left = [...this.#outbound.values(), ...this.#pending.values()];
    this.#outbound.clear();
    this.#pending.clear();
    if (left.length === 0) return;
    const error = new KanaError(
      'KANA_CLOSED',
      `close() reached its ${timeoutMs} ms deadline before this usage was delivered`,
      { retryable: false },
    );
    this.#logger.error(
      {
        code: logCodes.undeliveredAtClose,
        undelivered: left.map(({ userId, featureId, delta, events }) => ({ userId, featureId, delta, events })),
      },
      `kana-meter: ${left.length} usage record(s) were not delivered before close()`,
    );
    for (const batch of left) {
      this.#reportFailure(toUndelivered(batch), batch.events, error);
      this.#settle(batch);
    }
  }

  #reportFailure(usage: UndeliveredUsage, events: number, error: KanaError): void {
    this.#counters.failed += events;
    const hook = this.#config.onDeliveryFailure;
    if (!hook) return;
    try {
      Promise.resolve(hook(usage, error)).catch((hookError) => this.#hookFailed(hookError));
    } catch (hookError) {
      this.#hookFailed(hookError);
    }
  }

  #hookFailed(error: unknown): void {
    this.#counters.hookErrors++;
    this.#logger.error(
      { code: logCodes.hookFailed, hook: 'onDeliveryFailure', err: error },
      'kana-meter: onDeliveryFailure threw',
    );
  }
}

function usageKey(userId: string, featureId: string): string {
  return `${userId}\u0000${featureId}`;
}

function toUndelivered(batch: Batch): UndeliveredUsage {
  return {
    userId: batch.userId,
    featureId: batch.featureId,
    delta: batch.delta,
    events: batch.events,
    firstCapturedAt: new Date(batch.firstCapturedAt),
  };
}

/** What a log line says of a KanaError: never the request (it has no key, but keep lines small). */
function summarize(error: KanaError): { code: string; message: string; status?: number } {
  return error.status === undefined
    ? { code: error.code, message: error.message }
    : { code: error.code, message: error.message, status: error.status };
}
