// Recording usage: legacy createUsageEvent and recordUsage over one store (ADD, SET, negative deltas).
import { beforeEach, describe, expect, it } from 'vitest';
import { useEmulator } from '../helpers/emulator.js';
import { CAN_USE_FEATURE, CREATE_USAGE_EVENT, docsSeed, post, RECORD_USAGE } from './graphql-client.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed({ ...docsSeed(), subscriptions: [{ userId: '124', packageId: 'free-plan' }] });
});

describe('createUsageEvent (legacy, returns Boolean)', () => {
  it('returns true and adds delta, 1 by default', async () => {
    const first = await post(env.emulator, CREATE_USAGE_EVENT, { input: { userId: '124', featureId: 'api-calls' } });
    expect(first.status).toBe(200);
    expect(first.data).toEqual({ createUsageEvent: true });
    expect(env.emulator.usage('124', 'api-calls')).toBe(1);
    await post(env.emulator, CREATE_USAGE_EVENT, { input: { userId: '124', featureId: 'api-calls', delta: 7 } });
    expect(env.emulator.usage('124', 'api-calls')).toBe(8);
  });

  it('logs each applied call in usageCalls()', async () => {
    await post(env.emulator, CREATE_USAGE_EVENT, { input: { userId: '124', featureId: 'api-calls', delta: 2 } });
    expect(env.emulator.usageCalls()).toEqual([
      {
        operation: 'createUsageEvent',
        userId: '124',
        featureId: 'api-calls',
        delta: 2,
        action: 'ADD',
        at: expect.any(Number),
      },
    ]);
  });

  it('answers an unknown user with UserNotFoundError and applies nothing', async () => {
    const response = await post(env.emulator, CREATE_USAGE_EVENT, {
      input: { userId: 'ghost', featureId: 'api-calls' },
    });
    expect(response.status).toBe(200);
    expect(response.data).toEqual({ createUsageEvent: null });
    expect(response.errors![0]!.extensions).toMatchObject({
      code: 'BAD_USER_INPUT',
      exception: { name: 'UserNotFoundError' },
    });
    expect(response.errors![0]!.path).toEqual(['createUsageEvent']);
    expect(env.emulator.usageCalls()).toEqual([]);
  });

  it('answers an unknown feature with FeatureNotFoundError', async () => {
    const response = await post(env.emulator, CREATE_USAGE_EVENT, { input: { userId: '124', featureId: 'nope' } });
    expect(response.errors![0]!.extensions.exception.name).toBe('FeatureNotFoundError');
  });

  it('rejects a string delta with graphql-js coercion (HTTP 400)', async () => {
    const response = await post(env.emulator, CREATE_USAGE_EVENT, {
      input: { userId: '124', featureId: 'api-calls', delta: '1' },
    });
    expect(response.status).toBe(400);
    expect(response.errors![0]!.message).toContain('Int cannot represent non-integer value: "1"');
  });
});

describe('recordUsage (returns RecordedUsage)', () => {
  it('ADD adds delta and answers { recorded: true, reason: null }', async () => {
    const response = await post(env.emulator, RECORD_USAGE, {
      input: { userId: '124', featureId: 'api-calls', delta: 3, action: 'ADD' },
    });
    expect(response.data).toEqual({ recordUsage: { recorded: true, reason: null } });
    await post(env.emulator, RECORD_USAGE, { input: { userId: '124', featureId: 'api-calls', delta: 4 } });
    expect(env.emulator.usage('124', 'api-calls')).toBe(7);
  });

  it('SET overwrites the total', async () => {
    await post(env.emulator, RECORD_USAGE, { input: { userId: '124', featureId: 'api-calls', delta: 30 } });
    await post(env.emulator, RECORD_USAGE, {
      input: { userId: '124', featureId: 'api-calls', delta: 12, action: 'SET' },
    });
    expect(env.emulator.usage('124', 'api-calls')).toBe(12);
    await post(env.emulator, RECORD_USAGE, { input: { userId: '124', featureId: 'api-calls', delta: 1 } });
    expect(env.emulator.usage('124', 'api-calls')).toBe(13);
  });

  it('a negative delta reverts usage', async () => {
    await post(env.emulator, RECORD_USAGE, { input: { userId: '124', featureId: 'api-calls', delta: 10 } });
    await post(env.emulator, RECORD_USAGE, { input: { userId: '124', featureId: 'api-calls', delta: -4 } });
    expect(env.emulator.usage('124', 'api-calls')).toBe(6);
    expect(env.emulator.usageCalls().map((call) => call.delta)).toEqual([10, -4]);
  });

  it('shares one store with createUsageEvent', async () => {
    await post(env.emulator, CREATE_USAGE_EVENT, { input: { userId: '124', featureId: 'api-calls', delta: 2 } });
    await post(env.emulator, RECORD_USAGE, { input: { userId: '124', featureId: 'api-calls', delta: 5 } });
    expect(env.emulator.usage('124', 'api-calls')).toBe(7);
    expect(env.emulator.usageCalls().map((call) => call.operation)).toEqual(['createUsageEvent', 'recordUsage']);
  });

  it('does not enforce the limit: usage past the budget is recorded and then denied by canUseFeature', async () => {
    const response = await post(env.emulator, RECORD_USAGE, {
      input: { userId: '124', featureId: 'api-calls', delta: 60 },
    });
    expect(response.data).toEqual({ recordUsage: { recorded: true, reason: null } });
    expect(env.emulator.usage('124', 'api-calls')).toBe(60);
    const check = await post(env.emulator, CAN_USE_FEATURE, { userId: '124', featureId: 'api-calls' });
    expect(check.data.canUseFeature).toMatchObject({ access: false, consumption: { used: 60, budget: 50 } });
  });
});

describe('usage()', () => {
  it('throws for an unknown user or feature, so a typo in a test does not read as zero', () => {
    expect(() => env.emulator.usage('nobody', 'api-calls')).toThrow(/User not found/);
    expect(() => env.emulator.usage('124', 'nothing')).toThrow(/Feature not found/);
  });

  it('starts from seeded usage without logging a usage call', () => {
    env.emulator.seed({ usage: [{ userId: '124', featureId: 'api-calls', used: 42 }] });
    expect(env.emulator.usage('124', 'api-calls')).toBe(42);
    expect(env.emulator.usageCalls()).toEqual([]);
  });
});
