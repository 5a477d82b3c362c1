// seed(): validation errors that name the field path, all-or-nothing writes, seeding through the API.
import { beforeEach, describe, expect, it } from 'vitest';
import { type EmulatorSeed, startKanaEmulator } from '../../src/emulator/index.js';
import { useEmulator } from '../helpers/emulator.js';
import { docsSeed, post } from './graphql-client.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
});

const userAndPackage = { users: [{ id: 'u' }], packages: [{ id: 'p', features: [] }] };

/** Seeds a value the types would reject, as a JavaScript caller could. */
function seedUntyped(seed: unknown): void {
  env.emulator.seed(seed as EmulatorSeed);
}

describe('seed validation', () => {
  it.each([
    [
      'a string limit',
      {
        features: [{ id: 'a', type: 'CONSUMABLE' }],
        packages: [
          { id: 'p0', features: [] },
          { id: 'p1', features: [{ id: 'a', limit: '10' }] },
        ],
      },
      'packages[1].features[0].limit must be a non-negative integer or null (a GraphQL Int), got "10"',
    ],
    [
      'a negative limit',
      { features: [{ id: 'a', type: 'CONSUMABLE' }], packages: [{ id: 'p', features: [{ id: 'a', limit: -1 }] }] },
      'packages[0].features[0].limit',
    ],
    [
      'a limit on a BINARY feature',
      { features: [{ id: 'b', type: 'BINARY' }], packages: [{ id: 'p', features: [{ id: 'b', limit: 3 }] }] },
      'packages[0].features[0].limit must be omitted',
    ],
    [
      'an unknown feature type',
      { features: [{ id: 'a', type: 'METERED' }] },
      'features[0].type must be one of BINARY, CONSUMABLE, got "METERED"',
    ],
    [
      'an unknown reset period',
      {
        features: [{ id: 'a', type: 'CONSUMABLE' }],
        packages: [{ id: 'p', features: [{ id: 'a', resetPeriod: 'WEEK' }] }],
      },
      'packages[0].features[0].resetPeriod must be one of DAY, MONTH, YEAR',
    ],
    [
      'a package naming an unknown feature',
      { packages: [{ id: 'p', features: [{ id: 'ghost' }] }] },
      'packages[0].features[0].id names an unknown feature "ghost"',
    ],
    ['a package without features', { packages: [{ id: 'p' }] }, 'packages[0].features is required'],
    ['a duplicate user id', { users: [{ id: 'u' }, { id: 'u' }] }, 'users[1].id duplicates the user id "u"'],
    [
      'a duplicate feature id',
      {
        features: [
          { id: 'a', type: 'CONSUMABLE' },
          { id: 'a', type: 'BINARY' },
        ],
      },
      'features[1].id duplicates the feature id "a"',
    ],
    [
      'a duplicate package id',
      {
        packages: [
          { id: 'p', features: [] },
          { id: 'p', features: [] },
        ],
      },
      'packages[1].id duplicates the package id "p"',
    ],
    ['an empty id', { users: [{ id: '' }] }, 'users[0].id must be a non-empty string'],
    ['a numeric id', { users: [{ id: 124 }] }, 'users[0].id must be a non-empty string, got 124'],
    ['a misspelt field', { users: [{ id: 'u', emial: 'x' }] }, 'users[0].emial is not a known field'],
    ['an unknown top-level key', { plans: [] }, 'seed.plans is not a known field'],
    [
      'a subscription to an unknown package',
      { users: [{ id: 'u' }], subscriptions: [{ userId: 'u', packageId: 'nope' }] },
      'subscriptions[0].packageId names an unknown package "nope"',
    ],
    [
      'a subscription for an unknown user',
      { packages: [{ id: 'p', features: [] }], subscriptions: [{ userId: 'nobody', packageId: 'p' }] },
      'subscriptions[0].userId names an unknown user "nobody"',
    ],
    [
      'a bad status',
      { ...userAndPackage, subscriptions: [{ userId: 'u', packageId: 'p', status: 'active' }] },
      'subscriptions[0].status must be one of ACTIVE, TRIALING',
    ],
    [
      'a bad startedAt',
      { ...userAndPackage, subscriptions: [{ userId: 'u', packageId: 'p', startedAt: 'yesterday' }] },
      'subscriptions[0].startedAt must be an ISO-8601 date-time string',
    ],
    [
      'fractional usage',
      {
        users: [{ id: 'u' }],
        features: [{ id: 'a', type: 'CONSUMABLE' }],
        usage: [{ userId: 'u', featureId: 'a', used: 1.5 }],
      },
      'usage[0].used must be an integer',
    ],
    ['users that are not an array', { users: { id: 'u' } }, 'users must be an array'],
  ])('rejects %s, naming the path', (_label, seed, message) => {
    expect(() => seedUntyped(seed)).toThrow(message);
  });

  it('rejects ids that already exist in the emulator', () => {
    env.emulator.seed({ users: [{ id: 'u' }] });
    expect(() => env.emulator.seed({ users: [{ id: 'v' }, { id: 'u' }] })).toThrow(
      'users[1].id duplicates the user id "u"',
    );
    env.emulator.seed({ features: [{ id: 'a', type: 'CONSUMABLE' }], packages: [{ id: 'p', features: [] }] });
    expect(() => env.emulator.seed({ features: [{ id: 'a', type: 'BINARY' }] })).toThrow(
      'features[0].id duplicates the feature id "a"',
    );
    expect(() => env.emulator.seed({ packages: [{ id: 'p', features: [] }] })).toThrow(
      'packages[0].id duplicates the package id "p"',
    );
  });

  it('writes nothing when any part is invalid', async () => {
    const seed = docsSeed();
    seed.subscriptions = [{ userId: '124', packageId: 'no-such-plan' }];
    expect(() => env.emulator.seed(seed)).toThrow(/subscriptions\[0\]\.packageId/);
    const response = await post(env.emulator, '{ users { id } features { id } packages(status: "ALL") { id } }');
    expect(response.data).toEqual({ users: [], features: [], packages: [] });
  });

  it('startKanaEmulator rejects a bad seed before listening', async () => {
    await expect(startKanaEmulator({ seed: { users: [{ id: '' }] } })).rejects.toThrow('users[0].id');
  });
});

