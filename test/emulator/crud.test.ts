// Users, features, packages and subscriptions through the GraphQL API: create, update, read, list.
import { beforeEach, describe, expect, it } from 'vitest';
import { useEmulator } from '../helpers/emulator.js';
import { CREATE_USAGE_EVENT, docsSeed, post } from './graphql-client.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
});

describe('users', () => {
  it('createUser, user and users', async () => {
    const created = await post(
      env.emulator,
      'mutation createUser($input: CreateUserInput!) { createUser(input: $input) { id name email billingId metadata } }',
      { input: { id: '124', name: 'Test User', email: 'test@usekana.com', metadata: { plan: 'x' } } },
    );
    expect(created.data).toEqual({
      createUser: { id: '124', name: 'Test User', email: 'test@usekana.com', billingId: null, metadata: { plan: 'x' } },
    });
    const listed = await post(env.emulator, '{ users { id } user(id: "124") { name } }');
    expect(listed.data).toEqual({ users: [{ id: '124' }], user: { name: 'Test User' } });
  });

  it('rejects a duplicate id', async () => {
    env.emulator.seed({ users: [{ id: '124' }] });
    const response = await post(env.emulator, 'mutation { createUser(input: { id: "124" }) { id } }');
    expect(response.status).toBe(200);
    expect(response.errors![0]!.extensions.code).toBe('BAD_USER_INPUT');
  });

  it('updateUser renames the user; subscriptions and usage follow', async () => {
    env.emulator.seed({ ...docsSeed(), subscriptions: [{ userId: '124', packageId: 'free-plan' }] });
    await post(env.emulator, CREATE_USAGE_EVENT, { input: { userId: '124', featureId: 'api-calls', delta: 4 } });
    const response = await post(
      env.emulator,
      'mutation updateUser($id: String!, $input: UpdateUserInput!) { updateUser(id: $id, input: $input) { id name email } }',
      { id: '124', input: { id: 'user-124', name: 'Renamed' } },
    );
    expect(response.data).toEqual({ updateUser: { id: 'user-124', name: 'Renamed', email: 'test@usekana.com' } });
    expect(env.emulator.usage('user-124', 'api-calls')).toBe(4);
    const subscriptions = await post(env.emulator, '{ subscriptions(userId: "user-124") { userId package { id } } }');
    expect(subscriptions.data).toEqual({ subscriptions: [{ userId: 'user-124', package: { id: 'free-plan' } }] });
    const old = await post(env.emulator, '{ user(id: "124") { id } }');
    expect(old.errors![0]!.extensions.exception.name).toBe('UserNotFoundError');
  });
});

describe('features', () => {
  it('createFeature, updateFeature (type unchanged), feature and features', async () => {
    const created = await post(
      env.emulator,
      'mutation { createFeature(input: { id: "api-calls", type: CONSUMABLE }) { id name type } }',
    );
    // CreateFeatureInput.name is optional while Feature.name is non-null: the id stands in.
    expect(created.data).toEqual({ createFeature: { id: 'api-calls', name: 'api-calls', type: 'CONSUMABLE' } });
    const updated = await post(
      env.emulator,
      'mutation { updateFeature(id: "api-calls", input: { name: "API Call", unitLabelPlural: "calls" }) { name type unitLabelPlural } }',
    );
    expect(updated.data).toEqual({ updateFeature: { name: 'API Call', type: 'CONSUMABLE', unitLabelPlural: 'calls' } });
    expect((await post(env.emulator, '{ features { id name } }')).data).toEqual({
      features: [{ id: 'api-calls', name: 'API Call' }],
    });
  });

  it('answers an unknown feature with FeatureNotFoundError', async () => {
    const response = await post(env.emulator, '{ feature(id: "nope") { id } }');
    expect(response.errors![0]!.extensions).toMatchObject({
      code: 'BAD_USER_INPUT',
      exception: { name: 'FeatureNotFoundError' },
    });
  });
});

