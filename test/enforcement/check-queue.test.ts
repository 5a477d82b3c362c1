// CheckQueue against the emulator: batching while slots are busy, checks lost to another's error, the period pause, the slot deadline.

import { beforeEach, describe, expect, it } from 'vitest';
import { createCounters } from '../../src/config/stats.js';
import { CheckBreaker } from '../../src/enforcement/check-breaker.js';
import { CheckQueue, PERIOD_PAUSE_MS } from '../../src/enforcement/check-queue.js';
import { KanaClient, logCodes } from '../../src/index.js';
import { createLogSink } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed({
    users: ['u1', 'u2', 'u3'].map((id) => ({ id })),
    features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
    packages: [{ id: 'small', features: [{ id: 'api-calls', limit: 5, resetPeriod: 'DAY' }] }],
    subscriptions: ['u1', 'u2', 'u3'].map((userId) => ({ userId, packageId: 'small' })),
  });
});

function setup(options: { concurrency?: number; checkTimeoutMs?: number } = {}) {
  const clock = { now: Date.now() };
  const sink = createLogSink();
  const counters = createCounters();
  const breaker = new CheckBreaker({
    backoff: { minTimeout: 60_000, maxTimeout: 60_000, factor: 2, randomize: false },
    logger: sink.logger,
    counters,
    onKanaError: 'allow',
    probe: async () => {},
  });
  const queue = new CheckQueue({
    client: new KanaClient({ apiKey: env.emulator.apiKey, endpoint: env.emulator.url }),
    breaker,
    checkTimeoutMs: options.checkTimeoutMs ?? 2000,
    concurrency: options.concurrency ?? 16,
    counters,
    logger: sink.logger,
    onKanaError: 'allow',
    observeKanaCall: undefined,
    now: () => clock.now,
  });
  const ask = (userId: string) => queue.ask({ userId, featureId: 'api-calls', delta: 1 });
  const calls = () => env.emulator.requests().map((sent) => sent.fieldNames);
  return { clock, sink, counters, breaker, queue, ask, calls };
}

describe('CheckQueue', () => {
  it('sends a check alone while a slot is free, and the checks that wait for one together', async () => {
    const { ask, calls, counters } = setup({ concurrency: 1 });
    env.emulator.failNext({ delayMs: 100 }, { operation: 'canUseFeature' }); // holds the only slot
    const answers = await Promise.all([ask('u1'), ask('u2'), ask('u3'), ask('u1')]);
    expect(answers.map((answer) => answer.consumption?.budget)).toEqual([5, 5, 5, 5]);
    expect(calls().map((fields) => fields.length / 2)).toEqual([1, 3]); // canUseFeature + showUsage per check
    expect(counters).toMatchObject({ checks: 4, checkCalls: 2 });
  });

  it('fails the check Kana has an error for and asks the others, lost with it, again', async () => {
    const { ask, calls, counters, breaker } = setup({ concurrency: 1 });
    env.emulator.failNext({ delayMs: 100 }, { operation: 'canUseFeature' });
    const first = ask('u1');
    const [ghost, u2, u3] = await Promise.allSettled([ask('ghost'), ask('u2'), ask('u3')]);
    await first;
    expect(ghost).toMatchObject({ status: 'rejected', reason: { code: 'KANA_REJECTED' } });
    expect(u2).toMatchObject({ status: 'fulfilled', value: { access: true } });
    expect(u3).toMatchObject({ status: 'fulfilled', value: { access: true } });
    expect(calls().map((fields) => fields.length / 2)).toEqual([1, 3, 2]);
    expect(counters).toMatchObject({ checks: 4, checkErrors: 1, checkCalls: 3 });
    expect(breaker.isOpen).toBe(false);
  });

  it('leaves the period out for PERIOD_PAUSE_MS after showUsage fails, then asks again, pausing twice as long if it fails again', async () => {
    const { ask, calls, clock, sink } = setup();
    env.emulator.failNext({ fieldError: { field: 'showUsage' } }, { times: 2 });
    const withPeriod = ['canUseFeature', 'showUsage'];

    expect((await ask('u1')).period).toBeNull(); // fails, asked again without it
    expect((await ask('u1')).period).toBeNull();
    clock.now += PERIOD_PAUSE_MS - 1;
    await ask('u1');
    expect(calls()).toEqual([withPeriod, ['canUseFeature'], ['canUseFeature'], ['canUseFeature']]);

    clock.now += 1;
    await ask('u1'); // asks again: fails again, so the pause doubles
    clock.now += PERIOD_PAUSE_MS;
    await ask('u1');
    clock.now += PERIOD_PAUSE_MS;
    expect((await ask('u1')).period).not.toBeNull();
    expect(calls().slice(4)).toEqual([withPeriod, ['canUseFeature'], ['canUseFeature'], withPeriod]);
    expect(sink.withCode(logCodes.periodUnavailable)).toHaveLength(1);
  });

  it('does not keep a check waiting for a slot longer than checkTimeoutMs', async () => {
    const { ask, calls, clock, counters } = setup({ concurrency: 1, checkTimeoutMs: 1000 });
    env.emulator.failNext({ delayMs: 100 }, { operation: 'canUseFeature' });
    const first = ask('u1');
    const waiting = ask('u2');
    clock.now += 1000; // the slot frees only after the second check's deadline
    await first;
    await expect(waiting).rejects.toMatchObject({ code: 'KANA_TIMEOUT', message: expect.stringMatching(/free slot/) });
    expect(calls()).toHaveLength(1);
    expect(counters).toMatchObject({ checks: 2, checkErrors: 1, checkOutages: 0 });
  });

  it('while the breaker is open, rejects at once without asking Kana, except its probe', async () => {
    const { ask, queue, breaker, calls, counters } = setup();
    await env.emulator.setOffline(true);
    try {
      await expect(ask('u1')).rejects.toMatchObject({ code: 'KANA_UNREACHABLE' });
    } finally {
      await env.emulator.setOffline(false);
    }
    expect(breaker.isOpen).toBe(true);
    await expect(ask('u2')).rejects.toMatchObject({ code: 'KANA_UNREACHABLE' });
    expect(calls()).toEqual([]);
    await queue.ask({ userId: 'u2', featureId: 'api-calls', delta: 1 }, true);
    expect(breaker.isOpen).toBe(false);
    expect(counters).toMatchObject({ checks: 1, checkErrors: 1, checkCalls: 2, checkOutages: 1 });
  });
});
