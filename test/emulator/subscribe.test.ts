// subscribe: published packages only, one base package, add-ons need a base, Kana's verbatim messages.
import { beforeEach, describe, expect, it } from 'vitest';
import { useEmulator } from '../helpers/emulator.js';
import { docsSeed, post, SUBSCRIBE } from './graphql-client.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  const seed = docsSeed();
  seed.packages!.push(
    { id: 'draft-plan', status: 'DRAFT', features: [] },
    { id: 'proactive-messaging', isAddon: true, features: [] },
  );
  env.emulator.seed(seed);
});

function subscribe(packageIds: string[], userId = '124') {
  return post(env.emulator, SUBSCRIBE, { userId, packageIds });
}

async function subscriptionCount(): Promise<number> {
  const response = await post(env.emulator, '{ subscriptions(userId: "124") { id } }');
  return (response.data.subscriptions as unknown[]).length;
}

function expectSubscribeError(response: Awaited<ReturnType<typeof subscribe>>, message: string, name: string) {
  expect(response.status).toBe(200);
  expect(response.data).toBeNull();
  expect(response.errors).toHaveLength(1);
  expect(response.errors![0]).toMatchObject({
    message,
    path: ['subscribe'],
    locations: [{ line: 2, column: 3 }],
    extensions: { code: 'BAD_USER_INPUT', exception: { name, message } },
  });
}

describe('subscribe', () => {
  it('subscribes to a base package and returns ACTIVE subscriptions', async () => {
    const response = await subscribe(['free-plan']);
    expect(response.status).toBe(200);
    expect(response.data).toEqual({
      subscribe: [{ id: '1', userId: '124', status: 'ACTIVE', package: { id: 'free-plan', isAddon: false } }],
    });
  });

  it('takes a base and its add-ons in one call', async () => {
    const response = await subscribe(['pro-plan', 'extra-500-api-calls', 'proactive-messaging']);
    expect(response.data.subscribe.map((s: { package: { id: string } }) => s.package.id)).toEqual([
      'pro-plan',
      'extra-500-api-calls',
      'proactive-messaging',
    ]);
  });

  it('takes an add-on later when a base is already held', async () => {
    await subscribe(['free-plan']);
    const response = await subscribe(['extra-500-api-calls']);
    expect(response.errors).toBeUndefined();
    expect(await subscriptionCount()).toBe(2);
  });

  it('rejects an add-on without a base: "Cannot subscribe to addon. Missing live tier subscription."', async () => {
    const response = await subscribe(['extra-500-api-calls']);
    expectSubscribeError(response, 'Cannot subscribe to addon. Missing live tier subscription.', 'SubscriptionError');
    expect(await subscriptionCount()).toBe(0);
  });

  it('rejects two base packages in one call: "Cannot subscribe to multiple tiers"', async () => {
    const response = await subscribe(['free-plan', 'pro-plan']);
    expectSubscribeError(response, 'Cannot subscribe to multiple tiers', 'SubscriptionError');
    expect(await subscriptionCount()).toBe(0);
  });

  it('rejects a second base package when one is held', async () => {
    await subscribe(['free-plan']);
    const response = await subscribe(['pro-plan', 'extra-500-api-calls']);
    expectSubscribeError(response, 'Cannot subscribe to multiple tiers', 'SubscriptionError');
    expect(await subscriptionCount()).toBe(1);
  });

  it('rejects an unknown package: "Package Id not found for app", applying nothing', async () => {
    const response = await subscribe(['pro-plan', 'no-such-plan']);
    expectSubscribeError(response, 'Package Id not found for app', 'PackageNotFoundError');
    expect(await subscriptionCount()).toBe(0);
  });

  it('rejects a package that is not PUBLISHED', async () => {
    const response = await subscribe(['draft-plan']);
    expect(response.errors![0]!.message).toMatch(/not published/);
    expect(response.errors![0]!.extensions.code).toBe('BAD_USER_INPUT');
    expect(await subscriptionCount()).toBe(0);
  });

  it('does not count a CANCELLED base as held', async () => {
    env.emulator.seed({ subscriptions: [{ userId: '124', packageId: 'free-plan', status: 'CANCELLED' }] });
    expectSubscribeError(
      await subscribe(['extra-500-api-calls']),
      'Cannot subscribe to addon. Missing live tier subscription.',
      'SubscriptionError',
    );
    const again = await subscribe(['free-plan']);
    expect(again.data.subscribe[0]).toMatchObject({ status: 'ACTIVE', package: { id: 'free-plan' } });
  });

  it('rejects an unknown user with UserNotFoundError', async () => {
    const response = await subscribe(['free-plan'], 'ghost');
    expect(response.errors![0]!.extensions.exception.name).toBe('UserNotFoundError');
  });

  it('grants the subscribed features at once', async () => {
    await subscribe(['pro-plan']);
    const response = await post(env.emulator, '{ canUseFeature(userId: "124", featureId: "sso") { access } }');
    expect(response.data).toEqual({ canUseFeature: { access: true } });
  });
});
