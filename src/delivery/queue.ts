// The delivery queue: sends coalesced usage with bounded concurrency and p-retry, rides out outages, spools, flushes and closes.

import { setMaxListeners } from 'node:events';
import pRetry, { type Options as PRetryOptions } from 'p-retry';
import { backoffDelay } from '../config/backoff.js';
import { KanaError, logCodes, SpoolError } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import { type KanaCallOutcome, type ObserveKanaCall, timeKanaCall } from '../config/metrics.js';
import type { Counter } from '../config/stats.js';
import {
  type DeliverySpan,
  failedCall,
  type KanaCallDescription,
  type ObserveUsage,
  type Telemetry,
} from '../config/telemetry.js';
import { keepAliveUntil, raceTimeout, sleep } from '../config/timers.js';
import type { KanaMeterConfig, UndeliveredUsage } from '../options.js';
import type { DeliveryOutcome, DeliveryOutcomeListener } from './delivery-outcome.js';
import { type Batch, PendingUsage } from './pending-usage.js';
import { SinkCalls } from './sink-calls.js';
import { Spool, type SpoolRecord, type TakenBack } from './spool.js';
import type { SpoolFileSystem } from './spool-files.js';
import type { SinkFailure, UsageSink } from './usage-sink.js';

export const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;
/** Distinct internal error causes remembered, so each is logged once. */
const MAX_LOGGED_CAUSES = 100;

/** How long close() still waits for calls it aborted at its deadline: a fetch that ignores the abort is left behind. */
const ABORT_GRACE_MS = 50;

/** Spill file bytes read at start; the rest comes back in rounds that run between turns of the event loop. */
const OPEN_SPILL_BYTES = 1024 * 1024;

/** Seams for tests; not options. */
export interface DeliveryInternals {
  /** The filesystem the spool goes through (faults are injected here). */
  spoolFileSystem?: SpoolFileSystem;
  /** Spill file size that triggers compaction. @default 64 MiB */
  spoolCompactBytes?: number;
}

/** Units of one (user, feature) the queue no longer waits for: confirmed, for the ledger. */
export type UsageConfirmedListener = (userId: string, featureId: string, delta: number) => void;

export interface CloseOptions {
  /**
   * How long close() may take, in milliseconds. At the deadline, calls and retry waits are
   * aborted; what is left goes to the spool, or is reported undelivered. Keep it inside your
   * platform's shutdown grace period (Kubernetes' terminationGracePeriodSeconds: 30 s by default).
   * @default 10000
   * @example await kana.close({ timeoutMs: 20_000 })
   */
  timeoutMs?: number;
}

type DeliveryConfig = Pick<
  KanaMeterConfig,
  'retry' | 'flushInterval' | 'concurrency' | 'maxPendingKeys' | 'spool' | 'onDeliveryFailure' | 'onDrop' | 'logger'
>;

/** Kana is unavailable: sending is paused, and one probe call at a time tests whether it is back. */
interface Outage {
  since: number;
  /** Probes that failed so far: the next waits longer. */
  failedProbes: number;
  probeTimer: NodeJS.Timeout | undefined;
}

export class DeliveryQueue {
  readonly #sink: UsageSink;
  /** The calls to the sink: `concurrency` at most, each carrying the batches waiting for it. */
  readonly #sinkCalls: SinkCalls;
  readonly #config: DeliveryConfig;
  readonly #logger: KanaLogger;
  readonly #counters: Record<Counter, number>;
  readonly #usage = new PendingUsage();
  /** Outbound batches waiting to be sent, oldest first (#readyHead is the next to send). */
  #ready: Batch[] = [];
  #readyHead = 0;
  /** Batches being sent (each its p-retry run), until delivered, failed or requeued. */
  readonly #sending = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #outage: Outage | undefined;
  #overflowWarned = false;
  /** Causes of internal errors already logged. */
  readonly #internalErrorsLogged = new Set<string>();
  /** Keeps its own state: what its snapshot holds beside memory, and the take-back round under way. */
  readonly #spool: Spool | undefined;
  #closing: Promise<void> | undefined;
  /** Resolves close()'s wait early: Kana is down and the spool keeps what is left. */
  #giveUp: (() => void) | undefined;
  /** Aborts calls and retry waits when close() reaches its deadline. */
  readonly #shutdown = new AbortController();
  /** Told of usage the queue stops waiting for (see onUsageConfirmed). */
  #usageConfirmed: UsageConfirmedListener | undefined;
  /** Told what became of usage (see onOutcome); undefined without an audit trail. */
  #outcome: DeliveryOutcomeListener | undefined;
  /** Delivery calls started so far: each outcome names the call that carried it. */
  #callCount = 0;
  /** Told of units captured, delivered, failed and dropped; undefined unless the `metrics` integration wants them. */
  #observeUsage: ObserveUsage | undefined;
  /** Traces delivery batches and their attempts; undefined unless the `metrics` integration traces. */
  #tracing: Telemetry['tracing'];

