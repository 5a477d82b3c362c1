// SinkCalls: the queue's calls to its sink. At most `maxCalls` at once; batches waiting for a call go together, up to the sink's maxBatchesPerCall.

import { type ObserveKanaCall, timeKanaCall } from '../config/metrics.js';
import type { UsageBatch, UsageSink } from './usage-sink.js';

/** Told of each call made: whether it retries a batch that failed before. */
export type CallListener = (retry: boolean) => void;

interface Waiting {
  readonly batch: UsageBatch;
  readonly retry: boolean;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export class SinkCalls {
  readonly #sink: UsageSink;
  readonly #signal: AbortSignal;
  readonly #maxCalls: number;
  readonly #onCall: CallListener;
  /** Times each call; undefined without a `metrics` option. */
  readonly #observe: ObserveKanaCall | undefined;
  /** Most batches one call carries: the sink's maxBatchesPerCall, or 1 without deliverMany. */
  readonly batchesPerCall: number;
  #waiting: Waiting[] = [];
  #inFlight = 0;
  #sendScheduled = false;

  constructor(
    sink: UsageSink,
    signal: AbortSignal,
    maxCalls: number,
    onCall: CallListener,
    observe: ObserveKanaCall | undefined,
  ) {
    this.#sink = sink;
    this.#signal = signal;
    this.#maxCalls = maxCalls;
    this.#onCall = onCall;
    this.#observe = observe;
    const most = sink.maxBatchesPerCall;
    this.batchesPerCall =
      sink.deliverMany !== undefined && Number.isInteger(most) && (most as number) > 1 ? (most as number) : 1;
  }

  /** Calls to the sink in flight now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** One attempt for one batch (`retry`: not its first): resolves when the sink accepted it, rejects with its failure. */
  deliver(batch: UsageBatch, retry: boolean): Promise<void> {
    if (this.batchesPerCall === 1) return this.#callOne(batch, retry);
    return new Promise((resolve, reject) => {
      this.#waiting.push({ batch, retry, resolve, reject });
      this.#scheduleSend();
    });
  }

  /** Without deliverMany, each attempt is its own call (the queue keeps them within maxCalls). */
  async #callOne(batch: UsageBatch, retry: boolean): Promise<void> {
    this.#inFlight++;
    try {
      await this.#deliverAlone(batch, retry);
    } finally {
      this.#inFlight--;
    }
  }

  /** One batch in a call of its own, with `deliver`: counted and timed. */
  async #deliverAlone(batch: UsageBatch, retry: boolean): Promise<void> {
    this.#onCall(retry);
    await this.#timed(() => this.#sink.deliver(batch, this.#signal));
  }

  #timed<T>(call: () => Promise<T>): Promise<T> {
    return this.#observe === undefined ? call() : timeKanaCall(this.#observe, 'usage', call);
  }

  /** Sends after this turn of the event loop, so that batches started in it share calls. */
  #scheduleSend(): void {
    if (this.#sendScheduled || this.#inFlight >= this.#maxCalls) return;
    this.#sendScheduled = true;
    setImmediate(() => {
      this.#sendScheduled = false;
      while (this.#inFlight < this.#maxCalls && this.#waiting.length > 0) {
        const group = this.#waiting.splice(0, this.batchesPerCall);
        void this.#call(group);
      }
    });
  }

  async #call(group: readonly Waiting[]): Promise<void> {
    this.#onCall(group.some((waiting) => waiting.retry));
    this.#inFlight++;
    try {
      if (this.#signal.aborted) throw this.#signal.reason;
      const deliverMany = this.#sink.deliverMany as NonNullable<UsageSink['deliverMany']>;
      const batches = group.map((waiting) => waiting.batch);
      const outcomes = await this.#timed(() => deliverMany.call(this.#sink, batches, this.#signal));
      group.forEach((waiting, i) => {
        if (i >= outcomes.length) {
          waiting.reject(new Error(`the sink answered ${outcomes.length} outcomes for ${group.length} batches`));
        } else if (outcomes[i] === undefined) {
          waiting.resolve();
        } else {
          waiting.reject(outcomes[i]);
        }
      });
    } catch (error) {
      if (group.length > 1 && !this.#signal.aborted && this.#sink.classify(error)?.refusedWhole) {
        // The sink ran none of it, and one batch may be the cause: each goes again alone.
        for (const waiting of group)
          await this.#deliverAlone(waiting.batch, waiting.retry).then(waiting.resolve, waiting.reject);
      } else {
        for (const waiting of group) waiting.reject(error);
      }
    } finally {
      this.#inFlight--;
      if (this.#waiting.length > 0) this.#scheduleSend();
    }
  }
}