describe('packages', () => {
  beforeEach(() => {
    env.emulator.seed(docsSeed());
  });

  it('createPackage always makes a DRAFT, with the entitlement limits', async () => {
    const response = await post(
      env.emulator,
      `mutation { createPackage(input: {
         id: "team-plan", name: "Team", features: [
           { id: "api-calls", entitlement: { limit: 5000, resetPeriod: MONTH, overageEnabled: true } },
           { id: "sso" }
         ] }) { id name status isAddon updatedAt features { id limit } } }`,
    );
    expect(response.data.createPackage).toEqual({
      id: 'team-plan',
      name: 'Team',
      status: 'DRAFT',
      isAddon: false,
      updatedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      features: [
        { id: 'api-calls', limit: 5000 },
        { id: 'sso', limit: null },
      ],
    });
    // A DRAFT package cannot be subscribed to (publishing happens in Kana's dashboard).
    const subscribe = await post(
      env.emulator,
      'mutation { subscribe(userId: "124", packageIds: ["team-plan"]) { id } }',
    );
    expect(subscribe.errors![0]!.message).toMatch(/not published/);
  });

  it('createPackage with an unknown feature answers FeatureNotFoundError and creates nothing', async () => {
    const response = await post(
      env.emulator,
      'mutation { createPackage(input: { id: "x", features: [{ id: "ghost" }] }) { id } }',
    );
    expect(response.errors![0]!.extensions.exception.name).toBe('FeatureNotFoundError');
    expect((await post(env.emulator, '{ packages(status: "ALL") { id } }')).data.packages).toHaveLength(3);
  });

  it('packages(status) defaults to PUBLISHED, takes ALL and DRAFT, rejects other strings', async () => {
    env.emulator.seed({ packages: [{ id: 'draft', status: 'DRAFT', features: [] }] });
    const ids = async (query: string) =>
      (await post(env.emulator, query)).data.packages.map((p: { id: string }) => p.id);
    expect(await ids('{ packages { id } }')).toEqual(['free-plan', 'pro-plan', 'extra-500-api-calls']);
    expect(await ids('{ packages(status: "ALL") { id } }')).toHaveLength(4);
    expect(await ids('{ packages(status: "DRAFT") { id } }')).toEqual(['draft']);
    const bad = await post(env.emulator, '{ packages(status: "LIVE") { id } }');
    expect(bad.status).toBe(200);
    expect(bad.errors![0]!.extensions.code).toBe('BAD_USER_INPUT');
  });

  it('updatePackage updates metadata', async () => {
    const response = await post(
      env.emulator,
      'mutation { updatePackage(id: "pro-plan", input: { metadata: { tier: 2 } }) { id metadata } }',
    );
    expect(response.data).toEqual({ updatePackage: { id: 'pro-plan', metadata: { tier: 2 } } });
  });

  it('answers an unknown package with PackageNotFoundError', async () => {
    const response = await post(env.emulator, '{ package(id: "nope") { id } }');
    expect(response.errors![0]!.extensions.exception.name).toBe('PackageNotFoundError');
  });
});

describe('subscriptions', () => {
  it('subscription(id) and subscriptions() list every user, subscriptions(userId) one', async () => {
    env.emulator.seed({
      ...docsSeed(),
      users: [{ id: 'a' }, { id: 'b' }],
      subscriptions: [
        { userId: 'a', packageId: 'free-plan' },
        { userId: 'b', packageId: 'pro-plan', status: 'TRIALING' },
      ],
    });
    const response = await post(
      env.emulator,
      '{ all: subscriptions { id userId } b: subscriptions(userId: "b") { status } one: subscription(id: "2") { package { id } } }',
    );
    expect(response.data).toEqual({
      all: [
        { id: '1', userId: 'a' },
        { id: '2', userId: 'b' },
      ],
      b: [{ status: 'TRIALING' }],
      one: { package: { id: 'pro-plan' } },
    });
    const missing = await post(env.emulator, '{ subscription(id: "99") { id } }');
    expect(missing.errors![0]!.extensions.exception.name).toBe('SubscriptionNotFoundError');
  });
});

describe('operations the emulator does not model', () => {
  it.each([
    ['generateUserToken', 'mutation { generateUserToken(userId: "a") { token } }'],
    [
      'generateSubscriptionLink',
      'mutation { generateSubscriptionLink(templateId: "t", successUrl: "s", cancelUrl: "c") { url } }',
    ],
  ])('%s answers a clear "not supported" error', async (field, query) => {
    const response = await post(env.emulator, query);
    expect(response.status).toBe(200);
    expect(response.errors![0]!.message).toBe(`${field} is not supported by the Kana emulator`);
  });
});
