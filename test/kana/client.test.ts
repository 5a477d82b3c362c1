// KanaClient.checkEntitlement(s) against the emulator: canUseFeature + the current period, one check or many in one call.

import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KanaClient, KanaError } from '../../src/index.js';
import { MAX_CHECKS_PER_DOCUMENT } from '../../src/kana/client.js';
import { useEmulator } from '../helpers/emulator.js';

const HOUR = 3_600_000;
const env = useEmulator();
let client: KanaClient;

beforeAll(() => {
  client = new KanaClient({ apiKey: env.emulator.apiKey, endpoint: env.emulator.url });
});
beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed({
    users: [{ id: 'u1' }, { id: 'nobody' }],
    features: [
      { id: 'api-calls', type: 'CONSUMABLE' },
      { id: 'sso', type: 'BINARY' },
    ],
    packages: [{ id: 'small', features: [{ id: 'api-calls', limit: 5, resetPeriod: 'DAY' }, { id: 'sso' }] }],
    subscriptions: [{ userId: 'u1', packageId: 'small', startedAt: new Date(Date.now() - 23 * HOUR).toISOString() }],
    usage: [{ userId: 'u1', featureId: 'api-calls', used: 4 }],
  });
});

describe('KanaClient.checkEntitlement', () => {
  it('sends canUseFeature and showUsage in one call, with the delta', async () => {
    const answer = await client.checkEntitlement({ userId: 'u1', featureId: 'api-calls', delta: 2 });
    expect(answer).toMatchObject({
      access: false,
      consumption: { used: 4, budget: 5, overageEnabled: false },
    });
    expect(answer.reason).not.toBe('');
    // The DAY period started with the subscription, 23 hours ago.
    expect(answer.period?.end.getTime()).toBeGreaterThan(Date.now() + HOUR - 60_000);
    expect(answer.period?.end.getTime()).toBeLessThanOrEqual(Date.now() + HOUR);
    expect(answer.period!.end.getTime() - answer.period!.start.getTime()).toBe(24 * HOUR);
    const [sent] = env.emulator.requests();
    expect(sent).toMatchObject({ fieldNames: ['canUseFeature', 'showUsage'], authorized: true });
    expect(sent?.variables).toEqual({ userId: 'u1', featureId: 'api-calls', delta: 2 });
  });

  it('reads a BINARY feature and a feature not in the plan: no consumption, no period', async () => {
    expect(await client.checkEntitlement({ userId: 'u1', featureId: 'sso', delta: 1 })).toMatchObject({
      access: true,
      consumption: null,
      period: null,
    });
    expect(await client.checkEntitlement({ userId: 'nobody', featureId: 'api-calls', delta: 1 })).toMatchObject({
      access: false,
      consumption: null,
      period: null,
    });
  });

  it('gives up after its own timeout, however long the call timeout is', async () => {
    env.emulator.failNext({ delayMs: 1000 });
    const error = await client
      .checkEntitlement({ userId: 'u1', featureId: 'api-calls', delta: 1 }, { timeoutMs: 50 })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(KanaError);
    // Had it waited for the delayed answer, it would have succeeded.
    expect(error).toMatchObject({ code: 'KANA_TIMEOUT' });
  });

  it('classifies errors with the retry table: an unknown user is rejected', async () => {
    const error = await client
      .checkEntitlement({ userId: 'ghost', featureId: 'api-calls', delta: 1 })
      .catch((caught: unknown) => caught);
    expect(error).toMatchObject({ name: 'KanaError', code: 'KANA_REJECTED', retryable: false });
  });

  it('rejects an answer that is not the documented shape', async () => {
    const fake = new KanaClient({
      apiKey: 'prv_test_abc',
      endpoint: 'http://kana.invalid/graphql',
      fetch: async () =>
        new Response(JSON.stringify({ data: { canUseFeature: { access: 'yes' }, showUsage: null } }), {
          headers: { 'content-type': 'application/json' },
        }),
    });
    await expect(fake.checkEntitlement({ userId: 'u1', featureId: 'f', delta: 1 })).rejects.toMatchObject({
      code: 'KANA_BAD_RESPONSE',
    });
  });
});