describe('seeded state', () => {
  it('defaults packages to PUBLISHED and subscriptions to ACTIVE, and can refer to earlier seeds', async () => {
    env.emulator.seed(docsSeed());
    env.emulator.seed({ subscriptions: [{ userId: '124', packageId: 'pro-plan' }] });
    const response = await post(
      env.emulator,
      '{ packages { id status } subscriptions(userId: "124") { status package { id } } }',
    );
    expect(response.data).toEqual({
      packages: [
        { id: 'free-plan', status: 'PUBLISHED' },
        { id: 'pro-plan', status: 'PUBLISHED' },
        { id: 'extra-500-api-calls', status: 'PUBLISHED' },
      ],
      subscriptions: [{ status: 'ACTIVE', package: { id: 'pro-plan' } }],
    });
  });

  it('is visible through the API with the documented fields', async () => {
    env.emulator.seed(docsSeed());
    const response = await post(
      env.emulator,
      `{ user(id: "124") { id name email billingId metadata }
         feature(id: "api-calls") { id name type unitLabel unitLabelPlural packages { id } }
         package(id: "pro-plan") { id name isAddon features { id name type limit unitLabel } prices { id } } }`,
    );
    expect(response.data).toEqual({
      user: {
        id: '124',
        name: 'Test User',
        email: 'test@usekana.com',
        billingId: 'cus_Lp1bSKob4laHDD',
        metadata: null,
      },
      feature: {
        id: 'api-calls',
        name: 'API Call',
        type: 'CONSUMABLE',
        unitLabel: 'call',
        unitLabelPlural: 'calls',
        packages: [{ id: 'free-plan' }, { id: 'pro-plan' }, { id: 'extra-500-api-calls' }],
      },
      package: {
        id: 'pro-plan',
        name: 'pro-plan',
        isAddon: false,
        features: [
          { id: 'api-calls', name: 'API Call', type: 'CONSUMABLE', limit: 1000, unitLabel: 'call' },
          { id: 'sso', name: 'Single sign-on', type: 'BINARY', limit: null, unitLabel: null },
        ],
        prices: [],
      },
    });
  });
});
