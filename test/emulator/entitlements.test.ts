// canUseFeature and Feature.entitlement: which subscriptions count, highest limit, overage, BINARY, boundary.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  type EmulatorSeed,
  type KanaEmulator,
  REASONS,
  type SubscriptionStatus,
  startKanaEmulator,
} from '../../src/emulator/index.js';
import { CAN_USE_FEATURE, post } from './graphql-client.js';

const CONSUMABLE_ALLOWED =
  'The user has a subcription to a package with this consumable feature and either has an allowance remaining or overage is enabled.';

let emulator: KanaEmulator;

beforeAll(async () => {
  emulator = await startKanaEmulator({ seed: catalogue });
});
afterAll(() => emulator.close());
beforeEach(() => {
  emulator.reset(); // back to the catalogue
});

const catalogue: EmulatorSeed = {
  users: [{ id: 'u1' }],
  features: [
    { id: 'api-calls', type: 'CONSUMABLE' },
    { id: 'sso', type: 'BINARY' },
  ],
  packages: [
    { id: 'small', features: [{ id: 'api-calls', limit: 5 }, { id: 'sso' }] },
    { id: 'big', features: [{ id: 'api-calls', limit: 100 }] },
    { id: 'unlimited', features: [{ id: 'api-calls', limit: null }] },
    { id: 'overage', features: [{ id: 'api-calls', limit: 5, overageEnabled: true }] },
    { id: 'boost', isAddon: true, features: [{ id: 'api-calls', limit: 20 }] },
  ],
};

function subscribe(packageId: string, status: SubscriptionStatus = 'ACTIVE', used?: number): void {
  emulator.seed({
    subscriptions: [{ userId: 'u1', packageId, status }],
    ...(used !== undefined && { usage: [{ userId: 'u1', featureId: 'api-calls', used }] }),
  });
}

async function canUse(featureId: string, delta?: number) {
  const response = await post(emulator, CAN_USE_FEATURE, {
    userId: 'u1',
    featureId,
    ...(delta !== undefined && { delta }),
  });
  expect(response.status).toBe(200);
  expect(response.errors).toBeUndefined();
  return response.data.canUseFeature as {
    access: boolean;
    reason: string;
    consumption: { used: number; budget: number | null; overageEnabled: boolean } | null;
  };
}

describe('which subscriptions count', () => {
  it.each(['ACTIVE', 'TRIALING'] as const)('%s grants access', async (status) => {
    subscribe('small', status);
    expect(await canUse('api-calls')).toEqual({
      access: true,
      reason: CONSUMABLE_ALLOWED,
      consumption: { used: 0, budget: 5, overageEnabled: false },
    });
  });

  it.each(['CANCELLED', 'PAST_DUE', 'UNPAID', 'INCOMPLETE', 'INCOMPLETE_EXPIRED'] as const)(
    '%s does not',
    async (status) => {
      subscribe('small', status);
      expect(await canUse('api-calls')).toEqual({ access: false, reason: REASONS.notSubscribed, consumption: null });
    },
  );

  it('a user with no subscription has no access, with the "not subscribed" reason', async () => {
    const result = await canUse('api-calls');
    expect(result.access).toBe(false);
    expect(result.reason).toBe(REASONS.notSubscribed);
  });
});

describe('several packages with the same feature', () => {
  it('the highest limit wins; limits are not summed', async () => {
    subscribe('small');
    subscribe('big');
    subscribe('boost');
    expect((await canUse('api-calls')).consumption).toEqual({ used: 0, budget: 100, overageEnabled: false });
  });

  it('unlimited (null) beats every number', async () => {
    subscribe('big');
    subscribe('unlimited', 'ACTIVE', 1_000_000);
    expect(await canUse('api-calls', 5)).toEqual({
      access: true,
      reason: CONSUMABLE_ALLOWED,
      consumption: { used: 1_000_000, budget: null, overageEnabled: false },
    });
  });

  it('a higher limit on a cancelled subscription does not count', async () => {
    subscribe('small');
    subscribe('big', 'CANCELLED');
    expect((await canUse('api-calls')).consumption?.budget).toBe(5);
  });
});

describe('consumable access: used + delta <= budget', () => {
  it('allows exactly up to the budget and denies past it, with distinct reasons', async () => {
    subscribe('small', 'ACTIVE', 4);
    expect(await canUse('api-calls', 1)).toMatchObject({ access: true, reason: CONSUMABLE_ALLOWED });
    const denied = await canUse('api-calls', 2);
    expect(denied).toEqual({
      access: false,
      reason: REASONS.limitReached,
      consumption: { used: 4, budget: 5, overageEnabled: false },
    });
    expect(denied.reason).not.toBe(REASONS.notSubscribed);
  });

  it('delta defaults to 1', async () => {
    subscribe('small', 'ACTIVE', 5);
    expect((await canUse('api-calls')).access).toBe(false);
    expect((await canUse('api-calls', 0)).access).toBe(true);
  });

  it('overage lets usage go past the budget', async () => {
    subscribe('overage', 'ACTIVE', 9);
    expect(await canUse('api-calls', 3)).toEqual({
      access: true,
      reason: CONSUMABLE_ALLOWED,
      consumption: { used: 9, budget: 5, overageEnabled: true },
    });
  });
});

describe('BINARY features', () => {
  it('give access when subscribed, with no consumption', async () => {
    subscribe('small', 'ACTIVE', 5);
    expect(await canUse('sso', 1000)).toEqual({ access: true, reason: REASONS.binaryAllowed, consumption: null });
  });

  it('deny access without a package that has them', async () => {
    subscribe('big');
    expect(await canUse('sso')).toEqual({ access: false, reason: REASONS.notSubscribed, consumption: null });
  });
});

describe('Feature.entitlement(userId) and errors', () => {
  it('gives the same answer as canUseFeature with delta 1', async () => {
    subscribe('small', 'ACTIVE', 5);
    const response = await post(
      emulator,
      '{ feature(id: "api-calls") { id entitlement(userId: "u1") { access reason consumption { used budget } } } }',
    );
    expect(response.data).toEqual({
      feature: {
        id: 'api-calls',
        entitlement: { access: false, reason: REASONS.limitReached, consumption: { used: 5, budget: 5 } },
      },
    });
  });

  it('answers unknown users and features with typed not-found errors', async () => {
    const noUser = await post(emulator, CAN_USE_FEATURE, { userId: 'ghost', featureId: 'api-calls' });
    expect(noUser.errors![0]!.extensions).toMatchObject({
      code: 'BAD_USER_INPUT',
      exception: { name: 'UserNotFoundError' },
    });
    const noFeature = await post(emulator, CAN_USE_FEATURE, { userId: 'u1', featureId: 'ghost' });
    expect(noFeature.errors![0]!.extensions).toMatchObject({
      code: 'BAD_USER_INPUT',
      exception: { name: 'FeatureNotFoundError' },
    });
  });
});
