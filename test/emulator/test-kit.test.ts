// The test kit's contract: start with a seed, reset() back to it between tests, usage() for known ids only.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type EmulatorSeed,
  EmulatorSeedError,
  type KanaEmulator,
  startKanaEmulator,
} from '../../src/emulator/index.js';
import { CREATE_USAGE_EVENT, post } from './graphql-client.js';

function planSeed(): EmulatorSeed {
  return {
    users: [{ id: 'u1' }],
    features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
    packages: [{ id: 'plan', features: [{ id: 'api-calls', limit: 10, resetPeriod: 'MONTH' }] }],
    subscriptions: [{ userId: 'u1', packageId: 'plan' }],
    usage: [{ userId: 'u1', featureId: 'api-calls', used: 3 }],
  };
}

let emulator: KanaEmulator;
const startSeed = planSeed();

beforeAll(async () => {
  emulator = await startKanaEmulator({ seed: startSeed });
});
afterAll(() => emulator.close());

describe('reset()', () => {
  it('goes back to the seed given at start: state, usage, faults and logs', async () => {
    emulator.seed({ users: [{ id: 'u2' }] });
    await post(emulator, CREATE_USAGE_EVENT, { input: { userId: 'u1', featureId: 'api-calls', delta: 4 } });
    await post(emulator, 'mutation { createUser(input: { id: "u3" }) { id } }');
    emulator.failNext({ status: 503 });
    expect(emulator.usage('u1', 'api-calls')).toBe(7);

    emulator.reset();

    expect(emulator.usage('u1', 'api-calls')).toBe(3);
    expect(emulator.usageCalls()).toEqual([]);
    expect(emulator.requests()).toEqual([]);
    const response = await post(emulator, '{ users { id } subscriptions { id userId } }');
    expect(response.status).toBe(200); // the scripted 503 is gone
    expect(response.data).toEqual({ users: [{ id: 'u1' }], subscriptions: [{ id: '1', userId: 'u1' }] });
  });

  it('uses a copy of the start seed: changing the object later changes nothing', () => {
    startSeed.usage = [{ userId: 'u1', featureId: 'api-calls', used: 9 }];
    emulator.reset();
    expect(emulator.usage('u1', 'api-calls')).toBe(3);
  });

  it('clears everything when the emulator was started without a seed', async () => {
    const bare = await startKanaEmulator();
    try {
      bare.seed(planSeed());
      bare.reset();
      expect((await post(bare, '{ users { id } }')).data).toEqual({ users: [] });
    } finally {
      await bare.close();
    }
  });
});

describe('usage()', () => {
  it('throws for an unknown user or feature id, naming it, so a typo cannot read as 0', () => {
    expect(() => emulator.usage('u-typo', 'api-calls')).toThrow('User not found: "u-typo"');
    expect(() => emulator.usage('u1', 'api-call')).toThrow('Feature not found: "api-call"');
  });
});

describe('seed errors', () => {
  it('are EmulatorSeedError with the field path and the problem apart', () => {
    let caught: unknown;
    try {
      emulator.seed({ users: [{ id: 'u9' }], usage: [{ userId: 'u9', featureId: 'nope', used: 1 }] });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(EmulatorSeedError);
    expect(caught).toMatchObject({
      name: 'EmulatorSeedError',
      path: 'usage[0].featureId',
      problem: 'names an unknown feature "nope"',
      message: 'Invalid emulator seed: usage[0].featureId names an unknown feature "nope"',
    });
  });
});
