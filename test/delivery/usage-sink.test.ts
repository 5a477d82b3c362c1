// The delivery seam: the queue sends to any UsageSink, retries what its classify() calls retryable, fails the rest, and tells outcomes.

import { describe, expect, it } from 'vitest';
import { createCounters } from '../../src/config/stats.js';
import type { DeliveryOutcome } from '../../src/delivery/delivery-outcome.js';
import { DeliveryQueue } from '../../src/delivery/queue.js';
import type { SinkFailure, UsageBatch, UsageSink } from '../../src/delivery/usage-sink.js';
import type { KanaError, UndeliveredUsage } from '../../src/index.js';
import { parseOptions } from '../../src/options.js';

class Flaky extends Error {}
class Refused extends Error {}

/** A sink that is not Kana: it refuses the first attempts with `failures`, then accepts. */
class ListSink implements UsageSink {
  readonly accepted: UsageBatch[] = [];
  constructor(private readonly failures: Error[]) {}
  async deliver(batch: UsageBatch): Promise<void> {
    const failure = this.failures.shift();
    if (failure) throw failure;
    this.accepted.push({ ...batch });
  }
  classify(error: unknown): SinkFailure | undefined {
    if (error instanceof Flaky) return { retryable: true };
    if (error instanceof Refused) return { retryable: false };
    return undefined;
  }
}

/** A sink that takes up to two batches per call, and refuses those of user 'refused'. */
class PairSink implements UsageSink {
  readonly maxBatchesPerCall = 2;
  readonly calls: UsageBatch[][] = [];
  async deliver(): Promise<void> {
    throw new Error('not called: deliverMany is');
  }
  async deliverMany(batches: readonly UsageBatch[]): Promise<unknown[]> {
    this.calls.push(batches.map((batch) => ({ ...batch })));
    return batches.map((batch) => (batch.userId === 'refused' ? new Refused('no such user') : undefined));
  }
  classify(error: unknown): SinkFailure | undefined {
    return error instanceof Refused ? { retryable: false } : undefined;
  }
}

function queueFor(sink: UsageSink) {
  const failures: [UndeliveredUsage, KanaError][] = [];
  const config = parseOptions({
    apiKey: 'prv_test_seam',
    userId: () => 'u',
    flushInterval: 5,
    retry: { retries: 3, minTimeout: 1, maxTimeout: 5 },
    onDeliveryFailure: (usage, error) => void failures.push([usage, error]),
  });
  const counters = createCounters();
  const queue = new DeliveryQueue(sink, config, counters);
  const outcomes: DeliveryOutcome[] = [];
  queue.onOutcome((outcome) => outcomes.push(outcome));
  return { queue, counters, failures, outcomes };
}

describe('UsageSink', () => {
  it('a sink other than Kana: retryable failures are retried, then the batch is delivered, coalesced', async () => {
    const sink = new ListSink([new Flaky('busy'), new Flaky('busy')]);
    const { queue, counters, outcomes } = queueFor(sink);
    queue.enqueue('u1', 'reports', 2);
    queue.enqueue('u1', 'reports', 3);
    await queue.flush();
    expect(sink.accepted).toEqual([{ userId: 'u1', featureId: 'reports', delta: 5 }]);
    expect(counters).toMatchObject({ captured: 2, delivered: 2, retries: 2, calls: 3, failed: 0 });
    expect(outcomes).toEqual([
      { outcome: 'delivered', call: 1, userId: 'u1', featureId: 'reports', delta: 5, events: 2 },
    ]);
    await queue.close();
  });

  it('a failure the sink calls permanent fails for good, once, reported to onDeliveryFailure', async () => {
    const sink = new ListSink([new Refused('no such user')]);
    const { queue, counters, failures, outcomes } = queueFor(sink);
    queue.enqueue('u2', 'reports', 1);
    await queue.flush();
    expect(counters).toMatchObject({ delivered: 0, failed: 1, calls: 1, retries: 0 });
    expect(failures).toHaveLength(1);
    expect(failures[0]?.[1]).toMatchObject({ retryable: false, message: 'no such user' });
    expect(outcomes).toEqual([
      { outcome: 'failed', call: 1, userId: 'u2', featureId: 'reports', delta: 1, events: 1, reason: 'KANA_REJECTED' },
    ]);
    await queue.close();
  });

  it('a sink with deliverMany gets the waiting batches together, up to its maxBatchesPerCall, each settled on its own', async () => {
    const sink = new PairSink();
    const { queue, counters, failures } = queueFor(sink);
    for (const user of ['u1', 'refused', 'u3', 'u4', 'u5']) queue.enqueue(user, 'reports', 1);
    await queue.flush();
    expect(sink.calls.map((call) => call.map((batch) => batch.userId))).toEqual([
      ['u1', 'refused'],
      ['u3', 'u4'],
      ['u5'],
    ]);
    expect(counters).toMatchObject({ delivered: 4, failed: 1, calls: 3, retries: 0 });
    expect(failures.map(([usage]) => usage.userId)).toEqual(['refused']);
    await queue.close();
  });
});
