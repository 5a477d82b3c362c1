// CheckBreaker alone, on fake timers: what opens it, one probe at a time with backoff and Retry-After, one log line per transition.

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { KanaError } from '../../src/config/errors.js';
import { createCounters } from '../../src/config/stats.js';
import { CheckBreaker, isUnavailable, MAX_PROBE_DELAY_MS } from '../../src/enforcement/check-breaker.js';
import { logCodes } from '../../src/index.js';
import { createLogSink } from '../helpers/app.js';

const query = { userId: 'u1', featureId: 'api-calls', delta: 1 };
const timeout = new KanaError('KANA_TIMEOUT', 'slow', { retryable: true });

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

function setup() {
  const sink = createLogSink();
  const counters = createCounters();
  /** Each probe waits for the test to settle it. */
  const probes: { query: typeof query; settle: () => void }[] = [];
  const breaker = new CheckBreaker({
    backoff: { minTimeout: 100, maxTimeout: 1000, factor: 2, randomize: false },
    logger: sink.logger,
    counters,
    onKanaError: 'deny',
    probe: (probed) => new Promise<void>((settle) => probes.push({ query: probed as typeof query, settle })),
  });
  return { sink, counters, probes, breaker };
}

/** Lets the promise callbacks of a settled probe run. */
const flushPromises = () => vi.advanceTimersByTimeAsync(0);

describe('isUnavailable', () => {
  it.each([
    ['KANA_TIMEOUT', true, true],
    ['KANA_UNREACHABLE', true, true],
    ['KANA_RATE_LIMITED', true, true],
    ['KANA_SERVER_ERROR', true, true],
    ['KANA_REJECTED', false, false],
    ['KANA_UNAUTHENTICATED', false, false],
    ['KANA_ABORTED', false, false],
  ] as const)('%s (retryable: %s) -> %s', (code, retryable, expected) => {
    expect(isUnavailable(new KanaError(code, 'x', { retryable }))).toBe(expected);
  });
});

describe('CheckBreaker', () => {
  it('opens on unavailability with one warning, stays open through more failures, closes with one info line', () => {
    const { sink, counters, breaker } = setup();
    expect(breaker.failed(new KanaError('KANA_REJECTED', 'bad', { retryable: false }), query)).toBe(false);
    expect(breaker.isOpen).toBe(false);
    expect(breaker.failed(timeout, query)).toBe(true);
    expect(breaker.failed(timeout, query)).toBe(true);
    expect(breaker).toMatchObject({ isOpen: true, error: timeout });
    breaker.succeeded();
    breaker.succeeded();
    expect(breaker.isOpen).toBe(false);
    expect(counters.checkOutages).toBe(1);
    expect(sink.lines().map((line) => [line.level, line.code])).toEqual([
      [40, logCodes.checksUnavailable],
      [30, logCodes.checksAvailable],
    ]);
    expect(sink.lines()[0]).toMatchObject({ userId: 'u1', featureId: 'api-calls', onKanaError: 'deny' });
  });

  it('Kana answering an error, even to a probe, closes it', () => {
    const { breaker } = setup();
    breaker.failed(timeout, query);
    breaker.failed(new KanaError('KANA_UNAUTHENTICATED', 'bad key', { retryable: false }), query);
    expect(breaker.isOpen).toBe(false);
  });

  it('probes one at a time, backing off exponentially up to maxTimeout, with the check a request wanted last', async () => {
    const { probes, breaker } = setup();
    breaker.failed(timeout, query);
    const delays: number[] = [];
    let last = Date.now();
    for (let i = 0; i < 6; i++) {
      while (probes.length === i) await vi.advanceTimersByTimeAsync(10);
      delays.push(Date.now() - last);
      await vi.advanceTimersByTimeAsync(5000); // a probe in flight: no other one starts
      expect(probes).toHaveLength(i + 1);
      if (i === 2) breaker.wanted({ ...query, userId: 'u9' });
      breaker.failed(timeout, query);
      probes[i]?.settle();
      await flushPromises();
      last = Date.now();
    }
    expect(delays.map((delay) => Math.round(delay / 10) * 10)).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(probes.map((probe) => probe.query.userId)).toEqual(['u1', 'u1', 'u1', 'u9', 'u9', 'u9']);
  });

  it('waits for Retry-After when Kana asked for it (capped), and stops probing once stopped or closed', async () => {
    const { probes, breaker } = setup();
    breaker.failed(new KanaError('KANA_RATE_LIMITED', '429', { retryable: true, retryAfterMs: 3000 }), query);
    await vi.advanceTimersByTimeAsync(2999);
    expect(probes).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(probes).toHaveLength(1);
    breaker.failed(new KanaError('KANA_RATE_LIMITED', '429', { retryable: true, retryAfterMs: 10 * 60_000 }), query);
    probes[0]?.settle();
    await flushPromises();
    await vi.advanceTimersByTimeAsync(MAX_PROBE_DELAY_MS - 1);
    expect(probes).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(probes).toHaveLength(2);

    breaker.succeeded(); // the probe got through: no more probes
    probes[1]?.settle();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(probes).toHaveLength(2);

    breaker.failed(timeout, query);
    breaker.stop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(probes).toHaveLength(2);
  });
});