  constructor(
    sink: UsageSink,
    config: DeliveryConfig,
    counters: Record<Counter, number>,
    observeKanaCall?: ObserveKanaCall,
    internals: DeliveryInternals = {},
  ) {
    this.#sink = sink;
    this.#config = config;
    this.#logger = config.logger;
    this.#counters = counters;
    // Each call in flight listens to it (p-retry, the client): more than 10 is normal, not a leak.
    setMaxListeners(0, this.#shutdown.signal);
    this.#sinkCalls = new SinkCalls(
      sink,
      this.#shutdown.signal,
      config.concurrency,
      (retry) => {
        this.#counters.calls++;
        if (retry) this.#counters.retries++;
      },
      observeKanaCall,
    );
    if (config.spool) {
      this.#spool = this.#openSpool(config.spool.path, internals);
      this.#schedule();
    }
  }

  /** Opens the spool and takes into memory what an earlier run left there, as much as maxPendingKeys allows. */
  #openSpool(path: string, internals: DeliveryInternals): Spool {
    const { spool, opened } = Spool.open(path, {
      take: (record, earlierRun) => this.#take(record, earlierRun),
      bringBack: (taken) => this.#bringBack(taken),
      held: () => this.#usage.snapshot(),
      writeAhead: this.#config.spool?.writeAhead === true,
      maxSpillBytes: OPEN_SPILL_BYTES,
      compactKeys: this.#config.maxPendingKeys,
      compactBytes: internals.spoolCompactBytes,
      fs: internals.spoolFileSystem,
      onError: (error, during) =>
        this.#spoolFailed(
          error,
          during === 'take-back' ? 'the spilled usage stays in the spill file' : 'the spill file stays as it was',
        ),
      onCompacted: (compaction) =>
        this.#logger.info(
          { code: logCodes.spoolCompacted, ...compaction },
          'kana-meter: the spill file was compacted (records merged per key)',
        ),
    });
    if (opened.recoveredLock !== undefined) {
      this.#logger.warn(
        { code: logCodes.spoolLockRecovered, path: spool.path, reason: opened.recoveredLock },
        'kana-meter: took over the spool from a holder that is gone',
      );
    }
    if (opened.records > 0 || opened.spilledBytes > 0) {
      this.#logger.info(
        { code: logCodes.spoolReplayed, path: spool.path, records: opened.records, spilledBytes: opened.spilledBytes },
        'kana-meter: sending usage kept in the spool by an earlier run',
      );
    }
    return spool;
  }

  /** Queues one event. After close(), the event is reported undelivered instead. */
  enqueue(userId: string, featureId: string, delta: number): void {
    if (this.#closing) {
      this.rejectClosed(userId, featureId, delta);
      return;
    }
    this.#counters.captured++;
    this.#observeUsage?.('captured', userId, featureId, delta, undefined);
    // The hot path: a merge into an existing batch is one Map lookup and two additions.
    const spool = this.#spool;
    const maxKeys =
      spool === undefined ? this.#config.maxPendingKeys : this.#config.maxPendingKeys - spool.reservedKeys;
    const added = this.#usage.add(userId, featureId, delta, 1, undefined, maxKeys);
    if (added === 'full') {
      this.#overflow({ userId, featureId, delta, events: 1, firstCapturedAt: Date.now() });
      return;
    }
    if (spool?.writeAhead) this.#appendToSpool({ userId, featureId, delta, events: 1, firstCapturedAt: Date.now() });
    else spool?.markBehind();
    if (added === 'added') this.#schedule();
  }

  /** Reports an event captured after close() began: it cannot be sent any more. */
  rejectClosed(userId: string, featureId: string, delta: number): void {
    this.#counters.captured++;
    this.#observeUsage?.('captured', userId, featureId, delta, undefined);
    const usage = { userId, featureId, delta, events: 1, firstCapturedAt: new Date() };
    const error = new KanaError('KANA_CLOSED', 'usage was captured after close()', { retryable: false });
    this.#tell({ outcome: 'failed', userId, featureId, delta, events: 1, reason: error.code });
    this.#logger.error(
      { code: logCodes.capturedAfterClose, userId, featureId, delta },
      'kana-meter: usage captured after close() was not sent',
    );
    this.#reportFailure(usage, 1, error);
  }

  /**
   * Resolves when every event captured before this call is delivered or reported undelivered,
   * spilled usage included. While Kana is unavailable, it waits for Kana to come back.
   */
  flush(): Promise<void> {
    // Someone awaits this: the process must not exit under it while timers are all unref()'d.
    return keepAliveUntil(this.#flushAll());
  }

  async #flushAll(): Promise<void> {
    for (;;) {
      const roundsBefore = this.#spool?.roundsTakenBack;
      const done = this.#usage.whenDone();
      if (this.#outage?.probeTimer) {
        // Kana may be back already: probe now rather than at the end of the backoff.
        clearTimeout(this.#outage.probeTimer);
        this.#probe();
      } else {
        this.#tick();
      }
      await done;
      if (this.#shutdown.signal.aborted) return;
      // Spilled usage is part of what flush() waits for: a round under way, what one brought back meanwhile, the rest.
      const takingBack = this.#spool?.takingBack;
      if (takingBack) {
        await takingBack;
        continue;
      }
      if (this.#spool?.roundsTakenBack !== roundsBefore) continue;
      if (!this.#spool?.hasSpilled) return;
      if (!(await this.#takeBackSpilled())) return;
    }
  }

  /** Stops intake, flushes until the deadline, then aborts and spools or reports what is left. Idempotent. */
  close(options: CloseOptions = {}): Promise<void> {
    this.#closing ??= this.#closeWithin(options.timeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS);
    return this.#closing;
  }

  /**
   * Stops a queue that will never be used (kanaMeter() threw after creating it): clears its timer,
   * sends nothing, and closes the spool as it was read, releasing its lock for the next kanaMeter().
   */
  discard(): void {
    this.#closing ??= Promise.resolve();
    clearTimeout(this.#timer);
    this.#shutdown.abort(new KanaError('KANA_ABORTED', 'kanaMeter() failed', { retryable: false }));
    this.#spool?.close();
  }

  /**
   * Registers the one listener told of usage this queue no longer waits for, per (user, feature):
   * delivered (Kana counts it now), failed for good, dropped, or left undelivered at close() (Kana
   * never will). kanaMeter's store counts it as confirmed: it leaves the fleet's unconfirmed count.
   * Usage kept in the spool is not confirmed: another run sends it.
   */
  onUsageConfirmed(listener: UsageConfirmedListener): void {
    this.#usageConfirmed = listener;
  }

  /** Registers the one listener told what became of each batch: delivered by which call, failed for good, or spooled. */
  onOutcome(listener: DeliveryOutcomeListener): void {
    this.#outcome = listener;
  }

  #tell(outcome: DeliveryOutcome): void {
    this.#outcome?.(outcome);
  }

  /** The `metrics` integration's usage and tracing hooks (kanaMeter() sets them once, before any usage). */
  instrument(telemetry: Telemetry): void {
    this.#observeUsage = telemetry.observeUsage;
    this.#tracing = telemetry.tracing;
  }

  /** Tells the onUsageConfirmed listener: delivered, failed for good, dropped, or undelivered at close(). */
  #stopWaitingFor(usage: { userId: string; featureId: string; delta: number }): void {
    this.#usageConfirmed?.(usage.userId, usage.featureId, usage.delta);
  }

  /** Units captured for this (user, feature) that Kana has not confirmed yet: waiting or in flight. */
  undeliveredDelta(userId: string, featureId: string): number {
    return this.#usage.undeliveredDelta(userId, featureId);
  }

  /** Gauges for stats(). */
  gauges(): { pending: number; pendingKeys: number; inFlight: number; kanaAvailable: boolean } {
    return { ...this.#usage.gauges(), inFlight: this.#sinkCalls.inFlight, kanaAvailable: this.#outage === undefined };
  }

  async #closeWithin(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const gaveUp = new Promise<void>((resolve) => {
      this.#giveUp = resolve;
    });
    await raceTimeout(Promise.race([this.flush(), gaveUp]), timeoutMs);
    clearTimeout(this.#timer);
    clearTimeout(this.#outage?.probeTimer);
    this.#shutdown.abort(new KanaError('KANA_ABORTED', 'close() reached its deadline', { retryable: false }));
    // Aborted calls settle at once; a custom fetch that ignores the signal must not hold close() past its deadline.
    await raceTimeout(Promise.allSettled([...this.#sending]), Math.max(ABORT_GRACE_MS, deadline - Date.now()));
    const left = this.#usage.drain();
    if (this.#spool) this.#closeSpool(left);
    else this.#reportUndeliveredAtClose(left, timeoutMs);
  }

  /** Sets the tick timer: `flushInterval` from now, or at once for a flush() or a take-back step that left room. */
  #schedule(soon = false): void {
    if (this.#timer || this.#outage) return;
    // Spilled usage comes back as the queue drains, without waiting for new traffic.
    const spool = this.#spool;
    const takeBack = spool?.hasSpilled === true && spool.takingBack === undefined && this.#hasRoomToSpare();
    if (this.#usage.pendingCount === 0 && !takeBack) return;
    if (soon && takeBack) {
      this.#timer = setTimeout(() => this.#tick(), 0);
    } else if (!this.#usage.hasWaiters) {
      this.#timer = setTimeout(() => this.#tick(), this.#config.flushInterval);
    } else if (this.#usage.hasSendable || takeBack) {
      // flush() is waiting: send now. Keys still in flight are rescheduled when their call ends.
      this.#timer = setTimeout(() => this.#tick(), 0);
    } else {
      return;
    }
    // Pending usage must not keep an idle process alive; close() is how it is delivered at exit.
    this.#timer.unref();
  }

  /** Moves pending usage to outbound (one batch per key at a time) and sends what slots allow. */
  #tick(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#shutdown.signal.aborted || this.#outage) return;
    const roomToSpare = this.#hasRoomToSpare();
    if (roomToSpare) this.#overflowWarned = false;
    this.#maintainSpool(roomToSpare);
    for (const batch of this.#usage.takeSendable()) this.#ready.push(batch);
    this.#dispatch();
    this.#schedule();
  }

  #hasRoomToSpare(): boolean {
    return this.#usage.keyCount < this.#config.maxPendingKeys / 2;
  }

  /** Starts ready batches while calls have room for them: `concurrency` calls of up to the sink's batchesPerCall each. */
  #dispatch(): void {
    const room = this.#config.concurrency * this.#sinkCalls.batchesPerCall;
    while (!this.#outage && this.#sending.size < room && this.#readyHead < this.#ready.length) {
      this.#start(this.#ready[this.#readyHead++] as Batch, false);
    }
    if (this.#readyHead === this.#ready.length) {
      this.#ready = [];
      this.#readyHead = 0;
    }
  }

  #start(batch: Batch, probe: boolean): void {
    // Traced: the batch's span is the context of its attempts and of the log lines its sending writes.
    const span = this.#tracing?.startDelivery(batch.userId, batch.featureId, batch.delta, probe);
    const sent =
      span === undefined ? this.#send(batch, probe, undefined) : span.run(() => this.#send(batch, probe, span));
    const sending = sent.finally(() => {
      this.#sending.delete(sending);
      this.#dispatch();
    });
    this.#sending.add(sending);
  }

  /** Delivers one batch with p-retry (a probe makes one attempt); then it is delivered, kept for after the outage, or failed for good. */
  async #send(batch: Batch, probe: boolean, span: DeliverySpan | undefined): Promise<void> {
    const signal = this.#shutdown.signal;
    const call = ++this.#callCount;
    let ended: [outcome: KanaCallOutcome | 'requeued', error: unknown] = ['ok', undefined];
    try {
      await pRetry(this.#attempt(batch, span), this.#retryOptions(batch, probe));
      this.#delivered(batch, call);
    } catch (caught) {
      ended = [failedCall(caught).outcome, caught];
      // At close()'s deadline the batch stays outbound: close() takes it with the rest.
      if (signal.aborted) return;
      const error = this.#classify(caught);
      if (error === undefined || error.retryable) {
        // Retries ran out on a transient error: keep the usage, pause, and probe until Kana is back.
        this.#usage.requeue(batch);
        ended[0] = 'requeued';
        if (probe) this.#probeFailed(error);
        else this.#startOutage(error);
        return;
      }
      // Kana answered, and retrying cannot help: this usage fails for good.
      this.#usage.retire(batch);
      this.#tell({ outcome: 'failed', call, ...summarizeBatch(batch), reason: error.code });
      this.#fail(batch, error);
      this.#endOutage();
    } finally {
      span?.end(ended[0], ended[1]);
      this.#schedule();
    }
  }

  /**
   * What p-retry calls for each attempt: one batch in a call SinkCalls makes (and counts and
   * times), traced on its own when tracing wants it: p-retry's backoff waits are not Kana's latency.
   */
  #attempt(batch: Batch, span: DeliverySpan | undefined): (attemptNumber: number) => Promise<void> {
    const usage = { userId: batch.userId, featureId: batch.featureId, delta: batch.delta };
    const sinkCalls = this.#sinkCalls;
    return (attemptNumber) => {
      const attempt = () => sinkCalls.deliver(usage, attemptNumber > 1);
      return span === undefined
        ? attempt()
        : timeKanaCall(undefined, 'usage', attempt, span.attempt(this.#describeAttempt(attemptNumber)));
    };
  }

  /** p-retry's options for one batch: `retry`; a probe is one attempt; no retry during an outage or after a permanent failure. */
  #retryOptions(batch: Batch, probe: boolean): PRetryOptions {
    const { retry } = this.#config;
    const signal = this.#shutdown.signal;
    const sink = this.#sink;
    return {
      ...retry,
      // A probe is one attempt: the outage backoff spaces them out.
      retries: probe ? 0 : retry.retries,
      signal,
      unref: true,
      shouldRetry: async ({ error, retriesLeft }) => {
        const failure = sink.classify(error);
        if (!failure?.retryable || this.#outage) return false;
        this.#logger.debug(
          {
            code: logCodes.deliveryRetry,
            ...where(batch),
            err: summarize(asKanaError(error, failure)),
            retriesLeft,
          },
          'kana-meter: Kana call failed, retrying',
        );
        if (failure.retryAfterMs) await sleep(failure.retryAfterMs, signal);
        return true;
      },
    };
  }

  /** The sink accepted the batch. */
  #delivered(batch: Batch, call: number): void {
    this.#usage.retire(batch);
    this.#stopWaitingFor(batch);
    this.#counters.delivered += batch.events;
    this.#tell({ outcome: 'delivered', call, ...summarizeBatch(batch) });
    this.#observeUsage?.('delivered', batch.userId, batch.featureId, batch.delta, undefined);
    this.#spool?.delivered();
    this.#endOutage();
  }

  /**
   * A failed call as the KanaError it is reported as. Not a failure the sink recognises (Kana's: a
   * KanaError): a bug of ours, counted and logged, and undefined: the usage is kept and sending
   * backs off as for a transient failure; it is never reported undeliverable for it.
   */
  #classify(caught: unknown): KanaError | undefined {
    const failure = this.#sink.classify(caught);
    return failure === undefined ? this.#internalError(caught) : asKanaError(caught, failure);
  }

  /** A usage call attempt, as its span describes it. */
  #describeAttempt(attempt: number): KanaCallDescription {
    const sink = this.#sink;
    return { operation: 'usage', name: sink.mutation ?? 'deliver', endpoint: sink.endpoint ?? '', attempt };
  }

  /** Counts an internal error, and logs it with its stack the first time this cause is seen. */
  #internalError(error: unknown): undefined {
    this.#counters.internalErrors++;
    const cause =
      error instanceof Error ? `${error.name}: ${error.message}\n${error.stack?.split('\n')[1]}` : String(error);
    if (this.#internalErrorsLogged.has(cause)) return undefined;
    // Causes with varying messages must not grow this set without bound: start over.
    if (this.#internalErrorsLogged.size >= MAX_LOGGED_CAUSES) this.#internalErrorsLogged.clear();
    this.#internalErrorsLogged.add(cause);
    this.#logger.error(
      { code: logCodes.internalError, err: error, internalErrors: this.#counters.internalErrors },
      'kana-meter: internal error while sending usage (a bug in kana-meter, please report it); the usage is kept and sending backs off. Logged once per cause.',
    );
    return undefined;
  }

  /** Pauses sending. `error` undefined: an internal error, already logged as such. */
  #startOutage(error: KanaError | undefined): void {
    if (this.#outage) return;
    this.#outage = { since: Date.now(), failedProbes: 0, probeTimer: undefined };
    clearTimeout(this.#timer);
    this.#timer = undefined;
    // Batches not started yet go back to pending, to merge with newer usage while Kana is away.
    for (let i = this.#readyHead; i < this.#ready.length; i++) this.#usage.requeue(this.#ready[i] as Batch);
    this.#ready = [];
    this.#readyHead = 0;
    if (error !== undefined) {
      const { pending, pendingKeys } = this.#usage.gauges();
      this.#logger.warn(
        { code: logCodes.kanaUnavailable, err: summarize(error), pending, pendingKeys },
        'kana-meter: Kana is unavailable; usage is kept and sent once it is back',
      );
    }
    this.#snapshotSpool();
    this.#scheduleProbe();
  }

  #probeFailed(error: KanaError | undefined): void {
    if (!this.#outage) {
      this.#startOutage(error);
      return;
    }
    this.#outage.failedProbes++;
    if (error !== undefined) {
      this.#logger.debug(
        { code: logCodes.deliveryRetry, err: summarize(error) },
        'kana-meter: Kana is still unavailable',
      );
    }
    this.#snapshotSpool();
    // Shutting down with a spool: nothing is lost by stopping now.
    if (this.#closing && this.#spool) this.#giveUp?.();
    else this.#scheduleProbe();
  }

  #scheduleProbe(): void {
    const outage = this.#outage as Outage;
    const { retry } = this.#config;
    // Back off from where p-retry stopped, up to retry.maxTimeout.
    outage.probeTimer = setTimeout(() => this.#probe(), backoffDelay(retry, retry.retries + outage.failedProbes));
    outage.probeTimer.unref();
  }

  /** Sends one batch, with a single attempt, to learn whether Kana is back. */
  #probe(): void {
    const outage = this.#outage;
    if (!outage || this.#shutdown.signal.aborted) return;
    outage.probeTimer = undefined;
    const [batch] = this.#usage.takeSendable(1);
    if (batch) this.#start(batch, true);
    // Nothing to send but calls still in flight: they will end the outage, or probe again.
    else if (this.#sending.size === 0) this.#endOutage();
    else this.#scheduleProbe();
  }

  #endOutage(): void {
    const outage = this.#outage;
    if (!outage) return;
    this.#outage = undefined;
    clearTimeout(outage.probeTimer);
    const { pending, pendingKeys } = this.#usage.gauges();
    this.#logger.info(
      { code: logCodes.kanaAvailable, unavailableMs: Date.now() - outage.since, pending, pendingKeys },
      'kana-meter: Kana is available again; sending the usage kept meanwhile',
    );
    this.#tick();
  }

  /** Usage for a new key when maxPendingKeys keys are held: to the spool, or dropped. */
  #overflow(usage: SpoolRecord): void {
    const warnOnce = (message: string) => {
      if (this.#overflowWarned) return;
      this.#overflowWarned = true;
      const { maxPendingKeys } = this.#config;
      this.#logger.warn({ code: logCodes.queueFull, maxPendingKeys }, message);
    };
    if (this.#spool && this.#appendToSpool(usage, true)) {
      this.#counters.spilled++;
      this.#tell({ ...summarizeBatch(usage), outcome: 'spooled', reason: 'spilled' });
      warnOnce('kana-meter: maxPendingKeys reached; usage for new keys goes to the spool until the queue drains');
      return;
    }
    this.#counters.dropped++;
    this.#observeUsage?.('dropped', usage.userId, usage.featureId, usage.delta, logCodes.queueFull);
    this.#stopWaitingFor(usage);
    this.#tell({ ...summarizeBatch(usage), outcome: 'failed', reason: 'dropped' });
    warnOnce(
      this.#spool
        ? 'kana-meter: maxPendingKeys reached and the spool could not take it: usage for new keys is dropped (see onDrop)'
        : 'kana-meter: maxPendingKeys reached and no spool: usage for new keys is dropped (see onDrop)',
    );
    const hook = this.#config.onDrop;
    if (hook) this.#callHook('onDrop', () => hook({ ...usage, firstCapturedAt: new Date(usage.firstCapturedAt) }));
  }

  /** Takes a spool record into memory; false when maxPendingKeys keys are held (it stays on disk). */
  #take(record: SpoolRecord, earlierRun: boolean): boolean {
    const { userId, featureId, delta, events, firstCapturedAt } = record;
    if (this.#usage.add(userId, featureId, delta, events, firstCapturedAt, this.#config.maxPendingKeys) === 'full') {
      return false;
    }
    if (earlierRun) this.#counters.replayed += events;
    return true;
  }

  /** On each tick: take spilled usage back when there is room, and drop delivered usage from the snapshot. */
  #maintainSpool(roomToSpare: boolean): void {
    const spool = this.#spool;
    if (!spool) return;
    if (roomToSpare && spool.hasSpilled && spool.takingBack === undefined) void this.#takeBackSpilled();
    if (spool.stale) this.#snapshotSpool();
  }

  /**
   * Takes spilled usage back into memory: a round over the spill file (run by the spool between
   * turns of the event loop) brings back every record of as many keys as memory has room for,
   * merged, and sealed with a snapshot that holds them (see #bringBack). True when something came back.
   */
  #takeBackSpilled(): Promise<boolean> {
    return (this.#spool as Spool).takeBackSpilled(this.#config.maxPendingKeys - this.#usage.keyCount);
  }

  /** Usage a take-back round brought back: into memory (the spool kept room for it), then sent. */
  #bringBack(taken: TakenBack[]): void {
    for (const { record, replayedEvents } of taken) {
      this.#usage.add(record.userId, record.featureId, record.delta, record.events, record.firstCapturedAt);
      this.#counters.replayed += replayedEvents;
    }
    this.#schedule(true);
  }

  /** Rewrites the snapshot as what memory holds now, when it differs. */
  #snapshotSpool(): void {
    try {
      this.#spool?.refresh();
    } catch (error) {
      this.#spoolFailed(error, 'the usage stays in memory, and the previous snapshot on disk');
    }
  }

  #appendToSpool(usage: SpoolRecord, spilled = false): boolean {
    try {
      this.#spool?.append(usage, spilled);
      return true;
    } catch (error) {
      this.#spoolFailed(
        error,
        spilled ? 'the usage is dropped (see onDrop)' : 'the usage stays in memory; the next snapshot writes it',
      );
      return false;
    }
  }

  /** A spool write failed: counted every time, logged the first time and every 1000th (a persistent fault stays visible). */
  #spoolFailed(error: unknown, consequence: string): void {
    if (this.#counters.spoolErrors++ === 0 || this.#counters.spoolErrors % 1000 === 0) {
      const err =
        error instanceof SpoolError
          ? { code: error.code, message: error.message, path: error.path }
          : { message: String(error) };
      this.#logger.error(
        { code: logCodes.spoolFailed, path: this.#spool?.path, err, spoolErrors: this.#counters.spoolErrors },
        `kana-meter: could not write the spool; ${consequence}`,
      );
    }
  }

  /** Snapshots what is left and closes the spool; only what is durably on disk is logged as kept there. */
  #closeSpool(left: Batch[]): void {
    const spool = this.#spool as Spool;
    let kept = left;
    try {
      spool.snapshot(left);
    } catch (error) {
      this.#spoolFailed(error, 'the usage left at close() is reported undelivered');
      this.#reportUndeliveredAtClose(left, 0);
      kept = [];
    }
    let spilledBytes = spool.spilledBytes;
    try {
      spool.close();
    } catch (error) {
      this.#spoolFailed(error, 'spilled usage may not all be on disk');
      spilledBytes = 0;
    }
    for (const batch of kept) this.#tell({ outcome: 'spooled', ...summarizeBatch(batch), reason: 'close' });
    if (kept.length > 0 || spilledBytes > 0) {
      this.#logger.warn(
        { code: logCodes.spooledAtClose, path: spool.path, undelivered: kept.map(summarizeBatch), spilledBytes },
        `kana-meter: ${kept.length} usage record(s)${spilledBytes > 0 ? ' and spilled usage' : ''} kept in the spool for the next start`,
      );
    }
  }

  #fail(batch: Batch, error: KanaError): void {
    this.#stopWaitingFor(batch);
    this.#logger.error(
      { code: logCodes.deliveryFailed, ...summarizeBatch(batch), err: summarize(error) },
      'kana-meter: usage could not be delivered to Kana',
    );
    this.#reportFailure(toUndelivered(batch), batch.events, error);
  }

  #reportUndeliveredAtClose(left: Batch[], timeoutMs: number): void {
    if (left.length === 0) return;
    const error = new KanaError(
      'KANA_CLOSED',
      `close() reached its ${timeoutMs} ms deadline before this usage was delivered`,
      { retryable: false },
    );
    this.#logger.error(
      { code: logCodes.undeliveredAtClose, undelivered: left.map(summarizeBatch) },
      `kana-meter: ${left.length} usage record(s) were not delivered before close()`,
    );
    for (const batch of left) {
      this.#stopWaitingFor(batch);
      this.#tell({ outcome: 'failed', ...summarizeBatch(batch), reason: error.code });
      this.#reportFailure(toUndelivered(batch), batch.events, error);
    }
  }

  #reportFailure(usage: UndeliveredUsage, events: number, error: KanaError): void {
    this.#counters.failed += events;
    this.#observeUsage?.('failed', usage.userId, usage.featureId, usage.delta, error.code);
    const hook = this.#config.onDeliveryFailure;
    if (hook) this.#callHook('onDeliveryFailure', () => hook(usage, error));
  }

  /** Runs a user hook; what it throws or rejects is logged and counted, never thrown. */
  #callHook(name: string, run: () => unknown): void {
    const failed = (error: unknown) => {
      this.#counters.hookErrors++;
      this.#logger.error({ code: logCodes.hookFailed, hook: name, err: error }, `kana-meter: ${name} threw`);
    };
    try {
      Promise.resolve(run()).catch(failed);
    } catch (error) {
      failed(error);
    }
  }
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

function where(batch: Batch): { userId: string; featureId: string } {
  return { userId: batch.userId, featureId: batch.featureId };
}

function summarizeBatch(batch: Pick<Batch, 'userId' | 'featureId' | 'delta' | 'events'>): {
  userId: string;
  featureId: string;
  delta: number;
  events: number;
} {
  return { userId: batch.userId, featureId: batch.featureId, delta: batch.delta, events: batch.events };
}

/** A sink's failure as the KanaError that logs and onDeliveryFailure expect (Kana's client throws them already). */
function asKanaError(error: unknown, failure: SinkFailure): KanaError {
  if (error instanceof KanaError) return error;
  return new KanaError(
    failure.retryable ? 'KANA_SERVER_ERROR' : 'KANA_REJECTED',
    error instanceof Error ? error.message : String(error),
    { retryable: failure.retryable, retryAfterMs: failure.retryAfterMs, cause: error },
  );
}

/** What a log line says of a KanaError: code, message, status; never the request. */
function summarize(error: KanaError): { code: string; message: string; status?: number } {
  return error.status === undefined
    ? { code: error.code, message: error.message }
    : { code: error.code, message: error.message, status: error.status };
}