describe('the period is a nice extra: the answer depends on canUseFeature alone', () => {
  it('answers from canUseFeature when showUsage fails (asked again without it), with no period', async () => {
    env.emulator.failNext({ fieldError: { field: 'showUsage', message: 'Forbidden for this key', code: 'FORBIDDEN' } });
    const answer = await client.checkEntitlement({ userId: 'u1', featureId: 'api-calls', delta: 1 });
    expect(answer).toMatchObject({ access: true, consumption: { used: 4, budget: 5 }, period: null });
    expect(env.emulator.requests().map((sent) => sent.fieldNames)).toEqual([
      ['canUseFeature', 'showUsage'],
      ['canUseFeature'],
    ]);
  });

  it('still fails when canUseFeature fails', async () => {
    env.emulator.failNext({ fieldError: { field: 'canUseFeature', code: 'INTERNAL_SERVER_ERROR' } });
    await expect(client.checkEntitlement({ userId: 'u1', featureId: 'api-calls', delta: 1 })).rejects.toMatchObject({
      code: 'KANA_SERVER_ERROR',
    });
  });

  it('reads partial data from a server whose root fields are nullable: canUseFeature kept, periodError given', async () => {
    const partial = new KanaClient({
      apiKey: 'prv_test_abc',
      endpoint: 'http://kana.invalid/graphql',
      fetch: async () =>
        new Response(
          JSON.stringify({
            data: { canUseFeature: { access: false, reason: 'used up', consumption: null }, showUsage: null },
            errors: [{ message: 'no access', path: ['showUsage'], extensions: { code: 'FORBIDDEN' } }],
          }),
          { headers: { 'content-type': 'application/json' } },
        ),
    });
    const results = await partial.checkEntitlements([{ userId: 'u1', featureId: 'f', delta: 1 }]);
    expect(results.outcomes).toEqual([{ access: false, reason: 'used up', consumption: null, period: null }]);
    expect(results.periodError).toMatchObject({ name: 'KanaError', code: 'KANA_SERVER_ERROR' });
  });
});

describe('KanaClient.checkEntitlements: several checks in one document', () => {
  it('aliases each check and its period, with its own variables, and reads them back in order', async () => {
    const results = await client.checkEntitlements([
      { userId: 'u1', featureId: 'api-calls', delta: 1 },
      { userId: 'u1', featureId: 'api-calls', delta: 2 },
      { userId: 'u1', featureId: 'sso', delta: 1 },
    ]);
    expect(results.periodError).toBeUndefined();
    expect(results.outcomes).toMatchObject([
      { access: true, consumption: { used: 4, budget: 5 }, period: { end: expect.any(Date) } },
      { access: false, consumption: { used: 4, budget: 5 } },
      { access: true, consumption: null, period: null },
    ]);
    const [sent] = env.emulator.requests();
    expect(sent?.fieldNames).toEqual([
      'canUseFeature',
      'showUsage',
      'canUseFeature',
      'showUsage',
      'canUseFeature',
      'showUsage',
    ]);
    expect(sent?.variables).toMatchObject({ u0: 'u1', f0: 'api-calls', d0: 1, d1: 2, f2: 'sso' });
  });

  it("fails only the check Kana has an error for; the others' data, nulled with it, come back as lost", async () => {
    const results = await client.checkEntitlements(
      [
        { userId: 'u1', featureId: 'api-calls', delta: 1 },
        { userId: 'ghost', featureId: 'api-calls', delta: 1 },
        { userId: 'u1', featureId: 'sso', delta: 1 },
      ],
      { period: false },
    );
    expect(results.outcomes).toEqual(['lost', expect.objectContaining({ code: 'KANA_REJECTED' }), 'lost']);
    expect(env.emulator.requests()[0]?.fieldNames).toEqual(['canUseFeature', 'canUseFeature', 'canUseFeature']);
  });

  it('takes 1 to MAX_CHECKS_PER_DOCUMENT checks', async () => {
    const query = { userId: 'u1', featureId: 'sso', delta: 1 };
    await expect(client.checkEntitlements([])).rejects.toThrow(RangeError);
    await expect(client.checkEntitlements(Array(MAX_CHECKS_PER_DOCUMENT + 1).fill(query))).rejects.toThrow(RangeError);
    const all = await client.checkEntitlements(Array(MAX_CHECKS_PER_DOCUMENT).fill(query));
    expect(all.outcomes).toHaveLength(MAX_CHECKS_PER_DOCUMENT);
    expect(env.emulator.requests()).toHaveLength(1);
  });
});
